"""`longrope.models.loading`: a hub id that is not a local directory fails at once, in one line, when the hub
cannot be reached (no network here: it never waits for the hub client's retries), and loads from the Hugging
Face cache when it is there."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from factories import save_tiny_hf_dir

from longrope.errors import EnvironmentFailure, LongRopeError
from longrope.models import loading
from longrope.models.loading import hub_source, is_hub_id, resolve_model_path

HUB_ID = "someorg/somemodel"


def test_what_counts_as_a_hub_id():
    assert is_hub_id(HUB_ID)
    for name in ("./a/b", "/a/b", "~/a", "a/b/c", "a/", "/b", "plain"):
        assert not is_hub_id(name), name
    with pytest.raises(LongRopeError, match="not found"):
        resolve_model_path("no-such-model-here")


def test_offline_is_one_line_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.perf_counter()
    with pytest.raises(EnvironmentFailure, match="HF_HUB_OFFLINE is set") as info:
        resolve_model_path(HUB_ID)
    assert time.perf_counter() - started < 5
    assert "loads local models only" in str(info.value) and HUB_ID in str(info.value)


def test_an_unreachable_hub_fails_fast_through_the_command(tmp_path):
    """A real run, the hub at a closed local port: exit 1, one line, in the time of a connection refused."""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "LONGROPE_CACHE": str(tmp_path / "cache"), "COLUMNS": "400"}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *loading.PROXY_VARIABLES):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "longrope", "info", HUB_ID], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: model '{HUB_ID}' is not a local directory") and "127.0.0.1:9" in lines[0]


def test_an_unanswered_connection_is_given_up_after_the_timeout(monkeypatch):
    import socket

    def hang(address, timeout=None):  # a name lookup or a connection that never answers
        time.sleep(1)
        raise OSError("gave up")

    monkeypatch.setattr(socket, "create_connection", hang)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *loading.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    started = time.perf_counter()
    assert "no answer from" in loading.hub_unreachable(timeout=0.2)
    assert time.perf_counter() - started < 3


def test_a_cached_hub_model_loads_without_the_hub(monkeypatch, tmp_path):
    hub = tmp_path / "hub"
    repo = hub / "models--someorg--somemodel"
    save_tiny_hf_dir(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(loading, "hub_unreachable", lambda: "no network")
    assert hub_source(HUB_ID) == str(repo / "snapshots" / "abc123")
    monkeypatch.setattr(loading, "hub_unreachable", lambda: None)
    assert hub_source(HUB_ID) == HUB_ID  # a reachable hub: transformers resolves the id, as before
