"""Does an export behave the same in every runtime? ``verify_export`` compares, for one export directory:

- **transformers**, run in a separate process that never imports longrope (exactly what a user's stock
  install computes), against our patched model rebuilt from the same weights and ``longrope_spec.json``;
- **llama.cpp** (through ``llama-cpp-python``, when installed and the export has ``model.gguf``);
- **vLLM**, by its documented rules applied to the exported config (`vllm_cos_sin`; no vLLM install needed).

Three checks each: logits of a prompt below the original window, of one above it, and a greedy generation that
starts inside the window and ends past it (the case where runtimes disagree on short vs long factors).
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
from longrope.export.hf import GGUF_NAME
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


def export_geometry(config: dict, spec: RopeSpec) -> RopeGeometry:
    """The original model's rotary geometry: the exported config's head size and base (as
    `RopeGeometry.from_config` reads them), the spec's window."""
    if getattr(spec, "original_window", None) is None:
        raise LongRopeError(f"{SPEC_FILE} has no original_window; re-export with this version of longrope")
    exported = RopeGeometry.from_config(SimpleNamespace(**config))
    base = exported.base
    if (config.get("rope_parameters") or {}).get("rope_type", "default") == "default" and spec.method == "ntk":
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

def reference_model(export_dir: Path, spec: RopeSpec, geometry: RopeGeometry):
    """The export's weights under the original RoPE, patched by us with ``spec``: what we promise it computes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from longrope.attention.patch import apply

    config = AutoConfig.from_pretrained(export_dir)
    params = {"rope_type": "default", "rope_theta": geometry.base}
    partial = (config.rope_parameters or {}).get("partial_rotary_factor")
    if partial is not None:
        params["partial_rotary_factor"] = partial
    config.rope_parameters = params
    config.max_position_embeddings = geometry.original_window
    if hasattr(config, "original_max_position_embeddings"):
        config.original_max_position_embeddings = geometry.original_window
    model = AutoModelForCausalLM.from_pretrained(export_dir, config=config, dtype=torch.float32).eval()
    return apply(model, spec)


def our_outputs(model, prompts: dict[str, torch.Tensor], new_tokens: int) -> dict[str, np.ndarray]:
    from longrope.attention.patch import sequence_length
    from longrope.eval.generation import greedy_generate

    out = {}
    with torch.no_grad():
        for check in ("below window", "above window"):
            ids = prompts[check]
            with sequence_length(model, ids.shape[1]):
                logits = model(ids, logits_to_keep=COMPARED_POSITIONS).logits  # never [length x vocab]
                out[check] = logits[0, -COMPARED_POSITIONS:].float().numpy()
        steps: list[torch.Tensor] = []
        tokens = greedy_generate(model, prompts["crossing generation"], max_new_tokens=new_tokens, step_logits=steps)
        out["crossing generation"] = torch.stack(steps).numpy()
        out["crossing tokens"] = np.asarray(tokens)
    return out


# -- stock transformers, in a process of its own ------------------------------------------------------------------

# Runs with nothing of longrope imported: it is what `from_pretrained` gives any user of the export.
_STOCK_SCRIPT = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
args = json.loads(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(args["export_dir"], dtype=torch.float32).eval()
data = np.load(args["prompts"])
out = {}
with torch.no_grad():
    for check in ("below window", "above window"):
        ids = torch.from_numpy(data[check])
        out[check] = model(ids, logits_to_keep=args["positions"]).logits[0, -args["positions"]:].float().numpy()
    ids = torch.from_numpy(data["crossing generation"])
    result = model.generate(ids, max_new_tokens=args["new_tokens"], do_sample=False, output_logits=True,
                            return_dict_in_generate=True, pad_token_id=0, eos_token_id=None,
                            min_new_tokens=args["new_tokens"])
    out["crossing generation"] = torch.stack([l[0] for l in result.logits]).float().numpy()
    out["crossing tokens"] = result.sequences[0, ids.shape[1]:].numpy()
assert "longrope" not in sys.modules, "the stock run imported longrope"
np.savez(args["output"], **out)
"""


def stock_transformers_outputs(export_dir: Path, prompts: dict[str, torch.Tensor], new_tokens: int,
                               timeout: float = 3600) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="longrope-verify-") as tmp:
        prompt_file, output = Path(tmp) / "prompts.npz", Path(tmp) / "stock.npz"
        np.savez(prompt_file, **{k: v.numpy() for k, v in prompts.items()})
        # Absolute: the child runs in the temporary directory, and a relative path would be read as a hub id.
        args = {"export_dir": str(export_dir.resolve()), "prompts": str(prompt_file), "output": str(output),
                "positions": COMPARED_POSITIONS, "new_tokens": new_tokens}
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
              new_tokens: int) -> list[CheckRow]:
    """Our tables against vLLM's: frequencies (relative) and cos/sin scale must agree to 1e-6; the reported
    difference is the largest cos/sin gap over the check's positions."""
    params = config.get("rope_parameters") or {}
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


def verify_export(export_dir: str | Path, new_tokens: int = 8, lengths: dict[str, int] | None = None,
                  tolerance: float = DEFAULT_TOLERANCE, seed: int = 0) -> VerifyReport:
    """Compare an export in stock transformers, llama.cpp (if installed) and vLLM's rules with our patched
    model (see the module docstring); ``report.differs`` is True when any runtime computes something else."""
    export_dir = Path(export_dir).expanduser()
    config, spec = read_export(export_dir)
    geometry = export_geometry(config, spec)
    lengths = {**default_lengths(geometry.original_window, new_tokens), **(lengths or {})}
    vocab = int(config["vocab_size"])
    prompts = {check: prompt_ids(vocab, n, seed + i) for i, (check, n) in enumerate(lengths.items())}
    report = VerifyReport(export_dir, (config.get("rope_parameters") or {}).get("rope_type", "default"),
                          geometry.original_window, lengths)
    ours = our_outputs(reference_model(export_dir, spec, geometry), prompts, new_tokens)
    crossing = ("transformers re-decides short/long factors on every forward call and keeps the KV cache "
                "(Phi-3 re-prefills): keys rotated with the short table meet queries rotated with the long one. "
                "Export with --portable, or declare the full length up front")
    stock = stock_transformers_outputs(export_dir, prompts, new_tokens)
    report.rows += compare("transformers", ours, stock, tolerance,
                           {"crossing generation": crossing, "default": "the stock model computes other logits: "
                            "report it with this table"})
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
    report.rows += vllm_rows(config, spec, geometry, lengths, new_tokens)
    return report
