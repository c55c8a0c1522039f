"""Spec validation, JSON and rope_parameters round trips."""

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longrope.errors import LongRopeError
from longrope.rope import (
    SPEC_TYPES,
    DynamicNTKSpec,
    LinearSpec,
    Llama3Spec,
    LongRopeSpec,
    NoScaling,
    NTKSpec,
    RopeGeometry,
    StringSpec,
    YarnSpec,
    from_rope_parameters,
    inv_freq_for,
    load_spec,
    make_spec,
    save_spec,
    spec_from_dict,
    spec_from_json,
    string_relative_positions,
    to_rope_parameters,
)

factors = st.floats(min_value=1.0, max_value=64.0, allow_nan=False)
windows = st.one_of(st.none(), st.integers(min_value=16, max_value=1 << 20))
factor_lists = st.integers(min_value=1, max_value=64).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=n, max_size=n),
        st.one_of(st.none(), st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=n, max_size=n)),
    )
)

specs = st.one_of(
    st.builds(NoScaling, original_window=windows),
    st.builds(LinearSpec, factor=factors, original_window=windows),
    st.builds(NTKSpec, factor=factors, original_window=windows),
    st.builds(DynamicNTKSpec, factor=factors, original_window=windows),
    st.builds(YarnSpec, factor=factors, beta_fast=st.floats(8, 64), beta_slow=st.floats(0.25, 4),
              attention_factor=st.one_of(st.none(), st.floats(0.5, 2.0)), truncate=st.booleans(),
              original_window=windows),
    st.builds(Llama3Spec, factor=factors, low_freq_factor=st.floats(0.5, 2.0), high_freq_factor=st.floats(2.5, 8.0),
              original_window=windows),
    st.builds(lambda fl, n_hat, s, a, w: LongRopeSpec(long_factor=fl[0], short_factor=fl[1], n_hat=n_hat, factor=s,
                                                      attention_factor=a, original_window=w),
              factor_lists, st.integers(0, 256), factors, st.one_of(st.none(), st.floats(0.5, 2.0)), windows),
    st.builds(lambda s, w: StringSpec(shift=s, local_window=w), st.integers(2, 10_000), st.integers(0, 1)),
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_json_round_trip(spec):
    text = spec.to_json()
    assert spec_from_json(text) == spec
    assert json.loads(spec_from_json(text).to_json()) == json.loads(text)


native = specs.filter(lambda s: not isinstance(s, (NTKSpec, StringSpec)) and getattr(s, "n_hat", 0) == 0)


@settings(max_examples=300, deadline=None)
@given(native, st.integers(min_value=16, max_value=1 << 20))
def test_rope_parameters_round_trip(spec, model_window):
    params = to_rope_parameters(spec, rope_theta=10000.0, original_window=model_window)
    back = from_rope_parameters(params)
    if params["rope_type"] in ("yarn", "llama3", "longrope"):
        expected = spec.with_window(model_window)  # these types always name the original window
    else:
        expected = dataclasses.replace(spec, original_window=None)  # transformers uses the model's own
    if isinstance(spec, LongRopeSpec) and spec.short_factor is None:
        expected = dataclasses.replace(expected, short_factor=(1.0,) * len(spec.long_factor))
    assert back == expected


def test_make_spec_aliases_and_unknown():
    assert make_spec("linear", factor=2.0) == LinearSpec(factor=2.0)
    assert make_spec("dynamic", factor=2.0) == DynamicNTKSpec(factor=2.0)
    with pytest.raises(LongRopeError, match="unknown scaling method 'rope2'.*pi"):
        make_spec("rope2")
    with pytest.raises(LongRopeError, match="unknown parameter.*beta"):
        make_spec("pi", factor=2.0, beta=1)


@pytest.mark.parametrize("bad,message", [
    (lambda: LongRopeSpec(long_factor=[1.0, float("nan")]), r"long_factor\[1\] is nan"),
    (lambda: LongRopeSpec(long_factor=[1.0, -2.0]), r"long_factor\[1\] is -2.0.*> 0"),
    (lambda: LongRopeSpec(long_factor=[1.0, 0.0]), r"long_factor\[1\] is 0.0"),
    (lambda: LongRopeSpec(long_factor=[]), "long_factor is empty"),
    (lambda: LongRopeSpec(long_factor=["a"]), "list of numbers"),
    (lambda: LongRopeSpec(long_factor=[1.0, 2.0], short_factor=[1.0]), "short_factor has 1 entries"),
    (lambda: LongRopeSpec(long_factor=[1.0], n_hat=-1), "n_hat must be an integer >= 0"),
    (lambda: LinearSpec(factor=0.5), "must be >= 1"),
    (lambda: YarnSpec(factor=float("inf")), "finite"),
    (lambda: NTKSpec(factor=0.9), "must be >= 1"),
    (lambda: YarnSpec(factor=2.0, beta_fast=1.0, beta_slow=32.0), "beta_fast"),
    (lambda: Llama3Spec(factor=2.0, low_freq_factor=4.0, high_freq_factor=1.0), "low_freq_factor"),
    (lambda: StringSpec(shift=100, local_window=100), r"W \(100\) must be smaller than the shift S \(100\)"),
    (lambda: StringSpec(shift=0), "shift S must be a positive integer"),
    (lambda: LinearSpec(factor=2.0, original_window=0), "original_window"),
])
def test_bad_specs_are_named(bad, message):
    with pytest.raises(LongRopeError, match=message):
        bad()


def test_factor_list_length_checked_against_model():
    with pytest.raises(LongRopeError, match="3 rescale factors given, but the model has 8 rotary pairs"):
        inv_freq_for(LongRopeSpec(long_factor=[1.0, 2.0, 3.0]), RopeGeometry(16, 10000.0, 64), 100)


def test_spec_files(tmp_path):
    spec = LongRopeSpec(long_factor=[1.0, 2.5], short_factor=[1.0, 1.1], n_hat=4, factor=8.0)
    path = save_spec(spec, tmp_path / "spec.json")
    assert load_spec(path) == spec
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(LongRopeError, match="broken.json is not valid JSON"):
        load_spec(tmp_path / "broken.json")
    with pytest.raises(LongRopeError, match="does not exist"):
        load_spec(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(LongRopeError, match="JSON object"):
        load_spec(tmp_path / "list.json")
    with pytest.raises(LongRopeError, match="'method'"):
        spec_from_dict({"factor": 2})


def test_inexpressible_rope_parameters_refused():
    with pytest.raises(LongRopeError, match="n_hat=4"):
        to_rope_parameters(LongRopeSpec(long_factor=[1.0], n_hat=4), 10000.0, 64)
    with pytest.raises(LongRopeError, match="string"):
        to_rope_parameters(StringSpec(), 10000.0, 64)


def test_string_defaults_follow_extended_window():
    assert StringSpec().resolved(4096) == (int(0.33 * 4096), 128)
    assert StringSpec(base=LinearSpec(factor=4.0)).resolved(1024) == (int(0.33 * 4096), 128)
    assert StringSpec().resolved(256) == (84, 42)  # W = min(128, S // 2) keeps short windows valid
    with pytest.raises(LongRopeError, match="must be smaller than the shift"):
        StringSpec(local_window=128).resolved(256)


def test_string_position_map():
    import torch

    pos = torch.arange(10)
    mapped = string_relative_positions(pos, pos, shift=4, local_window=2)
    for q in range(10):
        for k in range(q + 1):
            r = q - k
            assert mapped[q, k] == (r if r < 4 else r - 4 + 2)
    assert math.isclose(float(mapped.max()), 9 - 4 + 2)


def test_which_specs_depend_on_the_sequence_length():
    dependent = {cls.method for cls in SPEC_TYPES.values() if cls is not StringSpec and cls.length_dependent}
    assert dependent == {"dynamic_ntk", "longrope"}  # the rotary module rebuilds their tables per length
    assert StringSpec(base=DynamicNTKSpec(factor=2.0)).length_dependent
    assert not StringSpec(base=YarnSpec(factor=2.0)).length_dependent and not StringSpec().length_dependent
