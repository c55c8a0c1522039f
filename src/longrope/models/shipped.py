"""The built-in tiny model as shipped inside the package, so ``load_model("tiny")`` never trains anything.

``src/longrope/models/weights/tiny-stdlib/`` holds what ``longrope tiny train`` builds from
``TinyConfig.default()`` (the recipe), with the weights stored in bf16: config, safetensors, tokenizer, the
training-document list and the ``COMPLETE`` marker (recipe, seed, training time, validation metrics, reference
logits, and the sha256 of every file, checked on every load).

``package_tiny(built_dir)`` turns a freshly built cache directory into that shipped form (a maintainer's step).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from longrope.atomic import atomic_dir
from longrope.errors import LongRopeError
from longrope.models.tiny import MARKER, TRAIN_DOCUMENTS, tiny_metrics, verify_files, write_marker

SHIPPED_DIR = Path(__file__).parent / "weights" / "tiny-stdlib"
REFERENCE_PROMPT = "def main():\n    value = 12345\n    return value"
REBUILD_HINT = (
    "reinstall longrope (pip install --force-reinstall --no-deps longrope; in a clone: git checkout "
    "src/longrope/models/weights) or rebuild the model with `longrope tiny train` and load it with "
    "--model tiny-stdlib"
)


def shipped_tiny_path() -> Path:
    """The shipped model's directory, after checking every file's sha256 (a damaged one raises, saying what to
    do)."""
    if not (SHIPPED_DIR / MARKER).is_file():
        raise LongRopeError(f"the built-in model is missing from this installation ({SHIPPED_DIR}); {REBUILD_HINT}")
    verify_files(SHIPPED_DIR, REBUILD_HINT)
    return SHIPPED_DIR


def reference_logits(model, tokenizer, count: int = 8) -> list[float]:
    """The first ``count`` next-token logits after ``REFERENCE_PROMPT`` (fp32 forward): a fingerprint of the
    weights that the tests compare with the marker's copy."""
    ids = tokenizer(REFERENCE_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model.float()(input_ids=ids).logits[0, -1, :count]
    return [round(v, 5) for v in logits.tolist()]


def package_tiny(built_dir: str | Path, dest: str | Path = SHIPPED_DIR) -> Path:
    """Write the model built in ``built_dir`` into ``dest`` with bf16 weights, reference logits and a marker
    with every file's sha256; ``dest`` is replaced atomically."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    built_dir = Path(built_dir)
    marker = tiny_metrics(built_dir)

    def write(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(built_dir)
        LlamaForCausalLM.from_pretrained(built_dir, dtype=torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.copy(built_dir / TRAIN_DOCUMENTS, tmp / TRAIN_DOCUMENTS)
        model = LlamaForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        marker.pop("sha256", None)
        marker["weights_dtype"] = "bfloat16"
        marker["reference"] = {"prompt": REFERENCE_PROMPT, "logits": reference_logits(model, tokenizer)}
        write_marker(tmp, marker)

    return atomic_dir(dest, write)


def shipped_marker() -> dict:
    return json.loads((SHIPPED_DIR / MARKER).read_text())
