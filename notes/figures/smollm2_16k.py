"""The README's real-model figure: SmolLM2 perplexity at 8k (in-window) and 16k per method, prose and code test
documents, from the `longrope eval ppl` reports (run: python notes/figures/smollm2_16k.py EVAL_PROSE EVAL_CODE)."""

import json
import sys
from pathlib import Path

from longrope.eval.report import pyplot, save_figure

METHODS = ["none", "ntk", "dynamic_ntk", "yarn", "smollm2-16k"]


def main(prose: str, code: str, out: str = "notes/figures/smollm2-16k.png") -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (name, directory) in zip(axes, (("prose (test)", prose), ("code (test)", code))):
        ppl = json.loads((Path(directory) / "ppl.json").read_text())["ppl"]
        x = range(len(METHODS))
        for offset, (length, color) in enumerate((("8192", "#9bb7d4"), ("16384", "#2a5d8f"))):
            values = [ppl[m][length] for m in METHODS]
            bars = ax.bar([i + (offset - 0.5) * 0.38 for i in x], values, width=0.38, color=color,
                          label=f"{length} tokens")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        low = min(min(ppl[m][k] for m in METHODS[1:]) for k in ("8192", "16384"))
        top = max(ppl[m]["16384"] for m in METHODS[1:]) * 1.08
        ax.set_ylim(low * 0.9, top)
        for i, m in enumerate(METHODS):  # bars cut by the axis (no scaling past its window) say their value
            if ppl[m]["16384"] > top:
                ax.text(i + 0.19, top * 0.985, f"{ppl[m]['16384']:.1f} (cut)", ha="center", va="top", fontsize=7,
                        color="white", rotation=90)
        ax.set_xticks(list(x), [m.replace("dynamic_ntk", "dyn. NTK") for m in METHODS], fontsize=8)
        ax.set_title(f"SmolLM2-135M, {name}")
        ax.set_ylabel("perplexity")
        ax.legend(fontsize=7)
    save_figure(fig, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
