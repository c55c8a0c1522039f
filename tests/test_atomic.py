"""`longrope.atomic`: whole files or none, with the permissions a plain ``open`` gives (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from longrope.atomic import atomic_write_bytes
from longrope.eval.report import write_text_atomic
from longrope.search.state import SearchState, load_state, save_state


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_with_the_umask_like_open(tmp_path, umask_022):
    path = atomic_write_bytes(tmp_path / "deep" / "out.bin", b"one")
    assert path.read_bytes() == b"one" and mode(path) == 0o644
    atomic_write_bytes(path, b"two", fsync=True)  # replacing keeps the same mode and leaves no temporary file
    assert path.read_bytes() == b"two" and mode(path) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]
    os.umask(0o077)
    assert mode(atomic_write_bytes(tmp_path / "private.bin", b"")) == 0o600


def test_every_atomic_writer_gives_0644(tmp_path, umask_022):
    report = write_text_atomic(tmp_path / "report.md", "| a |\n")
    state_path = tmp_path / "search_state.json"
    save_state(SearchState(config_hash="h", config={}, rng=[]), state_path)
    assert mode(report) == 0o644 and mode(state_path) == 0o644
    assert load_state(state_path, "h").config_hash == "h"


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "out.bin", "text, not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
