"""Building the built-in tiny Llama (``longrope.models.tiny.TinyConfig``) from scratch: the tokenizer and the
model trained on the train split of the Python standard library source, with a retrieval curriculum mixed in
(``longrope.data.retrieval``), then measured on the validation split (perplexity, bits per character, in-window
passkey) into its ``COMPLETE`` marker. A recipe because it trains and evaluates (``longrope.eval``).

``train_tiny`` writes an ordinary Hugging Face directory (config.json, model.safetensors, tokenizer files) that
``LlamaForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load; it appears atomically. Training
state is checkpointed beside the directory, so a killed build resumes where it stopped; ``ensure_tiny`` returns a
cached build or makes it.

Only ``StdlibCorpus("train")`` is read for training (tokenizer, unigram counts and model); the validation split
is used for the metrics stored in the marker; the test split is never touched here.
"""

from __future__ import annotations

import contextlib

import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape

from longrope.atomic import atomic_dir, atomic_file, sweep_stale
from longrope.data.corpus import Corpus, Document, StdlibCorpus
from longrope.data.retrieval import curriculum_names, retrieval_window
from longrope.data.samples import token_samples
from longrope.models.tiny import (
    TRAIN_DOCUMENTS,
    TinyConfig,
    is_complete,
    tiny_llama_config,
    tiny_metrics,
    tiny_path,
    train_tokenizer,
    write_marker,
)
from longrope.paths import cache_dir
from longrope.progress import LoggedProgress, progress_columns


_LOSS_CHUNK = 512  # positions per output-head chunk: never materialise [tokens x vocab] logits for long inputs


def _token_stream(tokenizer, documents: list[Document]) -> np.ndarray:
    """All documents' tokens in one array, each followed by EOS (no BOS: training windows get their own)."""
    encoded = tokenizer.backend_tokenizer.encode_batch_fast(
        [d.text for d in documents], add_special_tokens=False
    )
    eos = tokenizer.eos_token_id
    return np.concatenate([np.array(e.ids + [eos], dtype=np.int64) for e in encoded])


# ------------------------------------------------------------------------------------------------ scoring


def body_precision(model, low: torch.dtype | None | str = "auto"):
    """Autocast context for the body of ``model`` (on its device) in ``low``; ``auto``: `longrope.hardware`'s
    `autocast_dtype` (bf16 where measured fast: the shipped model was built so on a bf16-fast CPU; plain fp32 on
    an AVX2-only CPU, where bf16 products run ~60x slower)."""
    from longrope.hardware import autocast_dtype

    device = next(model.parameters()).device
    low = autocast_dtype(device) if low == "auto" else low
    return torch.autocast(device.type, dtype=low) if low is not None else contextlib.nullcontext()


def sequence_nll(model, ids: torch.Tensor, chunk: int = _LOSS_CHUNK, low: torch.dtype | None | str = "auto"
                 ) -> torch.Tensor:
    """Per-token negative log-likelihood (fp32, shape [T-1]) of a 1-D token sequence in one forward pass.

    The body runs in autocast to ``low`` (`body_precision`'s choice by default: bf16 where it is fast); the output
    head and the loss run in fp32, ``chunk`` positions at a time.
    Not `longrope.loss.hidden_nll`: that computes ``logsumexp - logit`` where this uses ``F.cross_entropy``, which
    differs in the last float32 bits (up to ~1e-6 nats), and the shipped model's recorded metrics came from this one.
    """
    ids = ids.to(next(model.parameters()).device)
    with torch.no_grad():
        with body_precision(model, low):
            hidden = model.model(input_ids=ids[None], use_cache=False).last_hidden_state[0]  # [T, H]
        hidden = hidden.float()
        losses = []
        for start in range(0, ids.numel() - 1, chunk):
            stop = min(start + chunk, ids.numel() - 1)
            logits = model.lm_head(hidden[start:stop])  # [chunk, V]
            losses.append(F.cross_entropy(logits, ids[start + 1 : stop + 1], reduction="none"))
    return torch.cat(losses)


def _window_nll(model, windows: torch.Tensor, batch_size: int = 32, low: torch.dtype | None | str = "auto"
                ) -> torch.Tensor:
    """Per-position NLL [N, L-1] of N windows of L tokens (short windows: full logits are small)."""
    rows = []
    with torch.no_grad():
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start : start + batch_size].to(next(model.parameters()).device)
            with body_precision(model, low):
                logits = model(input_ids=batch, use_cache=False).logits
            logits = logits[:, :-1].float()
            rows.append(F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").cpu())
    return torch.cat(rows)


def _random_windows(stream: torch.Tensor, count: int, length: int, bos: int, generator: torch.Generator):
    """``count`` windows: BOS followed by ``length - 1`` consecutive stream tokens from a random offset."""
    starts = torch.randint(0, stream.numel() - length, (count,), generator=generator)
    body = stream[starts[:, None] + torch.arange(length - 1)]
    return torch.cat([torch.full((count, 1), bos, dtype=torch.long), body], dim=1)  # [count, length]


def evaluate_tiny(model, tokenizer, config: TinyConfig, unigram_counts: np.ndarray,
                  low: torch.dtype | None | str = "auto") -> dict:
    """Validation metrics: in-window ppl, unigram ppl on the same tokens, first vs last 64 positions, and ppl of
    the same long documents cut to L, 2L, 4L, 8L tokens (truncate mode, BOS first, no RoPE scaling); the body in
    autocast to ``low`` as in training."""
    model.eval()
    validation = StdlibCorpus("validation")
    stream = torch.from_numpy(_token_stream(tokenizer, list(validation.documents())))
    generator = torch.Generator().manual_seed(config.seed + 1)
    windows = _random_windows(stream, config.eval_windows, config.window, tokenizer.bos_token_id, generator)
    nll = _window_nll(model, windows, low=low)  # [N, L-1]; column j scores the token at position j+1

    log_unigram = np.log((unigram_counts + 1.0) / (unigram_counts.sum() + unigram_counts.size))
    unigram_nll = -torch.from_numpy(log_unigram)[windows[:, 1:]]
    edge = min(64, config.window // 4)
    metrics = {
        "validation_windows": config.eval_windows,
        "ppl_in_window": math.exp(nll.mean().item()),
        "ppl_unigram": math.exp(unigram_nll.mean().item()),
        f"ppl_first_{edge}": math.exp(nll[:, :edge].mean().item()),
        f"ppl_last_{edge}": math.exp(nll[:, -edge:].mean().item()),
    }

    lengths = [config.window] + [config.window * s for s in config.eval_scales]
    samples = token_samples(
        validation,
        tokenizer,
        min_tokens=max(lengths),
        n=config.eval_long_docs,
        seed=config.seed,
        allow_fewer=True,
    )
    long_ppl = {}
    for length in lengths:
        total = torch.cat([sequence_nll(model, sample[:length], low=low).cpu() for sample in samples])
        long_ppl[str(length)] = math.exp(total.mean().item())
    metrics["long_documents"] = len(samples)
    metrics["ppl_by_length_no_scaling"] = long_ppl
    # The evaluation layer sits above models/; imported here only, where the trainer measures its result.
    from longrope.eval.bits_per_char import span_bits_per_char
    from longrope.eval.passkey import accuracy_by_length, passkey_trials

    if config.eval_span_chars:
        metrics["bits_per_char"] = span_bits_per_char(model, tokenizer, validation, config.eval_span_chars, 20)
        metrics["bits_per_char_spans"] = f"20 spans of {config.eval_span_chars} characters"
    if config.eval_passkey_trials:
        metrics["passkey_in_window"] = {
            template: accuracy_by_length(passkey_trials(model, tokenizer, [config.window], config.eval_passkey_trials,
                                                        template=template, progress=False))[config.window]
            for template in ("code", "dict")
        }
    return metrics


# ----------------------------------------------------------------------------------------------- training


def _lr_factor(step: int, config: TinyConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.train_steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (
        1 + math.cos(math.pi * min(progress, 1.0))
    )


def _train_documents(config: TinyConfig, corpus: Corpus) -> list[Document]:
    documents = []
    chars = 0
    for document in corpus.documents():
        if config.max_train_chars is not None and chars >= config.max_train_chars:
            break
        documents.append(document)
        chars += len(document.text)
    return documents


def _progress(console: Console) -> LoggedProgress:
    return LoggedProgress(*progress_columns("loss {task.fields[loss]:.3f}"), console=console)


def train_tiny(config: TinyConfig, out_dir: str | Path | None = None, progress: bool = True,
               device: str | torch.device = "auto", dtype: str = "auto") -> Path:
    """Train the tokenizer and the model from scratch and save them to ``out_dir`` (default: the cache).

    The directory appears atomically, complete with its ``COMPLETE`` marker; an existing one is replaced.
    ``device``/``dtype`` (`longrope.hardware`): where it trains and the autocast dtype of the model's body
    (master weights, head and loss stay fp32); ``auto`` reproduces the shipped build on a CPU.
    """
    from longrope.hardware import autocast_dtype, dtype_name, model_record, resolve_device
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    target = resolve_device(device)
    low = autocast_dtype(target, dtype)  # the body's; bad input fails here, before the tokenizer is trained
    out_dir = Path(out_dir) if out_dir is not None else cache_dir("models") / config.name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, quiet=not progress)
    started = time.perf_counter()

    console.print(f"[bold]tiny model {escape(config.name)}[/]: training a {config.vocab_size}-token BPE tokenizer")
    corpus = StdlibCorpus("train")
    documents = _train_documents(config, corpus)
    tokenizer = train_tokenizer([d.text for d in documents], config.vocab_size)
    stream_np = _token_stream(tokenizer, documents)
    stream = torch.from_numpy(stream_np)
    unigram_counts = np.bincount(stream_np, minlength=len(tokenizer)).astype(np.float64)
    console.print(f"train split: {len(documents)} files, {stream.numel():,} tokens")

    torch.manual_seed(config.seed)
    hf_logging.set_verbosity_error()  # no "generation flags" chatter from from-scratch construction
    model = LlamaForCausalLM(tiny_llama_config(config, tokenizer)).to(target)  # fp32 master weights
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    generator = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)  # the retrieval curriculum's draws
    names = curriculum_names((d.text for d in documents), config.retrieval_composed_names, config.seed)

    checkpoint = checkpoint_path(out_dir)
    trainables = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    done, losses, seconds_before = _resume(checkpoint, config, trainables, generator, rng, console)
    train_started = time.perf_counter() - seconds_before
    # fp16 (a GPU without bf16) needs loss scaling; disabled, the scaler passes everything through unchanged.
    # Its state is not checkpointed: a resumed fp16 build starts from the default scale again.
    scaler = torch.amp.GradScaler(target.type, enabled=low == torch.float16)
    model.train()
    with _progress(console) as bar:
        task = bar.add_task(
            f"training {n_params / 1e6:.1f}M params", total=config.train_steps, loss=float("nan"), completed=done
        )
        save_every = max(1, config.train_steps // config.checkpoints)
        for step in range(done, config.train_steps):
            batch = _random_windows(
                stream, config.batch_size, config.window, tokenizer.bos_token_id, generator
            )
            for row in range(round(config.batch_size * config.retrieval_fraction)):
                batch[row] = retrieval_window(stream, config.window, tokenizer, names, rng,
                                              config.retrieval_pairing, config.retrieval_digits)
            batch = batch.to(target)
            with body_precision(model, low):
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            smooth = sum(losses[-20:]) / len(losses[-20:])
            bar.update(task, advance=1, loss=smooth)
            if (step + 1) % save_every == 0 and step + 1 < config.train_steps:
                _save_checkpoint(checkpoint, config, trainables, generator, rng, step + 1, losses,
                                 time.perf_counter() - train_started)
    train_seconds = time.perf_counter() - train_started

    console.print("evaluating on the validation split")
    metrics = evaluate_tiny(model, tokenizer, config, unigram_counts, low)
    metrics["final_train_loss"] = sum(losses[-20:]) / len(losses[-20:])

    marker = {
        "config": config.to_json(),
        "parameters": n_params,
        "train_tokens_seen": config.train_steps * config.batch_size * config.window,
        "train_split_tokens": int(stream.numel()),
        "train_documents": len(documents),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "metrics": metrics,
        "autocast": dtype_name(low) if low is not None else "none (fp32)",
        **{k: v for k, v in model_record(model).items() if k != "dtype"},  # device, torch, machine
    }
    _save(out_dir, model, tokenizer, documents, marker)
    checkpoint.unlink(missing_ok=True)
    console.print(f"saved to {out_dir}", markup=False, soft_wrap=True)  # a path may hold brackets
    return out_dir


def checkpoint_path(out_dir: Path) -> Path:
    """Where a build of ``out_dir`` keeps its training state (beside it, hidden) until the model is saved."""
    return out_dir.parent / f".{out_dir.name}.checkpoint.pt"


def _save_checkpoint(path: Path, config: TinyConfig, trainables: dict, generator: torch.Generator,
                     rng: random.Random, step: int, losses: list[float], seconds: float) -> None:
    """Everything needed to continue exactly where training stopped, written atomically."""
    state = {name: obj.state_dict() for name, obj in trainables.items()}
    state.update(config=config.to_json(), step=step, losses=losses, seconds=seconds,
                 generator=generator.get_state(), rng=rng.getstate())
    atomic_file(path, lambda tmp: torch.save(state, tmp))


def _resume(path: Path, config: TinyConfig, trainables: dict, generator: torch.Generator, rng: random.Random,
            console: Console) -> tuple[int, list[float], float]:
    """(steps done, losses, training seconds so far) from the checkpoint of an interrupted build of the same
    config, or a fresh start; a checkpoint of another config or that cannot be read is ignored."""
    if not path.is_file():
        return 0, [], 0.0
    try:
        state = torch.load(path, weights_only=False)
        if state["config"] != config.to_json():
            console.print(f"ignoring {path}: it belongs to another configuration", markup=False, soft_wrap=True)
            return 0, [], 0.0
        for name, obj in trainables.items():
            obj.load_state_dict(state[name])
        generator.set_state(state["generator"])
        rng.setstate(state["rng"])
    except Exception as exc:  # a damaged checkpoint costs the time it saved, never the build
        console.print(f"ignoring unreadable checkpoint {path} ({type(exc).__name__})", markup=False, soft_wrap=True)
        return 0, [], 0.0
    console.print(f"resuming an interrupted build at step {state['step']}/{config.train_steps}")
    return state["step"], state["losses"], state["seconds"]


def _save(out_dir: Path, model, tokenizer, documents: list[Document], marker: dict) -> None:
    """Write everything into a temporary sibling, marker last (with every file's sha256), then move it in."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / TRAIN_DOCUMENTS).write_text("".join(f"{d.id}\n" for d in documents))
        write_marker(tmp, marker)

    atomic_dir(out_dir, write)


# ------------------------------------------------------------------------------------------ cache access


def ensure_tiny(config: TinyConfig | None = None, progress: bool = False, device: str | torch.device = "auto",
                dtype: str = "auto") -> Path:
    """The cached model directory for ``config`` (default: ``TinyConfig.default()``), built on first use
    (`train_tiny` on ``device`` in ``dtype``).

    A directory without a valid marker, or built from a different config, is removed and rebuilt.
    """
    config = config or TinyConfig.default()
    path = tiny_path(config)
    if is_complete(path) and TinyConfig.from_json(tiny_metrics(path).get("config")) == config:
        return path
    if path.exists():
        shutil.rmtree(path)
    sweep_stale(path)  # build directories of killed processes go before a long build, not after it
    return train_tiny(config, path, progress=progress, device=device, dtype=dtype)


def load_tiny(config: TinyConfig | None = None):
    """``(model, tokenizer)``: the model shipped with the package, or with ``config`` that build from the cache
    (trained first if needed)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    if config is None:
        from longrope.models.shipped import shipped_tiny_path

        path = shipped_tiny_path()
    else:
        path = ensure_tiny(config)
    return LlamaForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)

