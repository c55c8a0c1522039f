"""Reading GGUF files: their keys, their rotary geometry, their tensors (for checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from longrope.errors import LongRopeError
from longrope.export.gguf_rope import FACTOR_ARCHITECTURES
from longrope.rope import RopeGeometry

def field_value(field) -> Any:
    import gguf

    value = field.contents()
    if field.types and field.types[0] == gguf.GGUFValueType.ARRAY and not isinstance(value, list):
        value = list(value)
    return value


def read_metadata(reader) -> dict[str, Any]:
    """Every key of an open ``gguf.GGUFReader`` (arrays as lists), without the file-header pseudo keys."""
    return {name: field_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}


def gguf_geometry(metadata: dict[str, Any]) -> tuple[str, RopeGeometry]:
    """(architecture, rotary geometry) of a GGUF; a clear error when it has no rotary embedding."""
    import gguf

    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise LongRopeError("not a model GGUF: general.architecture is missing")
    arch_enum = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    known_tensors = gguf.MODEL_TENSORS.get(arch_enum, ()) if arch_enum is not None else ()
    has_rope_keys = any(k.startswith(f"{arch}.rope.") for k in metadata)
    if gguf.MODEL_TENSOR.POS_EMBD in known_tensors or (not has_rope_keys and arch not in FACTOR_ARCHITECTURES):
        raise LongRopeError(
            f"GGUF architecture '{arch}' has no rotary position embedding (it uses learned or ALiBi positions); "
            "longrope works on RoPE models such as llama, mistral, qwen2, phi3"
        )
    heads = metadata.get(f"{arch}.attention.head_count")
    embd = metadata.get(f"{arch}.embedding_length")
    head_dim = metadata.get(f"{arch}.attention.key_length") or (embd // heads if embd and heads else None)
    dim = metadata.get(f"{arch}.rope.dimension_count") or head_dim
    if not dim:
        raise LongRopeError(f"GGUF '{arch}': cannot tell the rotary dimension (no rope.dimension_count)")
    base = float(metadata.get(f"{arch}.rope.freq_base", 10000.0))
    window = (metadata.get(f"{arch}.rope.scaling.original_context_length")
              or metadata.get(f"{arch}.context_length"))
    if not window:
        raise LongRopeError(f"GGUF '{arch}': no context_length")
    return arch, RopeGeometry(dim=int(dim), base=base, original_window=int(window))


def open_reader(path: Path):
    import gguf

    if not path.is_file():
        raise LongRopeError(f"GGUF file {path} does not exist")
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError/struct errors on a bad file
        raise LongRopeError(f"{path} is not a readable GGUF file: {exc}") from None


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, float tensors by name) of a GGUF, for checks; quantised tensors come back as raw bytes."""
    reader = open_reader(Path(path))
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    return read_metadata(reader), tensors
