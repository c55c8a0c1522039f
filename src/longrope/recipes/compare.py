"""The comparison of the LongRoPE paper's progressive recipe against PI and YaRN fine-tuned with the same budget.

Rows (all on the TEST split; perplexity at each length, passkey accuracy at each length):

- (a) LongRoPE searched at s1, no fine-tuning (base model + stage-1 spec);
- (b) after fine-tuning at s1 (fine-tuned model + stage-1 spec);
- (c) after the second search to s2 (fine-tuned model + the second search's spec);
- (d) with the short factors (fine-tuned model + the short-factor search's spec);
- PI s1 on the base model; PI s1 fine-tuned (``pi_dir``, same budget as stage 2); PI s2 on that fine-tune;
- the same three rows for YaRN (``yarn_dir``);
- the base model with its own RoPE.

Passkey prompts use the model's own template (`longrope.eval.passkey.default_template`: ``code`` for the
built-in model).

Beside the table, ``comparison.png`` plots perplexity and passkey accuracy against length for the plan's
rows after fine-tuning ((c), and (d), its exported spec), YaRN fine-tuned with the same budget and data (both of
its tuned rows) and the base model (`PLOTTED_ROWS`).

    from longrope.recipes.compare import compare_extension
    table = compare_extension("extend-tiny", "pi-ft", "yarn-ft")   # writes extend-tiny/comparison.{json,md,png}
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from longrope.atomic import atomic_write_text
from longrope.errors import LongRopeError
from longrope.plots import pyplot, save_figure
from longrope.recipes.plan import load_plan
from longrope.rope import LinearSpec, RopeSpec, YarnSpec, load_spec
from longrope.train.finetuning import finetuned_dir


def _stage_dirs(extend_dir: Path, kind: str) -> list[Path]:
    suffix = {"search": "-search", "finetune": "-finetune", "search_short": "-search-short"}[kind]
    return sorted(p for p in extend_dir.iterdir() if p.is_dir() and p.name[2:] == suffix and (p / "DONE").is_file())


def comparison_rows(extend_dir: str | Path, pi_dir: str | Path | None,
                    yarn_dir: str | Path | None = None) -> dict[str, tuple[str, RopeSpec | None]]:
    """name -> (model to load, spec) for every row of the comparison."""
    extend_dir = Path(extend_dir)
    plan = load_plan(extend_dir / "plan.toml")
    searches, finetunes = _stage_dirs(extend_dir, "search"), _stage_dirs(extend_dir, "finetune")
    shorts = _stage_dirs(extend_dir, "search_short")
    if len(searches) < 2 or not finetunes or not shorts:
        raise LongRopeError(f"{extend_dir} needs two finished searches, a fine-tune and a short search")
    first, second = load_spec(searches[0] / "best_spec.json"), load_spec(searches[-1] / "best_spec.json")
    tuned = str(finetunes[0] / "model")
    s1, s2 = float(first.factor), float(second.factor)
    rows: dict[str, tuple[str, RopeSpec | None]] = {
        f"(a) LongRoPE search {s1:g}x, no fine-tuning": (plan.model, first),
        f"(b) LongRoPE {s1:g}x + fine-tune": (tuned, first),
        f"(c) + second search {s2:g}x": (tuned, second),
        "(d) + short factors": (tuned, load_spec(shorts[-1] / "best_spec.json")),
    }
    for name, method, tuned_dir in (("PI", LinearSpec, pi_dir), ("YaRN", YarnSpec, yarn_dir)):
        rows[f"{name} {s1:g}x, no fine-tuning"] = (plan.model, method(factor=s1))
        if tuned_dir is not None:
            tuned_model = str(finetuned_dir(tuned_dir))
            rows[f"{name} {s1:g}x + fine-tune"] = (tuned_model, method(factor=s1))
            rows[f"{name} fine-tune, then {name} {s2:g}x"] = (tuned_model, method(factor=s2))
    rows["base model, own RoPE"] = (plan.model, None)
    return rows


def plotted_rows(names: list[str]) -> list[str]:
    """The rows of ``names`` that the plot shows (module docstring), in their order."""
    def shown(name: str) -> bool:
        return (name.startswith(("(c)", "(d)")) or name == "base model, own RoPE"
                or (name.startswith("YaRN") and "no fine-tuning" not in name))

    return [name for name in names if shown(name)]


def plot_comparison(report: dict[str, Any], path: str | Path, window: int | None = None) -> Path:
    """PNG of perplexity (log scale) and passkey accuracy against length (log2 scale), one line per plotted row
    of ``report`` (`compare_extension`'s); the original ``window`` marked. A passkey length whose prompt did not
    fit is left out of its line."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    lengths = report["lengths"]
    fig, (ppl_ax, key_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in plotted_rows(list(report["rows"])):
        row = report["rows"][name]
        style = {"marker": "o", "label": name, "linestyle": "-" if name.startswith("(") else "--"}
        ppl_ax.plot(lengths, [row["ppl"][str(n)] for n in lengths], **style)
        keys = [(n, row["passkey"][str(n)]) for n in lengths if row["passkey"][str(n)] is not None]
        key_ax.plot([n for n, _ in keys], [100 * v for _, v in keys], **style)
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    for ax, label in ((ppl_ax, "perplexity"), (key_ax, "passkey accuracy (%)")):
        if window:
            ax.axvline(window, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}"))
        ax.set_xticks(lengths)
        ax.set_xlabel("context length (tokens)" + (f"; original window {window}" if window else ""))
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ppl_ax.set_yscale("log")
    ppl_ax.yaxis.set_major_formatter(plain)
    ppl_ax.yaxis.set_minor_formatter(plain)
    key_ax.set_ylim(-5, 105)
    key_ax.legend(fontsize="small")
    settings = report.get("settings", {})
    fig.suptitle(f"the plan vs YaRN fine-tuned the same way ({settings.get('split', 'test')} split, "
                 f"{settings.get('docs', '?')} documents, {settings.get('trials', '?')} passkey trials)")
    return save_figure(fig, path)


def compare_extension(extend_dir: str | Path, pi_dir: str | Path | None = None, yarn_dir: str | Path | None = None,
                      lengths: list[int] | None = None, docs: int = 8, trials: int = 10, seed: int = 0,
                      progress: bool = True, device: str = "auto", dtype: str = "auto") -> dict[str, Any]:
    """Perplexity (``docs`` test documents) and passkey accuracy (``trials`` keys) of every row, both drawn
    with ``seed``, each model loaded on ``device`` in ``dtype`` (`longrope.hardware`); writes
    ``comparison.json``, ``comparison.md`` and the plot ``comparison.png`` (`plot_comparison`)."""
    from longrope.attention.rotary import model_geometry
    from longrope.eval.passkey import default_template, evaluate_passkey
    from longrope.eval.perplexity import evaluate_ppl
    from longrope.eval.report import markdown_table
    from longrope.hardware import model_record
    from longrope.models.loading import load_model

    extend_dir = Path(extend_dir)
    rows = comparison_rows(extend_dir, pi_dir, yarn_dir)
    results: dict[str, Any] = {}
    plan = load_plan(extend_dir / "plan.toml")
    template = default_template(plan.model)

    def row(model, tokenizer, name: str, spec: RopeSpec | None) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "beyond the length this scaling was built for" is the point here
            ppl = evaluate_ppl(model, tokenizer, {name: spec}, plan.corpus, lengths, n_docs=docs, split="test",
                               seed=seed, progress=progress).ppl()[name]
        passkey = {}
        for length in lengths:
            try:
                table = evaluate_passkey(model, tokenizer, {name: spec}, [length], trials=trials, seed=seed,
                                         template=template, progress=progress)
                passkey[str(length)] = table.accuracy()[name][length]
            except LongRopeError:  # the prompt does not fit in this length
                passkey[str(length)] = None
        return {"ppl": {str(n): v for n, v in ppl.items()}, "passkey": passkey}

    machine: dict[str, Any] = {}
    window = None
    for model_name in dict.fromkeys(model_name for model_name, _ in rows.values()):  # each model loaded once
        model, tokenizer = load_model(model_name, dtype=dtype, device=device)  # the evaluations leave it as it was
        machine = model_record(model)
        window = model_geometry(model).original_window
        lengths = lengths or [window, 4 * window, 8 * window, 16 * window]
        for name, (of, spec) in rows.items():
            if of == model_name:
                results[name] = row(model, tokenizer, name, spec)
    results = {name: results[name] for name in rows}  # the table keeps the rows' order
    headers = ["row"] + [f"ppl {n}" for n in lengths] + [f"passkey {n}" for n in lengths]
    table_rows = [[name] + [r["ppl"][str(n)] for n in lengths]
                  + ["-" if r["passkey"][str(n)] is None else f"{100 * r['passkey'][str(n)]:.0f}%" for n in lengths]
                  for name, r in results.items()]
    settings = {"docs": docs, "trials": trials, "seed": seed, "template": template, "split": "test", **machine}
    report = {"lengths": lengths, "settings": settings, "rows": results, "plot": "comparison.png"}
    atomic_write_text(extend_dir / "comparison.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(extend_dir / "comparison.md", markdown_table(headers, table_rows) + "\n")
    plot_comparison(report, extend_dir / "comparison.png", window)
    return results
