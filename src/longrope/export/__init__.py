"""Export a scaled model so stock tools run it: an HF directory (transformers, vLLM) and GGUF (llama.cpp)."""

from longrope.export.convert import convert_gguf_to_hf, gguf_rope_spec
from longrope.export.gguf_export import add_rope_factors, export_gguf, plan_gguf_rope, read_gguf, write_gguf
from longrope.export.hf import LossyExportWarning, export_hf, plan_hf_rope

__all__ = [
    "LossyExportWarning", "add_rope_factors", "convert_gguf_to_hf", "export_gguf", "export_hf", "gguf_rope_spec",
    "plan_gguf_rope", "plan_hf_rope", "read_gguf", "write_gguf",
]
