"""Long-context evaluation: perplexity at many lengths, passkey retrieval, needle grids, RULER-style tasks,
with JSON / markdown / PNG reports. Every ``longrope eval`` command is a thin layer over a function here."""

from longrope.eval.generation import greedy_generate
from longrope.eval.needle import NeedleGrid, evaluate_needle, needle_grid, write_needle_report
from longrope.eval.passkey import (
    CODE,
    NATURAL,
    TEMPLATES,
    PasskeyTemplate,
    PasskeyTrial,
    RetrievalTable,
    build_passkey_prompt,
    evaluate_passkey,
    passkey_trials,
    score_passkey,
    write_retrieval_report,
)
from longrope.eval.perplexity import (
    PerplexityResult,
    PplTable,
    evaluate_ppl,
    perplexity,
    sliding_windows,
    write_ppl_report,
)
from longrope.eval.ruler import (
    TASKS,
    RulerSample,
    RulerTable,
    evaluate_ruler,
    ruler_samples,
    string_match_score,
    write_ruler_report,
)
from longrope.loss import hidden_nll, token_nll

__all__ = [
    "CODE", "NATURAL", "TASKS", "TEMPLATES", "NeedleGrid", "PasskeyTemplate", "PasskeyTrial", "PerplexityResult",
    "PplTable", "RetrievalTable", "RulerSample", "RulerTable", "build_passkey_prompt", "evaluate_needle",
    "evaluate_passkey", "evaluate_ppl", "evaluate_ruler", "greedy_generate", "hidden_nll", "needle_grid",
    "passkey_trials", "perplexity", "ruler_samples", "score_passkey", "sliding_windows", "string_match_score",
    "token_nll", "write_needle_report", "write_ppl_report", "write_retrieval_report", "write_ruler_report",
]
