"""Tiny random transformers models for tests: built locally, never downloaded."""

from __future__ import annotations

import torch

ARCHITECTURES = ("llama", "mistral", "qwen2", "phi3")


def tiny_config(arch: str = "llama", rope_parameters: dict | None = None, window: int = 64, head_dim: int = 16,
                heads: int = 4, kv_heads: int = 2, layers: int = 2, vocab: int = 97, partial_rotary_factor=None,
                **extra):
    """A small config of one of the four architectures; ``window`` is max_position_embeddings."""
    from transformers import LlamaConfig, MistralConfig, Phi3Config, Qwen2Config

    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "phi3": Phi3Config}[arch]
    params = {"rope_type": "default", "rope_theta": 10000.0}
    params.update(rope_parameters or {})
    if partial_rotary_factor is not None:
        params["partial_rotary_factor"] = partial_rotary_factor
    kwargs = dict(
        vocab_size=vocab, hidden_size=heads * head_dim, intermediate_size=2 * heads * head_dim,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=window, rope_parameters=params, attn_implementation="eager",
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if arch != "phi3":
        kwargs["head_dim"] = head_dim
    if arch == "phi3":
        kwargs["original_max_position_embeddings"] = params.get("original_max_position_embeddings", window)
    if arch == "mistral":
        kwargs["sliding_window"] = None
    kwargs.update(extra)
    return cls(**kwargs)


def tiny_model(arch: str = "llama", seed: int = 0, **config_kwargs):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **config_kwargs))
    # Larger-than-default weights make position effects visible in the logits.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    return model.eval()


def same_weights(target, source):
    target.load_state_dict(source.state_dict())
    return target.eval()


def dead_pid() -> int:
    """The id of a process that has just ended (for stale-lock and stale-file tests)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_bpe_tokenizer():
    """A small byte-level BPE (the kind the built-in tiny model uses), trained in memory; ids 0-2 are special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def hello(world):\n    return world + 1\n", "the quick brown fox jumps"] * 50, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def save_tiny_hf_dir(path):
    """Write a tiny random Llama with `make_bpe_tokenizer` to ``path`` (an ordinary HF directory that
    `load_model` and transformers load; about a second to make); return ``path``."""
    tokenizer = make_bpe_tokenizer()
    model = tiny_model("llama", vocab=len(tokenizer), window=32, layers=1, heads=2, kv_heads=1,
                       bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
