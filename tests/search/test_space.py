"""Search space, operators and seeds: hypothesis properties and exact seed tables."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longrope.errors import LongRopeError
from longrope.rope import (
    LinearSpec,
    LongRopeSpec,
    NTKSpec,
    RopeGeometry,
    YarnSpec,
    rescale_factors,
    save_spec,
)
from longrope.search.operators import crossover, mutate
from longrope.search.space import (
    N_HAT_CHOICES,
    Genome,
    make_short_space,
    make_space,
    read_factor_file,
    seed_genomes,
)

GEOMETRY = RopeGeometry(dim=32, base=10000.0, original_window=256)


@st.composite
def space_and_genomes(draw):
    factor = draw(st.sampled_from([2.0, 4.0, 8.0, 16.0, 3.5]))
    longrope2 = draw(st.booleans())
    space = make_space(
        GEOMETRY,
        factor,
        search_n_hat=draw(st.booleans()),
        search_attention=draw(st.booleans()),
        longrope2=longrope2,
        lambda_max=None if longrope2 else draw(st.sampled_from([None, 1.0, 3.0, 40.0])),
        search_critical=longrope2 and draw(st.booleans()),
    )
    seeds = [g for _, g in seed_genomes(space, GEOMETRY)]
    rng = random.Random(draw(st.integers(0, 2**32)))
    return space, seeds, rng, draw(st.floats(0, 1))


@settings(max_examples=60, deadline=None)
@given(space_and_genomes())
def test_operators_stay_in_space(args):
    space, seeds, rng, prob = args
    population = list(seeds)
    for g in population:
        assert space.contains(g), g
    for _ in range(40):
        if rng.random() < 0.5 or len(population) < 2:
            child = mutate(rng.choice(population), space, rng, prob)
        else:
            child = crossover(*rng.sample(population, 2), space, rng)
        assert space.contains(child), child
        assert all(isinstance(v, int) for v in child.factors)  # the 0.01 grid, as hundredths
        assert child.n_hat in N_HAT_CHOICES
        population.append(child)


def test_genome_key_roundtrip():
    g = Genome((100, 120, 120), 8, 117)
    assert Genome.from_key(g.key) == g
    assert Genome.from_json(json.loads(json.dumps(g.to_json()))) == g
    assert Genome.from_key(Genome((100,), 0, None).key).attention is None


@pytest.mark.parametrize("factor", [2.0, 8.0, 16.0])
def test_seeds_equal_method_tables_snapped(factor):
    space = make_space(GEOMETRY, factor)
    seeds = dict(seed_genomes(space, GEOMETRY))
    for name, spec in (
        ("pi", LinearSpec(factor=factor)),
        ("ntk", NTKSpec(factor=factor)),
        ("yarn", YarnSpec(factor=factor)),
    ):
        table = rescale_factors(spec.with_window(256), GEOMETRY)[0].tolist()
        expected = tuple(min(max(round(v * 100), 100), int(1.25 * factor * 100)) for v in table)
        assert seeds[name].factors == expected, name
        assert space.contains(seeds[name])
    assert seeds["pi"].factors == (int(factor * 100),) * 16


def test_attention_seeds_use_su_policy_and_yarn_own():
    space = make_space(GEOMETRY, 8.0, search_attention=True)
    seeds = dict(seed_genomes(space, GEOMETRY))
    assert seeds["pi"].attention == 117  # sqrt(1 + ln 8 / ln 256) = 1.1726
    assert seeds["yarn-attention"].attention == 121  # 0.1 ln 8 + 1 = 1.2079
    assert space.to_spec(seeds["pi"]).attention_factor == 1.17


def test_longrope2_space():
    space = make_space(GEOMETRY, 8.0, longrope2=True)
    c = GEOMETRY.critical_pair
    assert space.first_pair == c and (space.low, space.high) == (800, 1600)
    genome = Genome(tuple([900] * (16 - c)))
    factors = space.factors(genome)
    assert len(factors) == 16
    assert factors[c:] == (9.0,) * (16 - c)
    for i in range(c):
        assert factors[i] == pytest.approx(9.0 ** (i / c))
    assert all(a <= b for a, b in zip(factors, factors[1:]))
    assert make_space(GEOMETRY, 8.0, longrope2=True, critical_pair=3).first_pair == 3
    with pytest.raises(LongRopeError, match="critical pair"):
        make_space(GEOMETRY, 8.0, longrope2=True, critical_pair=16)


def test_spec_of_genome():
    space = make_space(GEOMETRY, 8.0, search_n_hat=True)
    spec = space.to_spec(Genome(tuple(range(100, 260, 10)), 4))
    assert isinstance(spec, LongRopeSpec) and spec.n_hat == 4 and spec.factor == 8.0
    assert spec.long_factor[:2] == (1.0, 1.1) and spec.attention_factor is None


def test_target_not_above_window():
    with pytest.raises(LongRopeError, match="above the original window"):
        make_space(GEOMETRY, 1.0)


def test_factor_file(tmp_path):
    good = tmp_path / "f.json"
    good.write_text(json.dumps([1.0 + i / 10 for i in range(16)]))
    assert read_factor_file(good, GEOMETRY)[1] == 1.1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([1.0] * 5))
    with pytest.raises(LongRopeError, match="5 factors but the model has 16"):
        read_factor_file(bad, GEOMETRY)
    spec_file = save_spec(YarnSpec(factor=8.0), tmp_path / "yarn.json")
    yarn = rescale_factors(YarnSpec(factor=8.0, original_window=256), GEOMETRY)[0].tolist()
    assert read_factor_file(spec_file, GEOMETRY) == pytest.approx(yarn)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(LongRopeError, match="junk.json is not valid JSON"):
        read_factor_file(tmp_path / "junk.json", GEOMETRY)
    for wrong, found in (["1.5"] * 16, r"factors\[0\] is '1.5' \(a string\)"), ([True] * 16, "factors.0. is true"), \
            ({"method": "yarn", "factor": "8"}, "factor is '8'"), ("1111111111111111", "expected a JSON list"):
        (tmp_path / "typed.json").write_text(json.dumps(wrong))
        with pytest.raises(LongRopeError, match=found):
            read_factor_file(tmp_path / "typed.json", GEOMETRY)
    with pytest.raises(LongRopeError, match="does not exist"):
        read_factor_file(tmp_path / "missing.json", GEOMETRY)
    space = make_space(GEOMETRY, 8.0)
    seeds = dict(seed_genomes(space, GEOMETRY, read_factor_file(good, GEOMETRY)))
    assert seeds["user"].factors[:3] == (100, 110, 120)


def test_short_space():
    long = LongRopeSpec(long_factor=tuple(1.0 + i * 0.5 for i in range(16)), factor=8.0)
    space = make_short_space(GEOMETRY, long)
    seeds = dict(seed_genomes(space, GEOMETRY))
    assert seeds["none"].factors == (100,) * 16
    spec = space.to_spec(seeds["sqrt-long"])
    assert spec.long_factor == long.long_factor and len(spec.short_factor) == 16
    with pytest.raises(LongRopeError, match="rotary pairs"):
        make_short_space(GEOMETRY, LongRopeSpec(long_factor=(1.0, 2.0), factor=8.0))


# -- LongRoPE2's real critical pair ------------------------------------------------------------------------------


def test_critical_candidates_by_hand():
    """Candidates run from ceil((d/2) log_b(L / (2 pi 10))) (ten periods inside the window) to the theoretical
    ceil((d/2) log_b(L / (2 pi))), worked out by hand here."""
    # SmolLM2-135M: d = 64 (32 pairs), b = 100000, L = 8192.
    #   32 * ln(8192 / (2 pi))  / ln(1e5) = 32 * 7.1731 / 11.5129 = 19.94 -> 20
    #   32 * ln(8192 / (20 pi)) / ln(1e5) = 32 * 4.8705 / 11.5129 = 13.54 -> 14
    smollm2 = RopeGeometry(dim=64, base=100000.0, original_window=8192)
    assert smollm2.critical_pair == 20 and smollm2.critical_dim == 40
    assert smollm2.critical_candidates == tuple(range(14, 21))
    # The built-in tiny model (longrope.models.tiny.TinyConfig): head_dim 32 (16 pairs), b = 10000, L = 256.
    #   16 * ln(256 / (2 pi))  / ln(1e4) = 16 * 3.7072 / 9.2103 = 6.44 -> 7
    #   16 * ln(256 / (20 pi)) / ln(1e4) = 16 * 1.4047 / 9.2103 = 2.44 -> 3
    from longrope.models.tiny import TinyConfig

    tiny = TinyConfig.default()
    geometry = RopeGeometry(dim=tiny.head_dim, base=tiny.rope_theta, original_window=tiny.window)
    assert (geometry.dim, geometry.base, geometry.original_window) == (32, 10000.0, 256)
    assert geometry.critical_pair == 7 and geometry.critical_candidates == (3, 4, 5, 6, 7)
    # The paper's reported real critical pairs lie among the candidates: Phi3-mini 31 -> 25, LLaMA3-8B 35 -> 30.
    phi3 = RopeGeometry(dim=96, base=10000.0, original_window=2048)
    llama3 = RopeGeometry(dim=128, base=500000.0, original_window=8192)
    assert phi3.critical_pair == 31 and 25 in phi3.critical_candidates and phi3.critical_candidates[0] == 19
    assert llama3.critical_pair == 35 and 30 in llama3.critical_candidates and llama3.critical_candidates[0] == 24


def test_critical_candidates_stay_inside_the_pairs():
    assert RopeGeometry(dim=8, base=10000.0, original_window=16).critical_candidates == (1,)  # both ends clip to 1
    huge = RopeGeometry(dim=8, base=2.0, original_window=1 << 20)  # every pair turns many times in the window
    assert huge.critical_pair == 4 and huge.critical_candidates == (3,)


@st.composite
def critical_space_and_genomes(draw):
    factor = draw(st.sampled_from([2.0, 4.0, 8.0, 3.5]))
    space = make_space(GEOMETRY, factor, longrope2=True, search_critical=True,
                       search_attention=draw(st.booleans()))
    seeds = [g for _, g in seed_genomes(space, GEOMETRY)]
    return space, seeds, random.Random(draw(st.integers(0, 2**32))), draw(st.floats(0.05, 1))


@settings(max_examples=40, deadline=None)
@given(critical_space_and_genomes())
def test_searched_critical_pair_space_invariants(args):
    """Every individual: critical pair among the candidates; pairs at and above it in [s, 2s], non-decreasing;
    pairs below it NTK from it, lambda_i = lambda_c ** (i / c); the whole table non-decreasing."""
    space, seeds, rng, prob = args
    assert space.critical_choices == GEOMETRY.critical_candidates == (3, 4, 5, 6, 7)
    assert all(g.critical == GEOMETRY.critical_pair for g in seeds)
    population, criticals = list(seeds), set()
    for _ in range(60):
        if rng.random() < 0.5 or len(population) < 2:
            child = mutate(rng.choice(population), space, rng, prob)
        else:
            child = crossover(*rng.sample(population, 2), space, rng)
        assert space.contains(child), child
        c = child.critical
        criticals.add(c)
        table = space.to_spec(child).long_factor
        assert len(table) == GEOMETRY.pairs and len(child.factors) == GEOMETRY.pairs - c
        s = space.factor
        assert all(s - 1e-9 <= v <= 2 * s + 1e-9 for v in table[c:])
        assert all(a <= b for a, b in zip(table, table[1:]))
        assert table[:c] == pytest.approx([table[c] ** (i / c) for i in range(c)])
        assert Genome.from_key(child.key) == child and Genome.from_json(child.to_json()) == child
        population.append(child)
    if prob >= 0.3:
        assert len(criticals) > 1  # the critical pair moves


def test_moving_the_critical_pair_keeps_the_table_near():
    """A mutation that only moves the critical pair lower starts the newly searched pairs at their NTK values;
    moving it higher hands pairs to the NTK rule. Pairs above both stay as they were."""
    from longrope.search.operators import move_critical

    space = make_space(GEOMETRY, 4.0, longrope2=True, search_critical=True)
    parent = Genome(tuple(range(500, 500 + 10 * 9, 10)), critical=7)  # pairs 7..15: 5.0, 5.1, ..., 5.8
    lower = Genome(move_critical(parent, space, 4), critical=4)
    assert space.contains(lower) and lower.factors[3:] == parent.factors
    expected = [max(400, round(100 * 5.0 ** (i / 7))) for i in range(4, 7)]
    assert list(lower.factors[:3]) == expected
    higher = Genome(move_critical(parent, space, 7), critical=7)
    assert higher == parent
    top = Genome(move_critical(lower, space, 6), critical=6)
    assert space.contains(top) and top.factors == lower.factors[2:]


def test_searched_critical_pair_needs_longrope2_and_a_candidate():
    with pytest.raises(LongRopeError, match="part of LongRoPE2"):
        make_space(GEOMETRY, 4.0, search_critical=True)
    with pytest.raises(LongRopeError, match="not one of LongRoPE2's candidates"):
        make_space(GEOMETRY, 4.0, longrope2=True, search_critical=True, critical_pair=10)
    space = make_space(GEOMETRY, 4.0, longrope2=True, search_critical=True, critical_pair=5)
    assert space.first_pair == 5 and space.describe()["critical_choices"] == [3, 4, 5, 6, 7]
    assert "critical_choices" not in make_space(GEOMETRY, 4.0, longrope2=True).describe()  # old hashes unchanged
    assert Genome((1, 2)).key == "1,2|0|-"  # idem: keys of searches without it
