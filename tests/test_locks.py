"""`longrope.locks.output_lock`: one writer per output directory; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import pytest
from factories import dead_pid

from longrope.errors import LongRopeError
from longrope.locks import lock_path, output_lock


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    out = tmp_path / "run"
    with output_lock(out) as path:
        assert path == lock_path(out) and path.parent == tmp_path and path.name == ".run.lock"
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(LongRopeError, match=rf"in use by process {os.getpid()} on {socket.gethostname()}"):
            with output_lock(out):
                pass
    assert not path.exists()  # released
    with output_lock(out):  # and free again
        pass


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    lock_path(out).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with output_lock(out):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("content", ["", "{not json", '{"pid": "12x", "host": "HOST"}', '{"pid": true, "host": "HOST"}',
                                     '{"pid": 0, "host": "HOST"}', '[1, 2]', "\udcff"])
def test_a_lock_that_names_no_checkable_process_is_refused_with_how_to_remove_it(tmp_path, content):
    """Nothing proves the holder of an unreadable lock (or one with a non-numeric pid) has ended: refused, once."""
    out = tmp_path / "run"
    text = content.replace("HOST", socket.gethostname())
    lock_path(out).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(LongRopeError) as refused:
        with output_lock(out):
            pass
    message = str(refused.value)
    assert "\n" not in message and f"rm '{lock_path(out)}'" in message
    assert lock_path(out).read_bytes() == text.encode("utf-8", "surrogateescape")  # never broken


def test_another_hosts_lock_is_kept(tmp_path):
    out = tmp_path / "run"
    lock_path(out).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then", "command": "x"}))
    with pytest.raises(LongRopeError, match="on elsewhere"):
        with output_lock(out):
            pass
    assert json.loads(lock_path(out).read_text())["host"] == "elsewhere"  # never broken


def test_an_out_reached_through_a_symbolic_link_takes_its_targets_lock(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link"
    link.symlink_to(tmp_path / "real")
    assert lock_path(link) == lock_path(tmp_path / "real") == tmp_path / ".real.lock"
    with output_lock(tmp_path / "real"):
        with pytest.raises(LongRopeError, match="in use by process"):
            with output_lock(link):
                pass
