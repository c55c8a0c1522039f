"""Evolutionary search of LongRoPE rescale factors (LongRoPE and LongRoPE2), fast, resumable, distributed."""

from longrope.search.evolution import SearchConfig, SearchResult, evaluation_model, search, search_short
from longrope.search.fitness import Evaluation, Evaluator, FitnessData, build_fitness_data
from longrope.search.space import (
    Genome,
    SearchSpace,
    make_short_space,
    make_space,
    read_factor_file,
    seed_genomes,
)

__all__ = [
    "Evaluation",
    "Evaluator",
    "FitnessData",
    "Genome",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "build_fitness_data",
    "evaluation_model",
    "make_short_space",
    "make_space",
    "read_factor_file",
    "search",
    "search_short",
    "seed_genomes",
]
