"""GGUF -> ordinary Hugging Face directory (de-quantised weights, tokenizer, and the GGUF's rope scaling).

transformers loads a GGUF (``from_pretrained(dir, gguf_file=name)``, de-quantising every tensor) but refuses to
``save_pretrained`` the result, and it ignores llama.cpp's rope factor tensors. We save the loaded weights
through a fresh skeleton (`longrope.export.hf.save_weights`) and translate the rope factors into
``rope_parameters``:

- ``rope_factors_long`` / ``rope_factors_short`` (Phi-3) -> ``longrope`` with those factors, the GGUF's
  ``rope.scaling.original_context_length`` and ``attn_factor``;
- ``rope_freqs`` (Llama 3.1 style, or our own export) -> ``longrope`` with equal short and long factors, which is
  what llama.cpp computes (one table at every length);
- ``rope.scaling.type`` ``linear`` / ``yarn`` -> the same transformers type.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from longrope.atomic import atomic_dir
from longrope.errors import LongRopeError
from longrope.export.gguf_read import open_reader, read_metadata
from longrope.export.gguf_rope import rope_tensor_names
from longrope.export.hf import (
    REPORT_FILE,
    _check_target,
    clean_config,
    plan_hf_rope,
    save_weights,
)
from longrope.rope import SPEC_FILE, LinearSpec, LongRopeSpec, RopeGeometry, RopeSpec, YarnSpec, save_spec


def gguf_rope_spec(gguf_path: str | Path) -> tuple[RopeSpec | None, dict]:
    """The scaling a GGUF carries for llama.cpp, as a spec (None for plain RoPE), and its metadata."""
    reader = open_reader(Path(gguf_path))
    metadata = read_metadata(reader)
    arch = metadata.get("general.architecture", "")
    names = rope_tensor_names()
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors
               if t.name in names.values()}
    context = metadata.get(f"{arch}.context_length")
    original = metadata.get(f"{arch}.rope.scaling.original_context_length") or context
    attention = metadata.get(f"{arch}.rope.scaling.attn_factor")
    attention = float(attention) if attention is not None else None
    factor = max(float(context) / float(original), 1.0) if context and original else 1.0
    if names["long"] in tensors:
        long = tensors[names["long"]].tolist()
        short = tensors.get(names["short"], np.ones(len(long), np.float32)).tolist()
        return LongRopeSpec(long_factor=long, short_factor=short, factor=factor, attention_factor=attention,
                            original_window=int(original)), metadata
    if names["freqs"] in tensors:
        table = tensors[names["freqs"]].tolist()
        return LongRopeSpec(long_factor=table, short_factor=table, factor=factor,
                            attention_factor=attention if attention is not None else 1.0,
                            original_window=int(original)), metadata
    kind = metadata.get(f"{arch}.rope.scaling.type")
    scale = metadata.get(f"{arch}.rope.scaling.factor")
    if kind == "linear" and scale and float(scale) > 1:
        return LinearSpec(factor=float(scale)), metadata
    if kind == "yarn" and scale and float(scale) > 1:
        beta_fast = metadata.get(f"{arch}.rope.scaling.yarn_beta_fast") or 32.0
        beta_slow = metadata.get(f"{arch}.rope.scaling.yarn_beta_slow") or 1.0
        return YarnSpec(factor=float(scale), beta_fast=float(beta_fast), beta_slow=float(beta_slow),
                        original_window=int(original)), metadata
    return None, metadata


def convert_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Write the model of ``gguf_path`` as an HF directory (float32 safetensors, tokenizer, config).

    Rope factors and scaling keys of the GGUF become ``rope_parameters`` (see the module docstring); the
    directory appears complete or not at all; a non-empty ``out_dir`` needs ``force=True``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path).expanduser(), Path(out_dir).expanduser()
    if gguf_path.suffix != ".gguf":
        raise LongRopeError(f"{gguf_path} is not a .gguf file")
    _check_target(out_dir, force)
    spec, metadata = gguf_rope_spec(gguf_path)
    kwargs = {"gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for unsupported GGUFs
        tokenizer = None
        tokenizer_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        tokenizer_error = None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype="float32", **kwargs)
    except Exception as exc:  # noqa: BLE001
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LongRopeError(f"transformers cannot load {gguf_path.name}: {message}") from None
    config = clean_config(model.config)
    notes = []
    if spec is not None:
        geometry = RopeGeometry.from_config(config)
        plan = plan_hf_rope(config, spec, geometry, target_window=int(metadata.get(
            f"{metadata['general.architecture']}.context_length") or 0) or None)
        config.rope_parameters = plan.rope_parameters
        config.max_position_embeddings = plan.max_position_embeddings
        for key, value in plan.top_level.items():
            setattr(config, key, value)
        notes = plan.notes
    def write(tmp: Path) -> None:
        save_weights(model, config, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if spec is not None:
            save_spec(spec, tmp / SPEC_FILE)
        report = {"source": str(gguf_path), "spec": spec.to_dict() if spec is not None else None,
                  "rope_parameters": config.rope_parameters, "notes": notes,
                  "tokenizer_error": tokenizer_error}
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")

    return atomic_dir(out_dir, write)
