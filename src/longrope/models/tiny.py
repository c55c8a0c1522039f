"""The built-in tiny Llama: its config (``TinyConfig``: a byte-level BPE tokenizer with digits split one per
token, and a small ``LlamaForCausalLM``), where builds live in the cache, and the ``COMPLETE`` marker that makes a
build directory trustworthy (JSON: config, training time, metrics, sha256 of every file; the last file written
before the directory is moved into place, so a directory without it is garbage from a killed process).

The model built from ``TinyConfig.default()`` ships with the package (``longrope.models.shipped``). Building one
-- training on the standard library's train split with a retrieval curriculum, then measuring it -- is a recipe
across areas: ``longrope.recipes.tiny`` (``train_tiny``, ``ensure_tiny``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from longrope.data.retrieval import CURRICULUM_COMPOSED_NAMES, CURRICULUM_PAIRING
from longrope.errors import LongRopeError
from longrope.paths import cache_dir, cache_root

MARKER = "COMPLETE"
TRAIN_DOCUMENTS = "train_documents.txt"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"


# Fields added to `TinyConfig` after builds were cached, with what those builds did: their markers lack the field.
# (Not the field's default, which may have changed since: composed names became the default recipe later.)
FIELDS_ADDED = {"retrieval_composed_names": 0}


@dataclass
class TinyConfig:
    """Everything that determines the tiny model; ``name`` is its cache directory under ``models/``."""

    name: str = "tiny-stdlib"
    vocab_size: int = 4096
    window: int = 256  # L: the trained context window (max_position_embeddings)
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int = 32  # 16 rotary pairs
    intermediate_size: int = 688
    rope_theta: float = 10000.0
    train_steps: int = 1400  # chosen from long runs 4-5 (notes/tiny_model.md): longer runs lost the held-out format
    batch_size: int = 32
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at learning_rate * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    max_train_chars: int | None = None  # cap on train-split text (whole documents, in sorted order)
    checkpoints: int = 20  # training state saved this many times per build, so a killed build resumes
    eval_windows: int = 400  # in-window validation: random windows of `window` tokens
    eval_long_docs: int = 24  # validation documents scored at window * each of eval_scales
    eval_scales: tuple[int, ...] = field(default=(2, 4, 8))
    eval_span_chars: int = 600  # bits per character on 20 validation spans of this many characters (0: skip)
    eval_passkey_trials: int = 20  # in-window passkey trials per template, code and the held-out dict (0: skip)
    # Share of training windows from the retrieval curriculum (longrope.data.retrieval): values defined in
    # several formats and asked for at the end, so the model learns to retrieve inside its window.
    retrieval_fraction: float = 0.35
    retrieval_pairing: str = CURRICULUM_PAIRING  # how definitions pair with questions (data.retrieval.PAIRINGS)
    # Snake_case names composed of two corpus words, added to the 2000 commonest identifiers as names to define
    # and ask for (data.retrieval.composed_names): lookup of names never seen before (0: identifiers only).
    retrieval_composed_names: int = CURRICULUM_COMPOSED_NAMES
    # Digits of the retrieved values. Mixed lengths taught the model to stop a 5-digit key early (measured).
    retrieval_digits: tuple[int, ...] = field(default=(5,))

    def __post_init__(self) -> None:
        if self.head_dim % 2 or self.num_heads % self.num_kv_heads:
            raise LongRopeError("head_dim must be even and num_heads a multiple of num_kv_heads")
        self.eval_scales = tuple(self.eval_scales)
        self.retrieval_digits = tuple(self.retrieval_digits)

    @classmethod
    def default(cls) -> TinyConfig:
        """The built-in model: 5.8M parameters, about 30 minutes of training on 2 CPU cores (it ships built)."""
        return cls()

    @classmethod
    def test(cls) -> TinyConfig:
        """A much smaller variant that trains in seconds, for tests."""
        return cls(
            name="tiny-stdlib-test",
            vocab_size=512,
            window=64,
            hidden_size=64,
            num_layers=2,
            num_heads=2,
            num_kv_heads=2,
            head_dim=32,
            intermediate_size=172,
            train_steps=80,
            batch_size=16,
            learning_rate=5e-3,
            warmup_steps=8,
            max_train_chars=1_500_000,
            eval_windows=64,
            eval_long_docs=4,
            eval_span_chars=60,
            eval_passkey_trials=0,
            retrieval_fraction=0.0,
        )

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict | None) -> TinyConfig | None:
        """The config a marker records (a field added since it was written takes the value builds had before
        it existed, ``FIELDS_ADDED``), or None if it is not one (a marker without a config is none: not the
        default)."""
        if not isinstance(data, dict) or not data:
            return None
        try:
            return cls(**{**FIELDS_ADDED, **data})
        except (TypeError, LongRopeError):
            return None


# ----------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast`` that prepends ``<s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Digits are single tokens, so copying a number is copying digit tokens (no merges learnt over numbers).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    # Like Llama's tokenizer: encoding with special tokens prepends BOS.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def tiny_llama_config(config: TinyConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.window,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# ------------------------------------------------------------------------------------------ cache access


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_marker(directory: Path, marker: dict) -> None:
    """Write the ``COMPLETE`` marker: ``marker`` plus the sha256 of every other file in ``directory``."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MARKER)
    marker = {**marker, "sha256": {p.name: file_sha256(p) for p in files}}
    (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def verify_files(path: str | Path, rebuild_hint: str) -> dict:
    """The marker of ``path`` after checking every file it lists against its sha256; a missing or changed
    file raises ``LongRopeError`` naming it and ``rebuild_hint`` (what to do about it)."""
    path = Path(path)
    marker = tiny_metrics(path)
    for name, expected in marker.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            raise LongRopeError(f"model file {file} is missing; {rebuild_hint}")
        if file_sha256(file) != expected:
            raise LongRopeError(f"model file {file} is damaged (its sha256 differs from the marker's); "
                                f"{rebuild_hint}")
    return marker


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a finished model directory (its marker exists and parses)."""
    try:
        json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return True


def tiny_metrics(path: str | Path) -> dict:
    """The marker of a built model directory: config, parameters, training time and metrics."""
    try:
        return json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise LongRopeError(
            f"{path} is not a complete tiny model directory (no valid {MARKER} marker)"
        ) from exc


def tiny_path(config: TinyConfig | None = None) -> Path:
    """Where the model for ``config`` lives in the cache (built or not)."""
    config = config or TinyConfig.default()
    return cache_dir("models") / config.name


def built_tiny_path(name: str) -> Path | None:
    """The cache directory of a finished ``longrope tiny train`` build called ``name`` (``tiny-stdlib``,
    ``tiny-stdlib-steps500``, ...) after checking its files, or None when there is no such build."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = cache_root() / "models" / name
    if not is_complete(path):
        return None
    verify_files(path, f"rebuild it with `longrope tiny train --force` (or delete {path})")
    return path


def with_steps(config: TinyConfig, steps: int) -> TinyConfig:
    """``config`` trained for ``steps`` steps, under its own cache name."""
    if steps < 1:
        raise LongRopeError(f"--steps must be positive (got {steps})")
    warmup = min(config.warmup_steps, max(1, steps // 10))
    return replace(config, train_steps=steps, warmup_steps=warmup, name=f"{config.name}-steps{steps}")

