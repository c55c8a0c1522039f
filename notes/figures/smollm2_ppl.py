"""The README's real-model figures: SmolLM2 perplexity at 8k (in-window) and the extended length per method,
prose and code test documents, from the `longrope eval ppl` reports. Run:

    python notes/figures/smollm2_ppl.py EVAL_PROSE EVAL_CODE                       # 16k: smollm2-16k.png
    python notes/figures/smollm2_ppl.py EVAL_PROSE EVAL_CODE notes/figures/smollm2-32k.png 32768 smollm2-32k

EVAL_CODE may be '-' (prose only).
"""

import json
import sys
from pathlib import Path

from longrope.plots import pyplot, save_figure

BASELINES = ["none", "ntk", "dynamic_ntk", "yarn"]


def main(prose: str, code: str, out: str = "notes/figures/smollm2-16k.png", long: str = "16384",
         preset: str = "smollm2-16k") -> None:
    plt = pyplot()
    panels = [(name, d) for name, d in (("prose (test)", prose), ("code (test)", code)) if d != "-"]  # "-": none
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (name, directory) in zip(axes[0], panels):
        ppl = json.loads((Path(directory) / "ppl.json").read_text())["ppl"]
        methods = [m for m in BASELINES + [preset] if m in ppl]  # a report may leave out a baseline
        x = range(len(methods))
        for offset, (length, color) in enumerate((("8192", "#9bb7d4"), (long, "#2a5d8f"))):
            values = [ppl[m][length] for m in methods]
            bars = ax.bar([i + (offset - 0.5) * 0.38 for i in x], values, width=0.38, color=color,
                          label=f"{length} tokens")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        low = min(min(ppl[m][k] for m in methods if m != "none") for k in ("8192", long))
        top = max(ppl[m][long] for m in methods if m != "none") * 1.08
        ax.set_ylim(low * 0.9, top)
        for i, m in enumerate(methods):  # bars cut by the axis (no scaling past its window) say their value
            if ppl[m][long] > top:
                ax.text(i + 0.19, top * 0.985, f"{ppl[m][long]:.1f} (cut)", ha="center", va="top", fontsize=7,
                        color="white", rotation=90)
        ax.set_xticks(list(x), [m.replace("dynamic_ntk", "dyn. NTK") for m in methods], fontsize=8)
        ax.set_title(f"SmolLM2-135M, {name}")
        ax.set_ylabel("perplexity")
        ax.legend(fontsize=7)
    save_figure(fig, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
