"""Corpora: deterministic, disjoint stdlib splits; text files; HF datasets; clear errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from longrope.data.corpus import (
    SPLITS,
    Document,
    HFDatasetCorpus,
    StdlibCorpus,
    TextFilesCorpus,
    get_corpus,
    stdlib_root,
    stdlib_split_of,
)
from longrope.errors import LongRopeError


def _all_stdlib_py_files() -> set[str]:
    root = stdlib_root()
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
        found.update(Path(dirpath, f).relative_to(root).as_posix() for f in filenames if f.endswith(".py"))
    return found


def test_stdlib_splits_are_disjoint_and_cover_every_file():
    per_split = {split: StdlibCorpus(split).relative_paths() for split in SPLITS}
    seen: set[str] = set()
    for split, paths in per_split.items():
        assert paths == sorted(paths)
        assert not seen & set(paths), f"{split} overlaps another split"
        seen |= set(paths)
        assert all(stdlib_split_of(p) == split for p in paths)
    assert seen == _all_stdlib_py_files()
    sizes = {split: len(paths) for split, paths in per_split.items()}
    assert sizes["train"] > 5 * sizes["validation"] and sizes["validation"] > 50 and sizes["test"] > 50


def test_stdlib_documents_are_deterministic():
    first = [d.id for d in StdlibCorpus("validation").documents()]
    second = [d.id for d in StdlibCorpus("validation").documents()]
    assert first == second == sorted(first)
    assert all(isinstance(d, Document) and d.text for d in StdlibCorpus("validation").documents())


def test_split_depends_only_on_the_relative_path(tmp_path):
    # Pinned values: the split of a file must never change between machines or Python versions.
    assert stdlib_split_of("os.py") == "test"
    assert stdlib_split_of("ast.py") == "test"
    assert stdlib_split_of("glob.py") == "validation"
    assert stdlib_split_of("typing.py") == "train"
    assert stdlib_split_of("asyncio/base_events.py") == "train"
    # The same relative paths under a different root land in the same splits.
    rel_paths = ["os.py", "glob.py", "typing.py", "json/decoder.py", "asyncio/base_events.py"]
    for rel in rel_paths:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    for split in SPLITS:
        ids = (
            [d.id for d in StdlibCorpus(split, root=tmp_path).documents()]
            if any(stdlib_split_of(r) == split for r in rel_paths)
            else []
        )
        assert ids == sorted(r for r in rel_paths if stdlib_split_of(r) == split)


def test_held_out_splits_have_enough_long_files():
    for split in ("validation", "test"):
        long_files = sum(len(d.text) > 20_000 for d in StdlibCorpus(split).documents())
        assert long_files >= 25, split


def test_unknown_split_is_an_error():
    with pytest.raises(LongRopeError, match="unknown split"):
        StdlibCorpus("dev")


def test_text_files_directory_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("zed")
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b" / "c.md").write_text("see")
    (tmp_path / ".hidden").write_text("never")
    corpus = TextFilesCorpus(tmp_path)
    assert [(d.id, d.text) for d in corpus.documents()] == [
        ("a.txt", "alpha"),
        ("b/c.md", "see"),
        ("b/z.txt", "zed"),
    ]
    single = TextFilesCorpus(tmp_path / "a.txt")
    assert [d.id for d in single.documents()] == ["a.txt"]


def test_text_files_name_changes_when_a_file_changes(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one")
    before = TextFilesCorpus(tmp_path).name
    path.write_text("one two")
    assert TextFilesCorpus(tmp_path).name != before


def test_empty_directory_is_an_error(tmp_path):
    with pytest.raises(LongRopeError, match="empty"):
        TextFilesCorpus(tmp_path)


def test_corpus_of_blank_files_is_an_error(tmp_path):
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(LongRopeError, match="no documents"):
        list(TextFilesCorpus(tmp_path).documents())


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(LongRopeError, match="does not exist"):
        TextFilesCorpus(tmp_path / "nope")


def test_non_utf8_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(LongRopeError, match=r"latin1\.txt is not UTF-8"):
        list(TextFilesCorpus(tmp_path).documents())


def test_unreadable_file_is_an_error_naming_it(tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_text("hidden")
    corpus = TextFilesCorpus(tmp_path)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(LongRopeError, match=r"cannot read .*secret\.txt: Permission denied"):
        list(corpus.documents())


def test_get_corpus_dispatch(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert isinstance(get_corpus("stdlib", "test"), StdlibCorpus)
    assert get_corpus("stdlib", "test").split == "test"
    assert isinstance(get_corpus(str(tmp_path), "validation"), TextFilesCorpus)
    hf = get_corpus("hf:someone/data:content", "validation")
    assert isinstance(hf, HFDatasetCorpus)
    assert (hf.name_or_path, hf.split, hf.column) == ("someone/data", "validation", "content")
    assert get_corpus("hf:someone/data", "train").column == "text"
    with pytest.raises(LongRopeError, match="unknown corpus"):
        get_corpus(str(tmp_path / "missing"), "train")


def test_hf_corpus_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(LongRopeError, match=r"pip install longrope\[datasets\]"):
        list(HFDatasetCorpus("anything").documents())


def test_hf_corpus_reads_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"content": ["first doc", "", "third doc"]})
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "ds"))
    corpus = HFDatasetCorpus(str(tmp_path / "ds"), split="train", column="content")
    assert [(d.id, d.text) for d in corpus.documents()] == [
        ("train/0", "first doc"),
        ("train/2", "third doc"),
    ]
    with pytest.raises(LongRopeError, match="no column 'text'"):
        list(HFDatasetCorpus(str(tmp_path / "ds"), split="train").documents())


def test_prose_splits_are_two_long_disjoint_documents_each():
    from longrope.data.corpus import ProseCorpus

    validation = list(ProseCorpus("validation").documents())
    test = list(ProseCorpus("test").documents())
    assert [d.id for d in validation] == ["validation/0", "validation/1"]
    assert [d.id for d in test] == ["test/0", "test/1"]
    assert all(len(d.text) > 60_000 for d in validation)
    assert all(len(d.text) > 120_000 for d in test)  # ~37k SmolLM2 tokens each: room for 32k-token samples
    whole, end = ProseCorpus._text(), 0
    for document in validation + test:  # consecutive, non-overlapping slices of the whole text, nearly all of it
        start = whole.find(document.text, end)
        assert start >= end and start - end < 10
        end = start + len(document.text)
    assert end == len(whole)
    assert [d.text for d in ProseCorpus("test").documents()] == [d.text for d in test]
    assert get_corpus("prose", "test").name == "prose"
    with pytest.raises(LongRopeError, match="no documents"):
        list(ProseCorpus("train").documents())
