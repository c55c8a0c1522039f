"""Fixtures for export tests."""

from __future__ import annotations

import pytest
from export_helpers import make_tokenizer


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return make_tokenizer()
