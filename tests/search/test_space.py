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
