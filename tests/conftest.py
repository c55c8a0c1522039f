"""Shared fixtures: the test-size tiny model, trained once per test session into a temporary cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Directory of ``TinyConfig.test()`` trained once (a few seconds) into a session-temporary cache.

    An ordinary Hugging Face directory: ``LlamaForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained`` load it. Its cache root is ``path.parent.parent``.
    """
    from longrope.models.tiny import TinyConfig, ensure_tiny

    cache = tmp_path_factory.mktemp("longrope-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LONGROPE_CACHE", str(cache))
        return ensure_tiny(TinyConfig.test())
