"""Issue 29: how the attention factor trades perplexity for retrieval on the built-in model at 8x, no fine-tuning.

    PYTHONPATH=src python notes/experiments/attention_scan.py SCAN_DIR [FIGURE]

SCAN_DIR holds the reports of one `longrope eval ppl` run (``ppl/ppl.json``) and two `longrope eval passkey` runs
(``pk-code/passkey.json``, ``pk-dict/passkey.json``) over the same methods: the baselines and spec files named
``s<search seed>-att<attention factor or su>.json``. Prints a markdown table (perplexity at 8x as a ratio to the
best baseline's, passkey per length and template) and draws FIGURE (default
notes/figures/tiny-attention-tradeoff.png): perplexity ratio against passkey at 8x, one line per search seed.
"""

import json
import re
import sys
from pathlib import Path

from longrope.plots import pyplot

BASELINES = ("dynamic_ntk", "yarn")
NAME = re.compile(r"s(\d+)-att([\d.]+|su)$")


def main(scan: Path, figure: Path) -> None:
    ppl = json.loads((scan / "ppl" / "ppl.json").read_text())["ppl"]
    passkey = {t: json.loads((scan / f"pk-{t}" / "passkey.json").read_text())["accuracy"] for t in ("code", "dict")}
    longest = max(int(n) for n in next(iter(ppl.values())))
    best = min(ppl[b][str(longest)] for b in BASELINES)
    lengths = sorted(passkey["code"][BASELINES[0]], key=int)
    print(f"| method | ppl @{longest} | / best baseline | "
          + " | ".join(f"code @{n}" for n in lengths) + " | " + " | ".join(f"dict @{n}" for n in lengths) + " |")
    print("|---" * (3 + 2 * len(lengths)) + "|")
    curves: dict[str, list[tuple[float, float, float, str]]] = {}
    for name, by_length in ppl.items():
        value = by_length[str(longest)]
        cells = [f"{100 * passkey[t][name][n]:.0f}%" for t in ("code", "dict") for n in lengths]
        print(f"| {name} | {value:.2f} | {value / best:.3f}x | " + " | ".join(cells) + " |")
        match = NAME.match(name)
        if match:
            label = match.group(2)
            curves.setdefault(match.group(1), []).append(
                (value / best, passkey["code"][name][lengths[-1]], passkey["dict"][name][lengths[-1]], label))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for seed, points in sorted(curves.items()):
        points.sort()
        line, = ax.plot([p[0] for p in points], [100 * p[1] for p in points], "o-", label=f"search seed {seed}, code")
        ax.plot([p[0] for p in points], [100 * p[2] for p in points], "x--", color=line.get_color(),
                label=f"search seed {seed}, dict")
        for x, y, _, label in points:
            ax.annotate(label, (x, 100 * y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for b in BASELINES:
        ratio = ppl[b][str(longest)] / best
        ax.plot([ratio], [100 * passkey["code"][b][lengths[-1]]], "s", color="black")
        ax.annotate(b, (ratio, 100 * passkey["code"][b][lengths[-1]]), textcoords="offset points", xytext=(3, -9),
                    fontsize=7)
    ax.axvline(0.95, color="grey", lw=0.8, ls=":")
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"perplexity at {longest} / best baseline's (test split)")
    ax.set_ylabel(f"passkey at {longest} (%, 40 trials)")
    ax.set_title("Built-in model at 8x, no fine-tuning: attention factor (labels)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)
    print(f"\nfigure: {figure}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "notes/figures/tiny-attention-tradeoff.png"))
