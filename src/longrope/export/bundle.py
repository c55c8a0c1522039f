"""One export: the HF directory and, optionally, its GGUF beside it, planned once before anything is written and
published as a whole. `longrope export` and the pipeline's export stage both call `export_model`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longrope.errors import LongRopeError
from longrope.export.gguf_export import GGUF_ARCH_OF_MODEL_TYPE, export_gguf
from longrope.export.gguf_read import gguf_geometry, open_reader, read_metadata
from longrope.export.gguf_rope import GgufRopePlan, plan_gguf_rope
from longrope.export.hf import GGUF_NAME, HfRopePlan, export_hf, plan_hf_rope, portable_spec
from longrope.rope import RopeGeometry, RopeSpec


@dataclass
class ExportPlan:
    """What an export writes: the spec as written (``portable_spec`` applied), the model's geometry, the HF
    config changes and, with a GGUF, its rope tensors and keys and the GGUF it copies (None: converted from
    the weights)."""

    spec: RopeSpec
    geometry: RopeGeometry
    hf: HfRopePlan
    gguf: GgufRopePlan | None = None
    gguf_source: Path | None = None

    @property
    def notes(self) -> list[str]:
        return self.hf.notes + (self.gguf.notes if self.gguf else [])

    @property
    def lost(self) -> list[str]:
        """What the runtimes cannot express and ``lossy`` dropped, each once."""
        return list(dict.fromkeys(self.hf.lost + (self.gguf.lost if self.gguf else [])))


def plan_export(model, spec: RopeSpec, *, target_window: int | None = None, lossy: bool = False,
                portable: bool = False, gguf: bool = False, gguf_source: str | Path | None = None) -> ExportPlan:
    """Check that ``spec`` can be exported from ``model`` (HF, and GGUF with ``gguf``) and say how; writes
    nothing. Raises `LongRopeError` for what a runtime cannot express unless ``lossy``."""
    from longrope.attention.patch import scaled_layer_type
    from longrope.attention.rotary import model_geometry

    layer_type = scaled_layer_type(model)
    geometry = model_geometry(model, layer_type)
    if portable:
        spec = portable_spec(spec)
    hf = plan_hf_rope(model.config, spec, geometry, target_window, lossy, portable, layer_type)
    if not gguf:
        return ExportPlan(spec, geometry, hf)
    if gguf_source is not None:
        gguf_source = Path(gguf_source).expanduser()
        arch, gguf_geo = gguf_geometry(read_metadata(open_reader(gguf_source)))
        return ExportPlan(spec, geometry, hf, plan_gguf_rope(arch, spec, gguf_geo, target_window, lossy), gguf_source)
    arch = GGUF_ARCH_OF_MODEL_TYPE.get(model.config.model_type)
    if arch is None:
        raise LongRopeError(
            f"writing a GGUF from a '{model.config.model_type}' model is not supported (llama, mistral, phi3 are); "
            "give a GGUF to copy (--gguf-from FILE.gguf) or convert the exported directory with llama.cpp")
    return ExportPlan(spec, geometry, hf, plan_gguf_rope(arch, spec, geometry, target_window, lossy))


def export_model(model, tokenizer, spec: RopeSpec, out_dir: str | Path, *, target_window: int | None = None,
                 lossy: bool = False, portable: bool = False, gguf: bool = False,
                 gguf_source: str | Path | None = None, gguf_dtype: str = "f32", force: bool = False,
                 plan: ExportPlan | None = None) -> ExportPlan:
    """Write ``out_dir``: ``model`` with ``spec`` as an HF directory (`export_hf`) and, with ``gguf``, its
    ``model.gguf`` (a copy of ``gguf_source`` with rope factors, else converted in ``gguf_dtype``).

    Everything is planned first (`plan_export`; pass ``plan`` when you already made it with the same
    arguments); the GGUF is written inside the staging directory, so ``out_dir`` holds the whole new export or,
    after any failure or interruption, the previous one untouched. Returns the plan (notes, what was lost).
    """
    if plan is None:
        plan = plan_export(model, spec, target_window=target_window, lossy=lossy, portable=portable, gguf=gguf,
                           gguf_source=gguf_source)

    def write_gguf(directory: Path) -> None:
        export_gguf(plan.spec, directory / GGUF_NAME, model=model, tokenizer=tokenizer, source_gguf=plan.gguf_source,
                    dtype=gguf_dtype, target_window=target_window, force=True, lossy=lossy, plan=plan.gguf)

    export_hf(model, tokenizer, plan.spec, out_dir, target_window=target_window, force=force, lossy=lossy,
              also=write_gguf if plan.gguf is not None else None, portable=portable, plan=plan.hf)
    return plan


__all__ = ["ExportPlan", "export_model", "plan_export"]
