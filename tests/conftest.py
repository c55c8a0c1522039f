"""Shared fixtures: the test-size tiny model, trained once per test session into a temporary cache; the cache
fixture pointing at it; small text corpora of stdlib files (fine-tuning and pipeline tests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from longrope.data.corpus import stdlib_root


def pytest_configure(config):
    # Two xdist workers share 2 cores: one torch thread each, or four threads contend for two cores and every
    # matrix product waits on the other worker's. A single-process run keeps torch's own choice.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and a busy machine makes threads wait on each other: a
    module of them asks for this with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Directory of ``TinyConfig.test()`` trained once (a few seconds) into a session-temporary cache.

    An ordinary Hugging Face directory: ``LlamaForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained`` load it. Its cache root is ``path.parent.parent``.
    """
    from longrope.models.tiny import TinyConfig
    from longrope.recipes.tiny import ensure_tiny

    cache = tmp_path_factory.mktemp("longrope-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LONGROPE_CACHE", str(cache))
        return ensure_tiny(TinyConfig.test())


TRAIN_FILES = ("argparse.py", "typing.py", "inspect.py", "subprocess.py", "tarfile.py", "dataclasses.py")
HELD_OUT_FILES = ("difflib.py", "pickle.py", "ftplib.py")


def _copy(names, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(stdlib_root() / name, target / name)
    return target


@pytest.fixture(scope="session")
def train_corpus_dir(tmp_path_factory) -> Path:
    """A directory of a few long stdlib modules: the fine-tuning corpus of these tests."""
    return _copy(TRAIN_FILES, tmp_path_factory.mktemp("train-corpus"))


@pytest.fixture(scope="session")
def held_out_dir(tmp_path_factory) -> Path:
    return _copy(HELD_OUT_FILES, tmp_path_factory.mktemp("held-out-corpus"))


@pytest.fixture
def cache(tiny_model_dir, monkeypatch) -> Path:
    """Point the longrope cache at the session's temporary cache (token-length caches land there)."""
    root = tiny_model_dir.parent.parent
    monkeypatch.setenv("LONGROPE_CACHE", str(root))
    return root


@pytest.fixture
def tiny(tiny_model_dir, cache):
    """A fresh (model, tokenizer) of the session's tiny test model (window 64), fp32, on CPU."""
    from longrope.models.loading import load_model

    return load_model(str(tiny_model_dir), dtype="float32")  # load_model's auto: bf16 on a bf16-fast CPU
