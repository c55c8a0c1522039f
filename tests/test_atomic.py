"""`longrope.atomic`: whole files or none, with the permissions a plain ``open`` gives (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest
from factories import dead_pid

from longrope.atomic import atomic_file, atomic_write_bytes, atomic_write_text
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
    report = atomic_write_text(tmp_path / "report.md", "| a |\n")
    state_path = tmp_path / "search_state.json"
    save_state(SearchState(config_hash="h", config={}, rng=[]), state_path)
    assert mode(report) == 0o644 and mode(state_path) == 0o644
    assert load_state(state_path, "h").config_hash == "h"


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "out.bin", "text, not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_killed_writers_are_swept_and_live_ones_kept(tmp_path):
    from longrope.atomic import atomic_dir, sweep_stale

    dead, alive = dead_pid(), os.getpid()
    out = tmp_path / "export"
    stale = [tmp_path / f".export.{dead}-0a1b.tmp", tmp_path / f".export.partial-{dead}",
             tmp_path / f".export.tmp-{dead}"]
    stale[0].write_text("half")
    for directory in stale[1:]:
        directory.mkdir()
        (directory / "weights").write_text("half")
    live = tmp_path / f".export.{alive + 10**6}-beef.tmp"  # no such process either: swept
    keep = tmp_path / ".export.tmp-1"  # pid 1 runs (init): not ours to remove
    live.write_text("x")
    keep.mkdir()
    atomic_dir(out, lambda d: (d / "f").write_text("new"))
    assert (out / "f").read_text() == "new"
    assert not any(p.exists() for p in [*stale, live]) and keep.exists()
    assert sweep_stale(out) == []


def test_an_old_copy_left_between_the_two_renames_is_restored(tmp_path):
    from longrope.atomic import sweep_stale

    out = tmp_path / "model"
    old = tmp_path / f".model.old-{dead_pid()}"
    old.mkdir()
    (old / "weights").write_text("the only good copy")
    assert sweep_stale(out) == []
    assert (out / "weights").read_text() == "the only good copy" and not old.exists()


def test_a_directory_gets_normal_file_modes_whatever_its_writer_did(tmp_path, umask_022):
    from longrope.atomic import atomic_dir

    def write(directory):
        (directory / "sub").mkdir()
        for path in (directory / "weights.safetensors", directory / "sub" / "x.json"):
            path.write_text("w")
            os.chmod(path, 0o600)  # what a tempfile-based writer leaves

    out = atomic_dir(tmp_path / "model", write)
    assert mode(out / "weights.safetensors") == 0o644 and mode(out / "sub" / "x.json") == 0o644


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")

    def dies_half_way(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_file(target, dies_half_way)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    atomic_file(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]
