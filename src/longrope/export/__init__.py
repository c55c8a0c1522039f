"""Export a scaled model so stock tools run it: an HF directory (transformers, vLLM) and GGUF (llama.cpp)."""

from longrope.export.bundle import ExportPlan, export_model, plan_export
from longrope.export.convert import convert_gguf_to_hf, gguf_rope_spec
from longrope.export.gguf_export import add_rope_factors, export_gguf, write_gguf
from longrope.export.gguf_read import read_gguf
from longrope.export.gguf_rope import plan_gguf_rope
from longrope.export.hf import LossyExportWarning, export_hf, plan_hf_rope

__all__ = [
    "ExportPlan", "LossyExportWarning", "add_rope_factors", "convert_gguf_to_hf", "export_gguf", "export_hf",
    "export_model", "gguf_rope_spec", "plan_export", "plan_gguf_rope", "plan_hf_rope", "read_gguf", "write_gguf",
]
