"""Every RoPE decoder transformers ships (`tests/architectures.py`): exact against transformers' own scaling, or
refused with its reason; the layers longrope says use RoPE are those that do; README's table is the list's.

Per architecture, with tiny random weights (2 layers, hidden 64, window 64, logits at 256 tokens, fp32):
`apply(NoScaling())` leaves the logits unchanged; `apply(spec)` equals the same weights under transformers'
native ``rope_parameters`` for PI, YaRN and LongRoPE (on the full-attention layers of per-layer-type models);
max difference < 1e-5.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from architectures import ARCHITECTURES, Architecture, native_spec, readme_table, rotary_decoders, tiny_model

from longrope.attention import apply, restore
from longrope.attention.model_rope import model_rope
from longrope.attention.rotary import ScaledRotaryEmbedding, find_rotary_modules
from longrope.errors import LongRopeError
from longrope.loss import token_nll
from longrope.rope import NoScaling

TOLERANCE = 1e-5
EXACT = [a for a in ARCHITECTURES if a.exact]
REFUSED = [a for a in ARCHITECTURES if a.refused]
SKIPPED = [a for a in ARCHITECTURES if a.skip]
README = Path(__file__).resolve().parents[2] / "README.md"


pytestmark = pytest.mark.usefixtures("one_thread")


def ids_of(arch: Architecture, length: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, 97, (1, length or arch.length), generator=generator)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def test_the_list_names_every_rotary_decoder_of_this_transformers():
    listed = {a.model_type for a in ARCHITECTURES}
    assert len(listed) == len(ARCHITECTURES), "an architecture is listed twice"
    missing = sorted(set(rotary_decoders()) - listed)
    assert not missing, f"add these to tests/architectures.py (exact or refused): {missing}"


# CodeGen and GPT-J rotate inside attention from tables they index themselves; HRM runs its layers in cycles
# (num_hidden_layers counts the cycles, all RoPE): their RoPE layers are not measured per layer.
UNMEASURED_LAYERS = ("codegen", "gptj", "hrm_text")


@pytest.mark.parametrize("arch", EXACT, ids=lambda a: a.model_type)
def test_exact(arch):
    """Plain RoPE reproduced; each native scaling matched; restore bit for bit; the RoPE layers as measured."""
    model = tiny_model(arch)
    ids = ids_of(arch)
    before = logits(model, ids)
    apply(model, NoScaling())
    difference = float((logits(model, ids) - before).abs().max())
    assert difference < TOLERANCE, f"plain RoPE: max logit difference {difference:.3g}"
    if arch.model_type not in UNMEASURED_LAYERS:
        assert layers_using_rope(model, arch) == model_rope(model).rope_layers
    pairs = model_rope(model).target().geometry.pairs
    apply(model, native_spec("pi", pairs))
    assert not torch.equal(logits(model, ids), before), "the logits do not depend on RoPE: a vacuous check"
    for method in arch.native:
        # The native model's window is the extended one, as a real extended checkpoint declares (PI: the original).
        native = tiny_model(arch, native=method, window=64 if method == "pi" else 256)
        native.load_state_dict(model.state_dict())
        apply(model, native_spec(method, pairs, arch.one_table))
        for length in (arch.length // 8, arch.length) if method == "longrope" else (arch.length,):  # short, long
            short = ids_of(arch, length)
            difference = float((logits(model, short) - logits(native, short)).abs().max())
            assert difference < TOLERANCE, f"{method} at {length} tokens: max logit difference {difference:.3g}"
    restore(model)
    assert torch.equal(logits(model, ids), before)  # restore gives the model back bit for bit
    # The chunked loss that eval, search and fine-tuning score with equals the model's own logits' loss.
    reference = torch.nn.functional.cross_entropy(before[0, :-1], ids[0, 1:], reduction="none")
    if arch.loss is not None:
        with pytest.raises(LongRopeError, match=re.escape(arch.loss)):
            token_nll(model, ids)
        return
    with torch.no_grad():
        ours = token_nll(model, ids, chunk=100)[0]
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", REFUSED, ids=lambda a: a.model_type)
def test_refused_with_its_reason(arch):
    model = tiny_model(arch)
    before = [(id(parent), attr, id(child)) for parent, attr, child in find_rotary_modules(model)]
    with pytest.raises(LongRopeError) as refusal:
        apply(model, NoScaling())
    message = str(refusal.value)
    assert message.startswith(arch.refused), message
    assert "\n" not in message
    assert [(id(parent), attr, id(child)) for parent, attr, child in find_rotary_modules(model)] == before


def _reverse(table):
    """The same table rotating the other way: what a layer that uses it would notice."""
    if isinstance(table, dict):
        return {k: _reverse(v) for k, v in table.items()}
    if isinstance(table, torch.Tensor):
        return table.conj()
    first, second = table
    return (first, -second) if not bool((first[..., 0, :] == 0).all()) else (-first, second)


def decoder_layers(model) -> list:
    """The decoder's layers: its ModuleList with one entry per hidden layer."""
    config = model.config.get_text_config()
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == config.num_hidden_layers]
    found.sort(key=lambda item: not item[0].endswith("layers"))  # model.layers before a list of experts
    if found:
        return list(found[0][1])
    raise AssertionError(f"no list of {config.num_hidden_layers} layers in {type(model).__name__}")


def layers_using_rope(model, arch: Architecture) -> tuple[int, ...]:
    """Which decoder layers change their output when their rotary tables turn the other way (measured): tables
    handed to the layer, and tables its own modules compute while it runs (Moshi, DeepSeek-V4)."""
    ids = ids_of(arch, 16)
    seen: list = []  # the tables of the current forward
    inside: list = [None]  # the layer running now
    target: list = [None]  # the layer whose tables are reversed

    def record(module, args, out):
        if inside[0] is not None and inside[0] == target[0]:
            return _reverse(out)
        seen.append(out)
        return None

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, ScaledRotaryEmbedding)]
    base = logits(model, ids)
    used = []
    for index, layer in enumerate(decoder_layers(model)):
        def enter(module, args, kwargs, index=index):
            inside[0] = index
            if index != target[0]:
                return None
            tables = {id(t) for t in seen}
            args = tuple(_reverse(a) if id(a) in tables else a for a in args)
            kwargs = {k: _reverse(v) if id(v) in tables or (isinstance(v, dict) and any(
                id(t) in tables for t in v.values())) else v for k, v in kwargs.items()}
            return args, kwargs

        def leave(module, args, out):
            inside[0] = None

        hooks = [layer.register_forward_pre_hook(enter, with_kwargs=True), layer.register_forward_hook(leave)]
        target[0] = index
        try:
            seen.clear()
            changed = not torch.equal(logits(model, ids), base)
        finally:
            for h in hooks:
                h.remove()
        if changed:
            used.append(index)
    for h in handles:
        h.remove()
    return tuple(used)


@pytest.mark.parametrize("arch", SKIPPED, ids=lambda a: a.model_type)
def test_not_built_here(arch):
    pytest.skip(arch.skip)


def test_readme_table_is_generated_from_the_list():
    """`python tests/architectures.py` prints the table; paste it under "Supported architectures"."""
    assert readme_table() in README.read_text(), "README's architecture table is out of date"
