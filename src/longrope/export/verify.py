"""Does an export behave the same in every runtime? ``verify_export`` compares, for one export directory:

- **transformers**, run in a separate process that never imports longrope (exactly what a user's stock
  install computes), against our patched model rebuilt from the same weights and ``longrope_spec.json``;
- **llama.cpp** (through ``llama-cpp-python``, when installed and the export has ``model.gguf``);
- **vLLM**, by its documented rules applied to the exported config (`vllm_cos_sin`; no vLLM install needed).

Three checks each: logits of a prompt below the original window, of one above it, and a greedy generation that
starts inside the window and ends past it (the case where runtimes disagree on short vs long factors).

When stock transformers and our patched model disagree, `suspect_side` says which side is suspect from what can
be measured: our rotary module against the same model left unpatched (no scaling: they must agree), then our
tables against the stock model's own rotary module under the exported config (they must agree for the export to
express the spec); if both agree, the stock model computes something else from the same tables.

Per-layer-type exports (Gemma 3) name the scaled layer type in ``longrope_export.json``; the reference keeps
the other types' RoPE as exported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from longrope.errors import LongRopeError
from longrope.export.hf import GGUF_NAME, REPORT_FILE, SCALING_KEYS
from longrope.rope import SPEC_FILE, LongRopeSpec, RopeGeometry, RopeSpec, inv_freq_for, load_spec

CHECKS = ("below window", "above window", "crossing generation")
COMPARED_POSITIONS = 32  # logits compared at the last positions of each prompt (where the longest distances are)
DEFAULT_TOLERANCE = 2e-3  # max |logit difference| still called "same" (fp32 on both sides)
LLAMA_CPP_TOLERANCE = 5e-2  # llama.cpp's own kernels (f32 GGUF) differ from PyTorch's by more


@dataclass
class CheckRow:
    """One runtime at one check: ``same``, ``differs``, ``not installed`` or ``not modelled``."""

    runtime: str
    check: str
    status: str
    max_difference: float | None = None
    first_differing_token: int | None = None
    advice: str = ""


@dataclass
class VerifyReport:
    export_dir: Path
    rope_type: str
    original_window: int
    lengths: dict[str, int]
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return any(row.status == "differs" for row in self.rows)

    def to_markdown(self) -> str:
        lines = ["| runtime | check | result | max logit diff | first differing token | what to do |",
                 "|---|---|---|---|---|---|"]
        for r in self.rows:
            diff = "" if r.max_difference is None else f"{r.max_difference:.2e}"
            token = "" if r.first_differing_token is None else str(r.first_differing_token)
            lines.append(f"| {r.runtime} | {r.check} | {r.status} | {diff} | {token} | {r.advice} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"export_dir": str(self.export_dir), "rope_type": self.rope_type,
                "original_window": self.original_window, "lengths": self.lengths,
                "differs": self.differs, "rows": [vars(r) for r in self.rows]}


# -- the export -----------------------------------------------------------------------------------------------

def read_export(export_dir: str | Path) -> tuple[dict, RopeSpec]:
    """(config.json, our spec) of an export directory; a clear error for anything else."""
    export_dir = Path(export_dir).expanduser()
    if export_dir.is_file() and export_dir.suffix == ".gguf":
        from longrope.export.convert import gguf_rope_spec

        spec = gguf_rope_spec(export_dir)[0]
        identity = isinstance(spec, LongRopeSpec) and set(spec.long_factor) | set(spec.short_factor or ()) == {1.0}
        if spec is None or identity:
            raise LongRopeError(f"{export_dir} has no rope factors or scaling: it is not a longrope export")
        raise LongRopeError(f"give the export directory that holds {export_dir.name} (with its config.json and "
                            f"{SPEC_FILE}), not the GGUF itself")
    if not export_dir.is_dir():
        raise LongRopeError(f"{export_dir} is not a directory (give the --out of `longrope export`)")
    config_path, spec_path = export_dir / "config.json", export_dir / SPEC_FILE
    if not config_path.is_file():
        raise LongRopeError(f"{export_dir} is not a model export: it has no config.json")
    if not spec_path.is_file():
        raise LongRopeError(f"{export_dir} has no {SPEC_FILE}: it was not written by `longrope export`, or the "
                            "file was removed; re-export it")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise LongRopeError(f"{config_path} is not readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise LongRopeError(f"{config_path} is not a JSON object")
    return config, load_spec(spec_path)


def export_layer_type(export_dir: Path) -> str | None:
    """The layer type the export scaled (per-layer-type configs), from its ``longrope_export.json``."""
    try:
        return json.loads((Path(export_dir) / REPORT_FILE).read_text()).get("layer_type")
    except (OSError, ValueError, AttributeError):
        return None


def _text_part(config: dict) -> dict:
    """The text model's part of a config.json (a multimodal model keeps it under ``text_config``)."""
    text = config.get("text_config")
    return text if isinstance(text, dict) and "rope_parameters" in text else config


def export_geometry(config: dict, spec: RopeSpec, layer_type: str | None = None) -> RopeGeometry:
    """The original model's rotary geometry: the exported config's head size and base (as
    `RopeGeometry.from_config` reads them, for the scaled layer type), the spec's window."""
    if getattr(spec, "original_window", None) is None:
        raise LongRopeError(f"{SPEC_FILE} has no original_window; re-export with this version of longrope")
    text = _text_part(config)
    exported = RopeGeometry.from_config(SimpleNamespace(**text), layer_type)
    base = exported.base
    entry = text.get("rope_parameters") or {}
    if layer_type is not None:
        entry = entry.get(layer_type) or {}
    if entry.get("rope_type", "default") == "default" and spec.method == "ntk":
        base /= spec.factor ** (exported.dim / (exported.dim - 2))  # NTK is exported as the base b * s^(d/(d-2))
    return dataclasses.replace(exported, base=base, original_window=int(spec.original_window))


def prompt_ids(vocab_size: int, length: int, seed: int) -> torch.Tensor:
    """Deterministic token ids (avoiding the first few, usually special) of one prompt."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(min(3, vocab_size - 1), vocab_size, (1, length), generator=generator)


def default_lengths(window: int, new_tokens: int) -> dict[str, int]:
    return {"below window": max(2, min(window // 2, 512)),
            "above window": window + max(16, window // 8),
            "crossing generation": max(1, window - new_tokens // 2)}


# -- our reference ---------------------------------------------------------------------------------------------

def reference_config(export_dir: Path, geometry: RopeGeometry, layer_type: str | None = None):
    """The export's config with plain RoPE (base ``geometry.base``) on the scaled layers and the original window:
    the model before scaling. The other layer types and every non-scaling key are kept."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(export_dir)
    text = config.get_text_config()
    params = json.loads(json.dumps(text.rope_parameters or {}))
    entry = params[layer_type] if layer_type is not None else params
    plain = {k: v for k, v in entry.items() if k not in SCALING_KEYS}
    plain.update(rope_type="default", rope_theta=geometry.base)
    if layer_type is not None:
        params[layer_type] = plain
    else:
        params = plain
    text.rope_parameters = params
    text.max_position_embeddings = geometry.original_window
    if hasattr(text, "original_max_position_embeddings"):
        text.original_max_position_embeddings = geometry.original_window
    return config


def reference_model(export_dir: Path, spec: RopeSpec, geometry: RopeGeometry, layer_type: str | None = None,
                    patched: bool = True, device: str | torch.device = "cpu"):
    """The export's weights under the original RoPE, patched by us with ``spec``: what we promise it computes
    (``patched=False``: the same model left as transformers builds it), in fp32 on ``device``."""
    from transformers import AutoModelForCausalLM

    from longrope.attention.patch import apply

    config = reference_config(export_dir, geometry, layer_type)
    model = AutoModelForCausalLM.from_pretrained(export_dir, config=config, dtype=torch.float32).eval().to(device)
    return apply(model, spec, layer_type) if patched else model


def our_outputs(model, prompts: dict[str, torch.Tensor], new_tokens: int) -> dict[str, np.ndarray]:
    from longrope.attention.patch import sequence_length
    from longrope.eval.generation import greedy_generate

    out = {}
    device = next(model.parameters()).device
    with torch.no_grad():
        for check in ("below window", "above window"):
            ids = prompts[check].to(device)
            with sequence_length(model, ids.shape[1]):
                logits = model(ids, logits_to_keep=COMPARED_POSITIONS).logits  # never [length x vocab]
                out[check] = logits[0, -COMPARED_POSITIONS:].float().cpu().numpy()
        steps: list[torch.Tensor] = []
        tokens = greedy_generate(model, prompts["crossing generation"].to(device), max_new_tokens=new_tokens,
                                 step_logits=steps)
        out["crossing generation"] = torch.stack(steps).float().cpu().numpy()
        out["crossing tokens"] = np.asarray(tokens)
    return out


# -- stock transformers, in a process of its own ------------------------------------------------------------------

# Runs with nothing of longrope imported: it is what `from_pretrained` gives any user of the export.
_STOCK_SCRIPT = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
args = json.loads(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(args["export_dir"], dtype=torch.float32).eval().to(args["device"])
data = np.load(args["prompts"])
out = {}
with torch.no_grad():
    for check in ("below window", "above window"):
        ids = torch.from_numpy(data[check]).to(args["device"])
        logits = model(ids, logits_to_keep=args["positions"]).logits
        out[check] = logits[0, -args["positions"]:].float().cpu().numpy()
    ids = torch.from_numpy(data["crossing generation"]).to(args["device"])
    result = model.generate(ids, max_new_tokens=args["new_tokens"], do_sample=False, output_logits=True,
                            return_dict_in_generate=True, pad_token_id=0, eos_token_id=None,
                            min_new_tokens=args["new_tokens"])
    out["crossing generation"] = torch.stack([l[0] for l in result.logits]).float().cpu().numpy()
    out["crossing tokens"] = result.sequences[0, ids.shape[1]:].cpu().numpy()
assert "longrope" not in sys.modules, "the stock run imported longrope"
np.savez(args["output"], **out)
"""


def stock_transformers_outputs(export_dir: Path, prompts: dict[str, torch.Tensor], new_tokens: int,
                               timeout: float = 3600, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="longrope-verify-") as tmp:
        prompt_file, output = Path(tmp) / "prompts.npz", Path(tmp) / "stock.npz"
        np.savez(prompt_file, **{k: v.numpy() for k, v in prompts.items()})
        # Absolute: the child runs in the temporary directory, and a relative path would be read as a hub id.
        args = {"export_dir": str(export_dir.resolve()), "prompts": str(prompt_file), "output": str(output),
                "positions": COMPARED_POSITIONS, "new_tokens": new_tokens, "device": str(device)}
        proc = subprocess.run([sys.executable, "-c", _STOCK_SCRIPT, json.dumps(args)], capture_output=True,
                              text=True, timeout=timeout, cwd=tmp)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise LongRopeError(f"stock transformers could not run the export {export_dir}: {last}")
        with np.load(output) as data:
            return {k: data[k] for k in data.files}


# -- llama.cpp ---------------------------------------------------------------------------------------------------

def llama_cpp_outputs(gguf: Path, prompts: dict[str, torch.Tensor], new_tokens: int,
                      context: int) -> dict[str, np.ndarray] | None:
    """llama.cpp's logits and greedy tokens for the same prompts; None when llama-cpp-python is missing."""
    try:
        import llama_cpp
    except ImportError:
        return None
    model = llama_cpp.Llama(model_path=str(gguf), n_ctx=context, logits_all=True, verbose=False, seed=0)
    out = {}
    for check in ("below window", "above window"):
        model.reset()
        model.eval(prompts[check][0].tolist())
        # A copy: `scores` is llama-cpp-python's own buffer, which the next prompt overwrites.
        out[check] = np.array(model.scores[: model.n_tokens][-COMPARED_POSITIONS:])
    model.reset()
    tokens, steps = [], []
    model.eval(prompts["crossing generation"][0].tolist())
    for _ in range(new_tokens):
        scores = np.array(model.scores[model.n_tokens - 1])
        steps.append(scores)
        token = int(scores.argmax())
        tokens.append(token)
        model.eval([token])
    out["crossing generation"], out["crossing tokens"] = np.stack(steps), np.asarray(tokens)
    return out


# -- vLLM's rules -------------------------------------------------------------------------------------------------

def vllm_tables(rope_parameters: dict, config: dict, geometry: RopeGeometry,
                max_model_len: int | None = None) -> tuple[np.ndarray, float, bool]:
    """(inv_freq [d/2], cos/sin scale, long factors used) that vLLM derives from a ``longrope`` config (its
    ``Phi3LongRoPEScaledRotaryEmbedding``, read at vllm-project/vllm commit 17d618b0, 2026):

    - the long factors for every request when ``max_model_len`` (default: ``max_position_embeddings``) exceeds
      ``original_max_position_embeddings``, else the short ones: decided once per deployment, not per prompt;
    - cos and sin are multiplied by ``sqrt(1 + ln(max_pos / orig) / ln(orig))`` (1 if max_pos <= orig) unless
      ``short_mscale`` / ``long_mscale`` are given; ``attention_factor`` is not read.
    """
    original = int(rope_parameters.get("original_max_position_embeddings")
                   or config.get("original_max_position_embeddings") or geometry.original_window)
    max_pos = int(config["max_position_embeddings"])
    max_model_len = max_pos if max_model_len is None else max_model_len
    long = max_model_len > original
    scale = max_pos / original
    default = math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0
    mscale = rope_parameters.get("long_mscale" if long else "short_mscale") or default
    factors = np.asarray(rope_parameters["long_factor" if long else "short_factor"], dtype=np.float64)
    exponents = np.arange(0, geometry.dim, 2, dtype=np.float64) / geometry.dim
    return 1.0 / (factors * geometry.base ** exponents), float(mscale), long


def vllm_cos_sin(rope_parameters: dict, config: dict, geometry: RopeGeometry, positions: np.ndarray,
                 max_model_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [positions, d/2] as vLLM computes them for a ``longrope`` config (`vllm_tables`)."""
    inv_freq, mscale, _ = vllm_tables(rope_parameters, config, geometry, max_model_len)
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]
    return np.cos(angles) * mscale, np.sin(angles) * mscale


def vllm_rows(config: dict, spec: RopeSpec, geometry: RopeGeometry, lengths: dict[str, int],
              new_tokens: int, layer_type: str | None = None) -> list[CheckRow]:
    """Our tables against vLLM's: frequencies (relative) and cos/sin scale must agree to 1e-6; the reported
    difference is the largest cos/sin gap over the check's positions."""
    config = _text_part(config)
    params = config.get("rope_parameters") or {}
    if layer_type is not None:
        return [CheckRow("vLLM (rules)", check, "not modelled",
                         advice=f"rope_parameters per layer type ({layer_type} scaled, the others kept): vLLM's "
                                "handling of them is not modelled; check with vLLM itself") for check in CHECKS]
    rope_type = params.get("rope_type", "default")
    if rope_type != "longrope" or not isinstance(spec, LongRopeSpec):
        return [CheckRow("vLLM (rules)", check, "not modelled",
                         advice=f"only longrope configs are modelled; vLLM reads '{rope_type}' from the same keys "
                                "as transformers: check with vLLM itself") for check in CHECKS]
    theirs_inv, theirs_scale, long = vllm_tables(params, config, geometry)
    rows = []
    for check in CHECKS:
        sequence = lengths[check] + (new_tokens if check == "crossing generation" else 0)
        ours_inv, ours_scale = inv_freq_for(spec.with_window(geometry.original_window), geometry, sequence)
        ours_inv = ours_inv.double().numpy()
        angles = np.arange(sequence, dtype=np.float64)[:, None]
        difference = float(max(np.abs(np.cos(angles * theirs_inv) * theirs_scale
                                      - np.cos(angles * ours_inv) * ours_scale).max(),
                               np.abs(np.sin(angles * theirs_inv) * theirs_scale
                                      - np.sin(angles * ours_inv) * ours_scale).max()))
        same_freq = bool(np.all(np.abs(theirs_inv / ours_inv - 1) <= 1e-6))
        if same_freq and abs(theirs_scale - ours_scale) <= 1e-6:
            rows.append(CheckRow("vLLM (rules)", check, "same", difference))
        elif not same_freq and long and sequence <= geometry.original_window:
            rows.append(CheckRow("vLLM (rules)", check, "differs", difference, advice=(
                "vLLM uses the long factors for every request when max_model_len > the original window: export "
                "with --portable, or serve with --max-model-len <= the original window")))
        else:
            rows.append(CheckRow("vLLM (rules)", check, "differs", difference, advice=(
                f"vLLM scales cos/sin by {theirs_scale:.6g} (sqrt(1 + ln(max_pos/orig)/ln(orig)) unless "
                f"short_mscale/long_mscale are set) where we use {ours_scale:.6g}; it ignores attention_factor: "
                "export with --portable")))
    return rows


# -- comparing ------------------------------------------------------------------------------------------------------

def compare(runtime: str, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray] | None,
            tolerance: float, advice: dict[str, str]) -> list[CheckRow]:
    if theirs is None:
        return [CheckRow(runtime, check, "not installed", advice=advice.get("install", "")) for check in CHECKS]
    rows = []
    for check in CHECKS:
        difference = float(np.abs(ours[check] - theirs[check]).max())
        first = None
        if check == "crossing generation":
            mismatch = np.flatnonzero(ours["crossing tokens"] != theirs["crossing tokens"])
            first = int(mismatch[0]) if mismatch.size else None
        same = difference <= tolerance and first is None
        rows.append(CheckRow(runtime, check, "same" if same else "differs", difference, first,
                             "" if same else advice.get(check, advice.get("default", ""))))
    return rows


def _rotary_outputs(model, positions: torch.Tensor, layer_type: str | None) -> list:
    """What each of the model's rotary modules returns for ``positions`` (for ``layer_type`` where it takes one)."""
    from longrope.attention.model_rope import _call, _takes_layer_type
    from longrope.attention.rotary import find_rotary_modules

    out = []
    x = torch.zeros(1, positions.shape[1], 1, device=positions.device)
    with torch.no_grad():
        for _, _, module in find_rotary_modules(model):
            takes = _takes_layer_type(module) or getattr(module, "targets", None) is not None
            out.append(_call(module, x, positions, layer_type if takes else None))
    return out


def _max_gap(ours: list, theirs: list) -> float:
    def flat(values):
        return [v for item in values for v in ((item,) if isinstance(item, torch.Tensor) else item)]

    a, b = flat(ours), flat(theirs)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return math.inf
    return max((float((x - y).abs().max()) for x, y in zip(a, b)), default=0.0)


def suspect_side(export_dir: Path, spec: RopeSpec, geometry: RopeGeometry, layer_type: str | None,
                 prompt: torch.Tensor, length: int, tolerance: float = DEFAULT_TOLERANCE,
                 device: str | torch.device = "cpu") -> str:
    """Which side is suspect when stock transformers and our patched model disagree (module docstring)."""
    from transformers import AutoModelForCausalLM

    from longrope.attention.patch import apply, restore
    from longrope.rope import NoScaling

    model = reference_model(export_dir, spec, geometry, layer_type, patched=False, device=device)
    prompt = prompt.to(device)
    with torch.no_grad():
        unpatched = model(prompt, logits_to_keep=COMPARED_POSITIONS).logits
        apply(model, NoScaling(), layer_type)
        plain = model(prompt, logits_to_keep=COMPARED_POSITIONS).logits
    gap = float((plain - unpatched).abs().max())
    if not gap <= tolerance:
        return (f"longrope is suspect: its patched model differs from the same model left unpatched even without "
                f"scaling (max {gap:.3g}), so its rotary module does not reproduce this architecture: report it to "
                "longrope with this table")
    restore(model)
    apply(model, spec, layer_type)
    stock = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval().to(device)
    positions = torch.arange(length, device=device)[None]
    table_gap = _max_gap(_rotary_outputs(model, positions, layer_type), _rotary_outputs(stock, positions, layer_type))
    if not table_gap <= 1e-5:
        return (f"the export is suspect: stock transformers builds other rotary tables from the exported config "
                f"than longrope's for the spec (max {table_gap:.3g}), so config.json does not express the spec on "
                "this architecture: report it to longrope with this table")
    return ("stock transformers is suspect: it rotates with the same tables as our patched model (checked) but "
            "computes other logits, so this architecture uses its rope_parameters elsewhere too (attention scale, "
            "per-layer RoPE); report it with this table")


def verify_export(export_dir: str | Path, new_tokens: int = 8, lengths: dict[str, int] | None = None,
                  tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, device: str = "auto") -> VerifyReport:
    """Compare an export in stock transformers, llama.cpp (if installed) and vLLM's rules with our patched
    model (see the module docstring); ``report.differs`` is True when any runtime computes something else.

    Both transformers sides run on ``device`` (``auto``: the GPU if there is one, `longrope.hardware`), always
    in fp32: a comparison at a logit tolerance of a few 1e-3 means nothing in bf16, whose rounding alone is larger."""
    from longrope.hardware import resolve_device

    device = resolve_device(device)
    export_dir = Path(export_dir).expanduser()
    config, spec = read_export(export_dir)
    layer_type = export_layer_type(export_dir)
    geometry = export_geometry(config, spec, layer_type)
    lengths = {**default_lengths(geometry.original_window, new_tokens), **(lengths or {})}
    vocab = int(_text_part(config)["vocab_size"])
    prompts = {check: prompt_ids(vocab, n, seed + i) for i, (check, n) in enumerate(lengths.items())}
    entry = _text_part(config).get("rope_parameters") or {}
    entry = entry.get(layer_type) or {} if layer_type is not None else entry
    report = VerifyReport(export_dir, entry.get("rope_type", "default"), geometry.original_window, lengths)
    ours = our_outputs(reference_model(export_dir, spec, geometry, layer_type, device=device), prompts, new_tokens)
    crossing = ("transformers re-decides short/long factors on every forward call and keeps the KV cache "
                "(Phi-3 re-prefills): keys rotated with the short table meet queries rotated with the long one. "
                "Export with --portable, or declare the full length up front")
    stock = stock_transformers_outputs(export_dir, prompts, new_tokens, device=device)
    rows = compare("transformers", ours, stock, tolerance, {"crossing generation": crossing, "default": ""})
    differing = [row for row in rows if row.status == "differs" and row.check != "crossing generation"]
    if differing:  # not only the known short/long crossing: say which side is suspect
        diagnosis = suspect_side(export_dir, spec, geometry, layer_type, prompts[differing[0].check],
                                 max(lengths.values()) + new_tokens, tolerance, device)
        for row in rows:
            if row.status == "differs":
                row.advice = diagnosis
    report.rows += rows
    gguf = export_dir / GGUF_NAME
    if gguf.is_file():
        context = max(lengths.values()) + new_tokens
        report.rows += compare("llama.cpp", ours, llama_cpp_outputs(gguf, prompts, new_tokens, context),
                               max(tolerance, LLAMA_CPP_TOLERANCE),
                               {"install": "pip install llama-cpp-python to check it",
                                "crossing generation": "llama.cpp chooses short/long from n_ctx, not the prompt: "
                                "export with --portable",
                                "default": "llama.cpp computes other logits: compare rope factors in the GGUF"})
    else:
        report.rows += [CheckRow("llama.cpp", check, "not exported", advice="export with --gguf to check it")
                        for check in CHECKS]
    report.rows += vllm_rows(config, spec, geometry, lengths, new_tokens, layer_type)
    return report
