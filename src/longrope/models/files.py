"""Checks of a model's files before transformers reads them: a damaged directory or GGUF is one line that names
the file and what is wrong with it (`LongRopeError`, exit 2), never a library's traceback or a wrong guess
(transformers suggests installing sentencepiece for a directory that has no tokenizer at all).

They read headers only (milliseconds, also for a 100 GB model):

- ``config.json``: UTF-8 JSON, an object, a ``model_type`` that this transformers knows;
- weights: ``model.safetensors`` (or the shards its index names) with a header that parses and a size that
  covers every tensor; a zip ``pytorch_model.bin`` whose directory is there (a cut-short file has none); the
  embedding's shape against ``vocab_size`` x ``hidden_size`` of the config;
- a tokenizer file of some kind;
- a ``.gguf``: the magic bytes, a header that parses, a size that covers every tensor.

`load_errors` turns what a library still raises while loading (a config value of the wrong type, shapes that
differ deeper in the model) into the same kind of line.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from longrope.errors import LongRopeError
from longrope.failures import ENVIRONMENT, describe, one_line
from longrope.schema import describe as describe_value
from longrope.schema import read_document

AGAIN = "copy or download it again"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# Any of these names a tokenizer transformers may build from (fast, sentencepiece, BPE vocab, tiktoken).
TOKENIZER_PATTERNS = ("tokenizer*", "vocab*", "merges.txt", "*.model", "*.tiktoken", "spiece*")
_MAX_HEADER = 100_000_000  # safetensors refuses larger headers itself


# -- config.json --------------------------------------------------------------------------------------------------

def read_config(directory: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of ``directory``, refused with one line when it cannot be a model's config."""
    path = directory / "config.json"
    if path.is_file() and path.stat().st_size == 0:
        raise LongRopeError(f"{path} is empty; {AGAIN}")
    config = read_document(path, "model config", fmt="json")
    if not isinstance(config, dict):
        raise LongRopeError(f"{path} must hold a JSON object (the model's settings), found {describe_value(config)}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise LongRopeError(f"{path} has no model_type (the architecture, e.g. \"llama\"), found "
                            f"{describe_value(model_type) if 'model_type' in config else 'none'}; {AGAIN}")
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        import transformers

        raise LongRopeError(f"{path}: model_type {model_type!r} is not an architecture transformers "
                            f"{transformers.__version__} knows; check the name, or upgrade transformers")
    return config


# -- weights -------------------------------------------------------------------------------------------------------

def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a ``.safetensors`` file (name -> dtype, shape, data_offsets), once the header parses
    and the file is long enough for every tensor in it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LongRopeError(f"{path} is {'empty' if size == 0 else 'cut short'} ({size} bytes): not a usable "
                                f"safetensors file; {AGAIN}")
        (length,) = struct.unpack("<Q", head)
        if length > min(_MAX_HEADER, size - 8):
            raise LongRopeError(f"{path} is cut short or not a safetensors file (its header says {length:,} bytes, "
                                f"the file has {size:,}); {AGAIN}")
        raw = f.read(length)
    try:
        table = json.loads(raw.decode("utf-8"))
        tensors = {k: v for k, v in table.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise LongRopeError(f"{path} is not a safetensors file (its header is not a tensor table); {AGAIN}") from None
    if 8 + length + end > size:
        raise LongRopeError(f"{path} is cut short: {size:,} bytes where its tensors need {8 + length + end:,}; "
                            f"{AGAIN}")
    return tensors


def _shards(directory: Path, index: Path) -> list[Path]:
    table = read_document(index, "weight index", fmt="json")
    weight_map = table.get("weight_map") if isinstance(table, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise LongRopeError(f"{index} has no weight_map of tensor -> file names; {AGAIN}")
    shards = [directory / name for name in sorted(set(weight_map.values()))]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise LongRopeError(f"{index} names {len(missing)} weight file(s) that are not in {directory} "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); copy them there")
    return shards


def _check_shapes(directory: Path, config: dict[str, Any], tensors: dict[str, Any]) -> None:
    """The token embedding against ``vocab_size`` x ``hidden_size``: an edited or mismatched config.json, named
    before transformers loads everything and reports every tensor."""
    settings = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    vocab, hidden = settings.get("vocab_size"), settings.get("hidden_size")
    if not (type(vocab) is int and type(hidden) is int):
        return  # a value of the wrong type is transformers' config validation's to name
    name = next((k for k in tensors if k.endswith("embed_tokens.weight")), None)
    shape = tensors[name].get("shape") if name else None
    if isinstance(shape, list) and len(shape) == 2 and shape != [vocab, hidden]:
        raise LongRopeError(f"the weights in {directory} do not fit its config.json: {name} is {shape[0]} x "
                            f"{shape[1]}, the config gives vocab_size {vocab} x hidden_size {hidden}; use the "
                            "config.json that came with these weights")


def check_weights(directory: Path, config: dict[str, Any]) -> None:
    """The weight files transformers will read in ``directory`` are whole (headers and sizes)."""
    if (directory / "model.safetensors.index.json").is_file():
        files = _shards(directory, directory / "model.safetensors.index.json")
    elif (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    elif (directory / "pytorch_model.bin.index.json").is_file():
        _shards(directory, directory / "pytorch_model.bin.index.json")
        return
    elif (directory / "pytorch_model.bin").is_file():
        path = directory / "pytorch_model.bin"
        with open(path, "rb") as f:
            is_zip = f.read(2) == b"PK"
        if is_zip and not zipfile.is_zipfile(path):  # torch.save writes a zip; cut short, its directory is gone
            raise LongRopeError(f"{path} is cut short (its zip directory is missing); {AGAIN}")
        return
    else:
        raise LongRopeError(f"{directory} holds no model weights (none of {', '.join(WEIGHT_FILES)}); copy the "
                            "weight files of the model into it")
    tensors: dict[str, Any] = {}
    for path in files:
        tensors.update(safetensors_header(path))
    _check_shapes(directory, config, tensors)


def check_model_dir(directory: Path) -> None:
    """Refuse a Hugging Face model directory whose config, weights or tokenizer cannot load (one line)."""
    config = read_config(directory)
    if not any(any(directory.glob(pattern)) for pattern in TOKENIZER_PATTERNS):
        has_weights = any((directory / name).is_file() for name in WEIGHT_FILES)
        raise LongRopeError(f"{directory} holds no tokenizer (tokenizer.json, tokenizer.model, vocab.json, ...)"
                            f"{'' if has_weights else ' and no weights'}; copy the model's files into it")
    check_weights(directory, config)


# -- GGUF -----------------------------------------------------------------------------------------------------------

_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
_STRING, _ARRAY = 8, 9


class _Reader:
    """Little- or big-endian fields of a GGUF header, refusing to read past the end of the file."""

    def __init__(self, f: BinaryIO, size: int):
        self.f, self.size, self.order = f, size, "<"

    def take(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise EOFError
        return self.f.read(n)

    def skip(self, n: int) -> None:
        if n < 0 or self.f.tell() + n > self.size:
            raise EOFError
        self.f.seek(n, 1)

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little" if self.order == "<" else "big")

    def string(self) -> bytes:
        return self.take(self.uint(8))

    def value(self, kind: int) -> Any:
        if kind in _GGUF_SCALARS:
            raw = self.take(_GGUF_SCALARS[kind])
            return int.from_bytes(raw, "little" if self.order == "<" else "big") if kind in (4, 10) else None
        if kind == _STRING:
            return self.skip(self.uint(8))
        if kind == _ARRAY:
            item, count = self.uint(4), self.uint(8)
            if item in _GGUF_SCALARS:
                return self.skip(count * _GGUF_SCALARS[item])
            for _ in range(count):
                self.value(item)
            return None
        raise ValueError(f"unknown value type {kind}")


def _gguf_extent(reader: _Reader) -> int:
    """Bytes the file must have for every tensor its header lists."""
    import gguf

    version = reader.uint(4)
    if version & 0xFFFF == 0:  # written big-endian
        reader.order = ">"
        version = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}, not 2 or 3")
    n_tensors, n_values = reader.uint(8), reader.uint(8)
    alignment = 32
    for _ in range(n_values):
        key = reader.string()
        value = reader.value(reader.uint(4))
        if key == b"general.alignment" and value:
            alignment = value
    end = 0
    for _ in range(n_tensors):
        reader.string()
        dims = [reader.uint(8) for _ in range(reader.uint(4))]
        kind, offset = reader.uint(4), reader.uint(8)
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        end = max(end, offset + math.prod(dims) // block * type_size)
    start = -(-reader.f.tell() // alignment) * alignment
    return start + end


def check_gguf(path: Path) -> None:
    """Refuse a ``.gguf`` that is not one (a text file with that name) or was cut short (one line)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise LongRopeError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF'); give a "
                                "model directory or a .gguf written by llama.cpp's tools")
        try:
            need = _gguf_extent(_Reader(f, size))
        except EOFError:
            raise LongRopeError(f"{path} is cut short inside its header ({size:,} bytes); {AGAIN}") from None
        except (ValueError, KeyError, OverflowError) as exc:
            raise LongRopeError(f"{path} has a damaged GGUF header ({exc}); {AGAIN}") from None
    if need > size:
        raise LongRopeError(f"{path} is cut short: {size:,} bytes where its tensors need {need:,}; {AGAIN}")


# -- what loading still raises ---------------------------------------------------------------------------------------

def _damage_types() -> tuple[type[BaseException], ...]:
    import pickle

    types: list[type[BaseException]] = [ValueError, TypeError, KeyError, IndexError, RuntimeError, EOFError,
                                        struct.error, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        types.append(SafetensorError)
    except ImportError:  # pragma: no cover - a dependency of transformers
        pass
    try:
        from huggingface_hub.errors import StrictDataclassError  # a config value of the wrong type

        types.append(StrictDataclassError)
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    return tuple(types)


def _bad_json_file(directory: Path) -> Path | None:
    """The first JSON file of ``directory`` that does not parse (after a library failed on one it did not name)."""
    for path in sorted(directory.glob("*.json")):
        try:
            json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, RecursionError, OSError):
            return path
    return None


@contextmanager
def load_errors(name: str, source: str | Path | None = None) -> Iterator[None]:
    """Inside: transformers reading model ``name`` (from directory ``source``). A failure of the machine (disk,
    memory) passes through; a file that will not load, or a value in it that does not fit, becomes one
    `LongRopeError` naming the model (and the file, where it can tell)."""
    try:
        yield
    except LongRopeError:
        raise
    except OSError as exc:
        failure = describe(exc)
        if failure is not None and failure.status == ENVIRONMENT:
            raise
        raise LongRopeError(f"cannot load model {name!r}: {one_line(exc)}") from exc
    except _damage_types() as exc:
        failure = describe(exc)
        if (failure is not None and failure.status == ENVIRONMENT) or "allocate memory" in str(exc):
            raise
        text = one_line(exc).replace(":; ", ": ")
        if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)) and source and Path(source).is_dir():
            bad = _bad_json_file(Path(source))
            if bad is not None:
                raise LongRopeError(f"{bad} is not valid UTF-8 JSON ({text}); {AGAIN}") from exc
        if "ignore_mismatched_sizes" in text:  # transformers printed which tensors above
            text = "the shapes of its weights differ from those its config.json gives (listed above)"
        raise LongRopeError(f"cannot load model {name!r}: {text[:400]}{'...' if len(text) > 400 else ''} "
                            f"({type(exc).__name__}); check its files, or {AGAIN}") from exc
