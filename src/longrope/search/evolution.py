"""The evolutionary search of LongRoPE (arXiv 2402.13753) and its LongRoPE2 refinements, fast and resumable.

Algorithm (as microsoft/LongRoPE ``evolution/``): an initial population of ``population`` individuals (the
seeds PI, NTK, YaRN [, a user table], then mutations of random members until full) is evaluated; each
generation keeps the best ``parents`` as parents and adds ``mutations`` mutated and ``crossovers`` crossed
children of random parents; duplicates of anything already evaluated are redrawn and never evaluated twice.

What makes it faster at equal quality (see `fitness` and notes/search.md):

- racing: a child is scored document by document and dropped once it provably (exact rule) or almost surely
  (the default predictive rule, `fitness.RacingRule`) cannot beat a reference parent. With the worst parent
  as reference (``racing_rank = parents``) that means it cannot enter the parent set: a child at or above
  it has ``parents`` individuals at least as good and cannot be selected, so the reference algorithm's
  selection is kept. By default children race against the parent at a quarter of the parent set
  and dropped ones still compete for the parent set with their predicted fitness (``estimated_parents``);
  `benchmarks/bench_search.py` measured 0.48x (previous built-in model) and 0.56x (shipped model) the forward
  tokens at best fitness equal within the seed spread (BENCHMARKS.md section 3). The
  initial population is raced too: its first ``racing_rank`` members (the seeds first) are scored fully,
  the rest in groups against the best so far. Rules are fixed when a candidate group starts, so results do
  not depend on batching, on the number of ranks, or on interruptions;
- batching: ``batch`` candidates per forward, one RoPE table per row;
- forwards in the dtype measured fastest on the device (bf16 on a bf16-fast CPU or a GPU), the loss in fp32.

This module is the public face: the entry points `search` / `search_short`, which build the space and the
documents (and `SearchConfig`, every option, its checks and the hashed part, re-exported from `config`). The run
itself is split by idea: `run` (state on every rank, distributed evaluation, the generation loop), `generation`
(drawing candidates, racing rules, selection) and `outputs` (log rows, best_spec.json, result.json, the plot,
`SearchResult`). None of them imports this module, and `config` imports none of them: no import ring.
"""

from __future__ import annotations

import copy
from pathlib import Path

from longrope.attention.patch import model_geometry
from longrope.errors import LongRopeError
from longrope.rope import LongRopeSpec
from longrope.search.config import SearchConfig
from longrope.search.distributed import Comm
from longrope.search.fitness import FitnessData, build_fitness_data
from longrope.search.generation import MAX_DRAWS  # noqa: F401  (re-exported: defined here before the split)
from longrope.search.outputs import LOG_FILE, PLOT_FILE, RESULT_FILE, SPEC_FILE  # noqa: F401  (idem)
from longrope.search.outputs import SearchResult
from longrope.search.run import evaluation_model, execute
from longrope.search.space import make_short_space, make_space, read_factor_file


def _check_objective(data: FitnessData, config: SearchConfig) -> None:
    """Documents given by the caller must carry needles exactly when the search has two objectives."""
    if data.two_objectives != config.two_objectives:
        raise LongRopeError(f"objective {config.objective!r} needs fitness documents "
                            f"{'with' if config.two_objectives else 'without'} planted needles (a needle mask)")


def search(
    model,
    tokenizer,
    config: SearchConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    data: FitnessData | None = None,
    comm: Comm | None = None,
    in_window: FitnessData | None = None,
) -> SearchResult:
    """Search LongRoPE long factors for ``model`` at ``config``'s target length; write outputs to ``out_dir``.

    ``config.portable``: the factors serve at every length (`longrope.export.hf.portable_spec`) and the fitness
    adds ``portable_weight * max(0, in-window NLL - the model's own)`` on ``in_window`` documents cut to the
    original window (built from ``tokenizer`` when not given; `fitness.PenalizedEvaluator`).

    ``config.objective == "ppl+needle"``: two objectives from one forward (`longrope.search.pareto`): the search
    keeps the Pareto front of document and needle-driven perplexity, scores the baselines on the same documents,
    writes ``front.json`` and ``front.png``, and ships the member `pareto.choose` picks.

    Outputs: ``best_spec.json`` (`longrope.rope.load_spec` reads it), ``evaluations.jsonl`` (every
    evaluation), ``convergence.png``, ``result.json`` and the state file ``search_state.json``.
    ``resume=True`` continues from the state file if there is one (a finished search just returns its
    result); without it an existing state file is an error (it is never overwritten). ``data`` replaces the
    documents built from ``tokenizer`` (tests). Under torchrun the ranks share the work (see `distributed`).
    """
    config.validate()
    geometry = model_geometry(model)
    factor, length = config.target(geometry.original_window)
    space = make_space(
        geometry,
        factor,
        lambda_max=config.lambda_max,
        search_n_hat=config.search_n_hat,
        search_attention=config.search_attention,
        attention_grid=(config.attention_min, config.attention_max),
        attention_factor=config.attention_factor,
        longrope2=config.longrope2,
        critical_pair=config.critical_pair,
        portable=config.portable,
        search_critical=config.search_critical,
    )
    extra = read_factor_file(config.factor_file, geometry) if config.factor_file else None
    if data is None:
        data = build_fitness_data(
            tokenizer, length, config.docs, config.corpus, config.split, config.data_seed, config.needle,
            config.needles_per_doc if config.two_objectives else 0,
        )
    elif data.length != length:
        raise LongRopeError(
            f"the fitness documents have {data.length} tokens but the target length is {length}"
        )
    _check_objective(data, config)
    if config.portable and in_window is None:
        in_window = build_fitness_data(tokenizer, geometry.original_window, config.docs, config.corpus,
                                       config.split, config.data_seed)
    title = (f"{'LongRoPE2' if config.longrope2 else 'LongRoPE'} {'portable ' if config.portable else ''}search "
             f"{factor:g}x ({length} tokens){', perplexity + needles' if config.two_objectives else ''}")
    return execute(model, space, geometry, data, config, out_dir, resume, progress, comm, extra, title,
                   in_window if config.portable else None)


def search_short(
    model,
    tokenizer,
    long_spec: LongRopeSpec,
    config: SearchConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    data: FitnessData | None = None,
    comm: Comm | None = None,
) -> SearchResult:
    """Search the short factors (used up to the original window L) of an extended model, long factors fixed.

    The paper's short-context recovery: fitness is the perplexity of documents cut to L tokens. The result's
    spec carries both lists. ``config.factor`` / ``target_length`` are ignored (the scale is ``long_spec``'s).
    ``objective == "ppl+needle"``: needles planted in those documents too, and the front's rivals are the model
    without scaling and ``long_spec`` as it is (`outputs.baseline_specs`), so the rule in `pareto.choose` keeps
    the window's retrieval at least as good as the better of the two.
    """
    if not isinstance(long_spec, LongRopeSpec):
        raise LongRopeError(f"short factors complete a longrope spec, got {long_spec.method}")
    config = copy.copy(config)
    config.factor = long_spec.factor
    config.target_length = None
    config.validate()
    geometry = model_geometry(model)
    space = make_short_space(geometry, long_spec, config.lambda_max)
    length = geometry.original_window
    if data is None:
        data = build_fitness_data(
            tokenizer, length, config.docs, config.corpus, config.split, config.data_seed,
            needles_per_doc=config.needles_per_doc if config.two_objectives else 0,
        )
    elif data.length != length:
        raise LongRopeError(
            f"short-factor documents must have the original window's {length} tokens, got {data.length}"
        )
    _check_objective(data, config)
    title = f"short factors at {length} tokens{', perplexity + needles' if config.two_objectives else ''}"
    return execute(model, space, geometry, data, config, out_dir, resume, progress, comm, None, title)


__all__ = ["SearchConfig", "SearchResult", "evaluation_model", "search", "search_short"]
