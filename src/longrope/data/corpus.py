"""Corpora: where documents come from.

Four sources share one small interface (``Corpus.documents()`` yields ``Document``s in a fixed order):

- ``StdlibCorpus``: the running Python's standard library source, always present, split by file;
- ``ProseCorpus``: English prose that is always present too (the language reference shipped in ``pydoc_data``);
- ``TextFilesCorpus``: a text file or a directory of them;
- ``HFDatasetCorpus``: a Hugging Face dataset (optional ``datasets`` package).

``get_corpus(spec, split)`` turns a command-line string into one of them.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from longrope.errors import LongRopeError

SPLITS = ("train", "validation", "test")

# Percent of stdlib files in each split (cumulative bounds below). 80/10/10 rather than 90/5/5 so that the
# validation and test splits each hold 30+ files longer than 20k characters (about 415 such files in 3.11).
_TRAIN_PERCENT = 80
_VALIDATION_PERCENT = 10


@dataclass(frozen=True)
class Document:
    """One document: a stable identifier (e.g. a relative path) and its text."""

    id: str
    text: str


class Corpus:
    """A named, ordered source of documents. Subclasses implement ``_iter_documents``."""

    name: str = "corpus"
    split: str = "all"

    def _iter_documents(self) -> Iterator[Document]:
        raise NotImplementedError

    def documents(self) -> Iterator[Document]:
        """Yield the documents in a deterministic order; raise ``LongRopeError`` if there are none."""
        count = 0
        for document in self._iter_documents():
            count += 1
            yield document
        if count == 0:
            raise LongRopeError(f"corpus {self.name!r} (split {self.split!r}) has no documents")

    @property
    def cache_key(self) -> str:
        """What identifies this corpus's content in on-disk caches."""
        return f"{self.name}:{self.split}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r})"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise LongRopeError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def stdlib_root() -> Path:
    """The running Python's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_split_of(relative_path: str) -> str:
    """The split of a stdlib file, from the sha256 of its '/'-separated path relative to the stdlib root.

    Depends on nothing but that path, so a file lands in the same split on every machine and Python version.
    """
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    if bucket < _TRAIN_PERCENT:
        return "train"
    if bucket < _TRAIN_PERCENT + _VALIDATION_PERCENT:
        return "validation"
    return "test"


class StdlibCorpus(Corpus):
    """The ``*.py`` files of the running Python's standard library (site-packages excluded), one split.

    Test packages are included (they hold most of the long files). Files that are not valid UTF-8 (a few test
    fixtures on purpose) are skipped. Document id = path relative to the stdlib root; sorted by id.
    """

    def __init__(self, split: str = "train", root: str | Path | None = None) -> None:
        self.split = _check_split(split)
        self.root = Path(root) if root is not None else stdlib_root()
        self.name = "stdlib"

    def relative_paths(self) -> list[str]:
        """Sorted relative paths of this split's files (including undecodable ones, skipped later)."""
        if not self.root.is_dir():
            raise LongRopeError(f"standard library directory {self.root} not found")
        paths = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
            for filename in filenames:
                if filename.endswith(".py"):
                    rel = Path(dirpath, filename).relative_to(self.root).as_posix()
                    if stdlib_split_of(rel) == self.split:
                        paths.append(rel)
        return sorted(paths)

    def _iter_documents(self) -> Iterator[Document]:
        for rel in self.relative_paths():
            try:
                text = (self.root / rel).read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text.strip():
                yield Document(id=rel, text=text)


# Share of the prose (by characters) in the validation split; the rest is test. No train split: the prose is for
# measuring and searching, and its test documents must be long enough for 32k tokens (about 37k each for SmolLM2).
_PROSE_VALIDATION_SHARE = 0.35
_PROSE_DOCUMENTS_PER_SPLIT = 2


def _paragraph_cut(text: str, position: int) -> int:
    """The first paragraph boundary at or after ``position`` (``len(text)`` if none)."""
    found = text.find("\n\n", position)
    return len(text) if found < 0 else found + 2


class ProseCorpus(Corpus):
    """Natural-language text that every Python install has: the topics of ``pydoc_data.topics`` (the language
    reference, about 465k characters in 3.11), sorted by topic name and joined with blank lines.

    The first 35% of the characters (cut at a paragraph boundary) are the validation split, the rest the test
    split; each split is cut at a paragraph boundary into two documents of about equal length (about 20k and 37k
    tokens for SmolLM2's tokenizer). There is no train split.
    """

    def __init__(self, split: str = "test") -> None:
        self.split = _check_split(split)
        self.name = "prose"

    @staticmethod
    def _text() -> str:
        try:
            from pydoc_data.topics import topics
        except ImportError as exc:  # some distributions strip it
            raise LongRopeError("the 'prose' corpus needs the standard library's pydoc_data package") from exc
        return "\n\n".join(topics[name].strip() for name in sorted(topics) if topics[name].strip())

    def _iter_documents(self) -> Iterator[Document]:
        text = self._text()
        middle = _paragraph_cut(text, int(_PROSE_VALIDATION_SHARE * len(text)))
        start, end = {"validation": (0, middle), "test": (middle, len(text))}.get(self.split, (0, 0))
        for number in range(_PROSE_DOCUMENTS_PER_SPLIT):
            remaining = _PROSE_DOCUMENTS_PER_SPLIT - number
            stop = end if remaining == 1 else _paragraph_cut(text, start + (end - start) // remaining)
            if text[start:min(stop, end)].strip():
                yield Document(id=f"{self.split}/{number}", text=text[start:min(stop, end)].strip())
            start = min(stop, end)


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LongRopeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LongRopeError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); convert it or remove it"
        ) from exc


class TextFilesCorpus(Corpus):
    """Text files: each path is a UTF-8 file or a directory searched recursively (hidden entries skipped).

    All files are used whatever the split (the user chose them). Document id = path relative to the given
    directory (or the file name for a file argument); order = the order of ``paths``, then sorted.
    The name carries a fingerprint of paths, sizes and modification times, so caches notice edits.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], split: str = "all") -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.paths = [Path(p).expanduser() for p in paths]
        self.split = split
        self._files = self._list_files()
        fingerprint = hashlib.sha256()
        for doc_id, path in self._files:
            stat = path.stat()
            fingerprint.update(f"{path.resolve()}\0{doc_id}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        self.name = f"files-{fingerprint.hexdigest()[:16]}"

    def _list_files(self) -> list[tuple[str, Path]]:
        files: list[tuple[str, Path]] = []
        for base in self.paths:
            if base.is_file():
                files.append((base.name, base))
            elif base.is_dir():
                found = [
                    p
                    for p in base.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
                ]
                files.extend(sorted((p.relative_to(base).as_posix(), p) for p in found))
            else:
                raise LongRopeError(f"{base} does not exist (expected a text file or a directory)")
        if not files:
            shown = ", ".join(str(p) for p in self.paths)
            raise LongRopeError(f"no files found in {shown}; the corpus is empty")
        return files

    def _iter_documents(self) -> Iterator[Document]:
        for doc_id, path in self._files:
            text = _read_utf8(path)
            if text.strip():
                yield Document(id=doc_id, text=text)


class HFDatasetCorpus(Corpus):
    """One split of a Hugging Face dataset (hub name, or a directory saved with ``save_to_disk``).

    Document id = ``split/row-index``. Needs the optional ``datasets`` package.
    """

    def __init__(self, name_or_path: str, split: str = "train", column: str = "text") -> None:
        self.name_or_path = name_or_path
        self.split = split
        self.column = column
        self.name = f"hf:{name_or_path}:{column}"

    def _load(self):
        try:
            import datasets
        except ImportError as exc:
            raise LongRopeError(
                "reading a Hugging Face dataset needs the 'datasets' package: pip install longrope[datasets]"
            ) from exc
        path = Path(self.name_or_path).expanduser()
        try:
            saved = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
            if path.is_dir() and saved:
                loaded = datasets.load_from_disk(str(path))
                dataset = loaded[self.split] if isinstance(loaded, datasets.DatasetDict) else loaded
            else:
                dataset = datasets.load_dataset(self.name_or_path, split=self.split)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise LongRopeError(
                f"cannot load split {self.split!r} of dataset {self.name_or_path!r}: {exc}"
            ) from exc
        if self.column not in dataset.column_names:
            raise LongRopeError(
                f"dataset {self.name_or_path!r} has no column {self.column!r}; "
                f"columns: {', '.join(dataset.column_names)}"
            )
        return dataset

    def _iter_documents(self) -> Iterator[Document]:
        dataset = self._load()
        for index, text in enumerate(dataset[self.column]):
            if isinstance(text, str) and text.strip():
                yield Document(id=f"{self.split}/{index}", text=text)


def get_corpus(spec: str = "stdlib", split: str = "train") -> Corpus:
    """Make a corpus from a command-line string.

    ``"stdlib"`` -> ``StdlibCorpus(split)``; ``"prose"`` -> ``ProseCorpus(split)``;
    ``"hf:NAME[:column]"`` -> ``HFDatasetCorpus``;
    an existing file or directory -> ``TextFilesCorpus`` (which uses every file, whatever the split).
    """
    spec = spec.strip()
    if spec in ("", "stdlib"):
        return StdlibCorpus(split)
    if spec == "prose":
        return ProseCorpus(split)
    if spec.startswith("hf:"):
        name, _, column = spec[3:].partition(":")
        if not name:
            raise LongRopeError(f"corpus {spec!r}: expected hf:NAME or hf:NAME:COLUMN")
        return HFDatasetCorpus(name, split=split, column=column or "text")
    if Path(spec).expanduser().exists():
        return TextFilesCorpus(spec, split=split)
    raise LongRopeError(
        f"unknown corpus {spec!r}: use 'stdlib', 'prose', a file or directory path, or hf:NAME[:column]"
    )
