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


def test_an_empty_lock_file_is_stale_but_another_hosts_lock_is_kept(tmp_path):
    out = tmp_path / "run"
    lock_path(out).write_text("")  # a holder killed between creating and filling it
    with output_lock(out):
        pass
    lock_path(out).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then", "command": "x"}))
    with pytest.raises(LongRopeError, match="on elsewhere"):
        with output_lock(out):
            pass
    assert json.loads(lock_path(out).read_text())["host"] == "elsewhere"  # never broken
