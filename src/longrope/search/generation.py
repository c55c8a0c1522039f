"""One generation of the evolutionary search on the `SearchState`: drawing its candidates, the racing rule of each
candidate group, and the selection of the next parents (state and rng in, state out: no model, files or ranks).

Algorithm and racing: see `longrope.search.evolution`; with two objectives, `longrope.search.pareto` (NSGA-II
selection, racing on domination). Every random draw comes from the run's one ``rng`` in a
fixed order, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import random
import statistics
from rich.console import Console

from longrope.search.config import SearchConfig
from longrope.search.fitness import racing_rule
from longrope.search.operators import crossover, mutate
from longrope.search.pareto import pareto_order, pareto_racing_rule
from longrope.search.space import Genome, SearchSpace
from longrope.search.state import SearchState

MAX_DRAWS = 100  # attempts to draw a child that was never evaluated before giving up on that child


def complete_fitness(state: SearchState, keys, estimated: bool = False) -> list[tuple[float, str]]:
    """(fitness, key) of the complete individuals among ``keys``, best first; with ``estimated``, dropped
    ones too, by their predicted fitness (the parent selection when ``estimated_parents`` is on)."""
    out = []
    for key in keys:
        record = state.records.get(key)
        if record is None:
            continue
        if record.complete:
            out.append((record.fitness, key))
        elif estimated and record.estimate is not None:
            out.append((record.estimate, key))
    return sorted(out)


def pareto_ranked(state: SearchState, keys, estimated: bool = False) -> list[str]:
    """Keys of the two-objective records among ``keys`` with a point (complete; with ``estimated``, dropped ones
    by their predicted point too), best first in NSGA-II order (`pareto.pareto_order`)."""
    keys = [k for k in dict.fromkeys(keys) if k in state.records and state.records[k].point(estimated) is not None]
    points = [state.records[k].point(estimated) for k in keys]
    return [keys[i] for i in pareto_order(points, keys)]


def best_text(state: SearchState) -> str:
    """The best complete perplexity so far, for the progress display ("-" before the first); with two
    objectives, the best of each (not necessarily one individual)."""
    ranked = complete_fitness(state, state.records)
    if not ranked:
        return "-"
    needles = [r.needle for r in state.records.values() if r.complete and r.needle is not None]
    text = f"{math.exp(ranked[0][0]):.3f}"
    return f"{text}, needle {math.exp(min(needles)):.3f}" if needles else text


def budget_left(state: SearchState, config: SearchConfig) -> int:
    """Evaluations ``max_evaluations`` still allows (the token budget is `run.SearchRun.affordable`'s)."""
    if config.max_evaluations is None:
        return 1 << 60
    return config.max_evaluations - len(state.records)


# ------------------------------------------------------------------------------------------ drawing candidates


def initial_population(
    state: SearchState, config: SearchConfig, space: SearchSpace, rng: random.Random, seeds: list
) -> list[Genome]:
    """The seeds (``(name, genome)`` pairs), then mutations of random members until ``population`` are drawn."""
    population = [genome for _, genome in seeds][: config.population]
    state.seeds = {name: genome.key for name, genome in seeds}
    seen = set(population)
    attempts = 0
    while len(population) < config.population and attempts < MAX_DRAWS * config.population:
        attempts += 1
        child = mutate(rng.choice(population), space, rng, config.mutation_prob)
        if child not in seen:
            seen.add(child)
            population.append(child)
    return population


def children(state: SearchState, config: SearchConfig, space: SearchSpace, rng: random.Random) -> list[Genome]:
    """``mutations`` mutated then ``crossovers`` crossed children of random parents, none evaluated before."""
    parents = [Genome.from_key(k) for k in state.parents]
    seen = set(state.records)
    out: list[Genome] = []

    def draw(make) -> None:
        for _ in range(MAX_DRAWS):
            child = make()
            if child.key not in seen:
                seen.add(child.key)
                out.append(child)
                return

    for _ in range(config.mutations):
        draw(lambda: mutate(rng.choice(parents), space, rng, config.mutation_prob))
    if len(parents) >= 2:
        for _ in range(config.crossovers):
            draw(lambda: crossover(*rng.sample(parents, 2), space, rng))
    return out


def draw_generation(
    state: SearchState, config: SearchConfig, space: SearchSpace, rng: random.Random, seeds: list
) -> None:
    """Draw the candidates of generation ``state.generation`` (within the budget) into ``state.groups``."""
    g = state.generation
    if g == 0:
        candidates = initial_population(state, config, space, rng, seeds)
    else:
        candidates = children(state, config, space, rng)
    candidates = candidates[: max(0, budget_left(state, config))]
    keys = [c.key for c in candidates]
    rank = config.race_rank
    if g == 0 and config.racing and len(keys) > rank:
        # The first `rank` members (the seeds first) are scored fully; the rest race in groups of `rank`
        # against the rank-th best so far. Group bounds depend only on the config, never on batching.
        head = max(rank, len(seeds))
        state.groups = [keys[:head]] + [keys[i : i + rank] for i in range(head, len(keys), rank)]
    else:
        state.groups = [keys]
    state.stage = 0
    state.group_ready = False
    state.threshold = state.racing = None


# ------------------------------------------------------------------------------------------ racing reference


def setup_group(state: SearchState, config: SearchConfig) -> None:
    """Fix the racing rule of the group about to start.

    It races against the ``race_rank``-th best complete individual of the reference set (the parents; in
    the initial population, the groups before this one). With rank ``parents`` that is the worst parent: a
    candidate whose fitness is above it has ``parents`` better individuals and cannot be selected. The
    default, a quarter of the parents, asks a child to promise a place in that top before it is scored
    fully (with ``estimated_parents`` it may still become a parent by its predicted fitness). The rule's
    spread is pooled over the best ``parents`` complete individuals of the reference set, whatever the rank.
    """
    rule = None
    if config.racing:
        if state.generation == 0:
            reference = [key for group in state.groups[: state.stage] for key in group]
        else:
            reference = state.parents
        rank = config.race_rank
        if config.two_objectives:  # dropped once `rank` of the best `parents` references dominate it
            keys = pareto_ranked(state, reference)[: config.parents]
            if len(keys) >= rank:
                records = [state.records[key] for key in keys]
                rule = pareto_racing_rule([(r.point(), (r.per_doc, r.needle_per_doc)) for r in records],
                                          config.racing_z, rank)
        else:
            ranked = complete_fitness(state, reference)[: config.parents]
            if len(ranked) >= rank:
                rows = [(fitness, state.records[key].per_doc) for fitness, key in ranked]
                rule = racing_rule(rows, config.racing_z, rank)
    state.racing = None if rule is None else rule.to_json()
    state.threshold = getattr(rule, "threshold", None)  # a Pareto rule has no one threshold: null in the log
    state.group_ready = True


# ------------------------------------------------------------------------------------------------- selection


def select(state: SearchState, config: SearchConfig, console: Console) -> None:
    """Keep the best ``parents`` of the old parents and this generation's candidates; record its history row."""
    g = state.generation
    keys = list(state.parents) + [k for group in state.groups for k in group]
    if config.two_objectives:
        select_pareto(state, config, console, keys)
        return
    ranked = complete_fitness(state, dict.fromkeys(keys), estimated=config.estimated_parents)
    state.parents = [key for _, key in ranked[: config.parents]]
    values = [f for f, _ in ranked[: config.parents]]
    complete = complete_fitness(state, state.parents)
    if values and complete:
        state.history.append(
            {
                "generation": g,
                "best": complete[0][0],
                "median": statistics.median(values),
                "worst_parent": values[-1],
                "evaluations": len(state.records),
                "forward_tokens": state.forward_tokens,
                "seconds": round(state.seconds, 2),
            }
        )
        if not console.is_terminal:  # the live bar shows it otherwise
            console.print(
                f"generation {g}: best ppl {math.exp(values[0]):.3f}, median parent ppl "
                f"{math.exp(statistics.median(values)):.3f}, {len(state.records)} evaluations"
            )


def select_pareto(state: SearchState, config: SearchConfig, console: Console, keys: list[str]) -> None:
    """NSGA-II selection of the next ``parents`` from ``keys`` (old parents and this generation's candidates) on
    (document NLL, needle NLL); the history row holds the best of each objective among complete parents."""
    state.parents = pareto_ranked(state, keys, estimated=config.estimated_parents)[: config.parents]
    complete = [state.records[k] for k in state.parents if state.records[k].complete]
    if not complete:
        return
    doc = sorted(r.fitness for r in complete)
    points = [r.point() for r in complete]
    front = sum(1 for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points))
    best_needle = min(r.needle for r in complete)
    state.history.append(
        {
            "generation": state.generation,
            "best": doc[0],
            "median": statistics.median(doc),
            "worst_parent": doc[-1],
            "best_needle": best_needle,
            "median_needle": statistics.median(r.needle for r in complete),
            "front": front,
            "evaluations": len(state.records),
            "forward_tokens": state.forward_tokens,
            "seconds": round(state.seconds, 2),
        }
    )
    if not console.is_terminal:
        console.print(
            f"generation {state.generation}: best ppl {math.exp(doc[0]):.3f}, best needle ppl "
            f"{math.exp(best_needle):.3f}, {front} parents on the front, {len(state.records)} evaluations"
        )
