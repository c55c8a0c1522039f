"""Fixtures for the fine-tuning tests: the session's tiny test model, and small text corpora of stdlib files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from longrope.data.corpus import stdlib_root

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

    return load_model(str(tiny_model_dir))
