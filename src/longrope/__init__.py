"""Extend the context window of RoPE language models and measure it."""

from __future__ import annotations


def versions() -> dict[str, str]:
    """Versions of longrope and of the libraries it runs on, as installed (read from package metadata, so
    nothing is imported: quick, and it works when torch itself is broken)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("longrope", "torch", "transformers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found
