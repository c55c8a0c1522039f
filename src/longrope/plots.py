"""PNG plots written without a display: matplotlib on the Agg backend, figures saved atomically.

Shared by the evaluation reports (`longrope.eval.report`) and the search's convergence plot
(`longrope.search.report`).
"""

from __future__ import annotations

from pathlib import Path

from longrope.atomic import atomic_file


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out ``fig``, write it as a PNG atomically (temp file + ``os.replace``) and close it.

    Every text is drawn as written: labels carry user-chosen names (method names from spec files, paths), and
    matplotlib would read ``$...$`` in them as mathtext (or fail on an odd number of ``$``)."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        pyplot().close(fig)
    return path
