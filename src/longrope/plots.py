"""PNG plots written without a display: matplotlib on the Agg backend, figures saved atomically.

Shared by the evaluation reports (`longrope.eval.report`) and the search's convergence plot
(`longrope.search.report`).
"""

from __future__ import annotations

import os
from pathlib import Path

from longrope.atomic import temporary_sibling


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out ``fig``, write it as a PNG atomically (temp file + ``os.replace``) and close it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        pyplot().close(fig)
    return path
