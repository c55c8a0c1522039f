"""Fixtures of the eval tests: one session cache directory, a loaded test-size tiny model, an oracle retriever."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn


@pytest.fixture(scope="session", autouse=True)
def eval_cache(tmp_path_factory):
    """Token-sample caches of these tests go to a session-temporary directory, never the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LONGROPE_CACHE", str(tmp_path_factory.mktemp("eval-cache")))
        yield


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_loaded(request):
    """(model, tokenizer) of the test-size trained tiny model, fp32, eval mode."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures are set up before the module's one_thread fixture
    try:
        tiny_model_dir = request.getfixturevalue("tiny_model_dir")
    finally:
        torch.set_num_threads(before)

    return LlamaForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


class OracleRetriever(nn.Module):
    """A deterministic stand-in for a model that retrieves perfectly within ``window`` tokens and not beyond.

    At prefill it decodes the last ``window`` tokens of the prompt, finds the key with ``pattern`` and then
    emits the tokens of " <key>" one per decoding step (" 0" when the key is out of sight). It speaks the
    transformers calling convention used by `greedy_generate` (KV-cache object, ``logits_to_keep``).
    """

    def __init__(self, tokenizer, window: int, pattern: str = r"PASS_KEY = (\d+)|pass key is (\d+)"):
        super().__init__()
        self.tokenizer, self.window, self.pattern = tokenizer, window, re.compile(pattern)
        self.vocab = len(tokenizer)
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device
        self.prompt_lengths: list[int] = []

    def forward(self, input_ids, cache=None, use_cache=True, logits_to_keep=0, position_ids=None, **_):
        if logits_to_keep > 1:  # a teacher-forced scoring of the answer (answer_loglik): no opinion, uniform
            return SimpleNamespace(logits=torch.zeros(1, logits_to_keep, self.vocab), cache=None)
        if cache is None:
            self.prompt_lengths.append(input_ids.shape[1])
            visible = self.tokenizer.decode(input_ids[0, -self.window:].tolist())
            match = self.pattern.search(visible)
            answer = next(g for g in match.groups() if g) if match else "0"
            cache = SimpleNamespace(queue=self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"])
        token = cache.queue.pop(0) if cache.queue else 0
        logits = torch.zeros(1, 1, self.vocab)
        logits[0, 0, token] = 1.0
        return SimpleNamespace(logits=logits, cache=cache)


@pytest.fixture
def oracle_factory():
    return OracleRetriever
