"""`longrope.failures.describe`: which failures are the input's (2), which the machine's (1), which are bugs (None),
including the ones libraries wrap in their own exception types."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from longrope.errors import EnvironmentFailure, LongRopeError
from longrope.failures import BAD_INPUT, ENVIRONMENT, describe, one_line


def _raised(make):
    try:
        make()
    except Exception as exc:  # noqa: BLE001 - the exception, with its chain, as code raises it
        return exc
    raise AssertionError("nothing raised")


def _wrapped_disk_full():
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from exc


@pytest.mark.parametrize("exc, status", [
    (LongRopeError("bad"), BAD_INPUT),
    (EnvironmentFailure("disk"), ENVIRONMENT),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "x"), BAD_INPUT),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "x"), BAD_INPUT),
    (OSError(errno.ENOSPC, "No space left on device"), ENVIRONMENT),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), ENVIRONMENT),
    (OSError(errno.EROFS, "Read-only file system", "x"), ENVIRONMENT),
    (PermissionError("cache directory /c is not writable; set LONGROPE_CACHE"), ENVIRONMENT),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), ENVIRONMENT),
    (MemoryError(), ENVIRONMENT),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ENVIRONMENT),
    (_raised(_wrapped_disk_full), ENVIRONMENT),
    (RuntimeError("safetensors: IoError(Os { code: 28, kind: StorageFull })"), ENVIRONMENT),
    (_raised(lambda: json.loads("{x")), BAD_INPUT),
    (_raised(lambda: b"\xff".decode()), BAD_INPUT),
    (RecursionError("maximum recursion depth exceeded while decoding a JSON object"), BAD_INPUT),
])
def test_expected_failures_and_their_status(exc, status):
    failure = describe(exc)
    assert failure is not None and failure.status == status, failure
    assert "\n" not in failure.text and failure.text


@pytest.mark.parametrize("exc", [KeyError("k"), TypeError("t"), ValueError("v"), RuntimeError("r"), AssertionError()])
def test_anything_else_is_a_bug(exc):
    assert describe(exc) is None


def test_one_line_joins_the_lines_of_a_message():
    assert one_line("first\n\n  second  \nthird") == "first; second; third"
