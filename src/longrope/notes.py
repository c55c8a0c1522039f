"""Notes to the user: something was repaired or ignored and the run goes on (a damaged cache rebuilt, a killed
run's half-written log line dropped). One plain line on stderr, shown even when progress display is off."""

from __future__ import annotations

from rich.console import Console


def note(text: str) -> None:
    """Print ``note: TEXT`` on stderr as plain text (paths may hold brackets that rich would take as markup)."""
    Console(stderr=True, soft_wrap=True).print(f"note: {text}", markup=False, highlight=False)
