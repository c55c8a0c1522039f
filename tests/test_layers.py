"""The import layers of ARCHITECTURE.md, checked on the source: no module imports a module of a higher layer.

Every module under src/longrope is parsed with `ast` (nothing is imported), and every ``import longrope...`` /
``from longrope... import ...`` in it counts, including the ones inside functions. Layers, bottom to top:

    base (errors, failures, notes, paths, atomic, locks, interrupts, progress, plots, validation, schema,
          config_files, hardware, precision_options)
    < rope < attention < loss < data < models
    < eval | search | train | export   (peer areas: never import each other, except the edges listed below)
    < recipes < cli (longrope/cli.py, __main__.py and every area's cli.py)

A module may import its own area freely and any area of a lower layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "longrope"

BASE = {"errors", "paths", "atomic", "locks", "interrupts", "progress", "plots", "validation", "notes", "failures",
        "schema", "config_files", "hardware", "precision_options"}
LAYERS = {
    "base": 0,
    "rope": 1,
    "presets": 1,  # the shipped preset JSON files (package data, read by rope.preset_files)
    "attention": 2,
    "inplace_layers": 2,  # in-place RMSNorm / MLP forwards for scoring, beside attention.blocked
    "loss": 3,
    "data": 4,
    "models": 5,
    "eval": 6, "search": 6, "train": 6, "export": 6,
    "recipes": 7,
    "cli": 8,
}

# Imports between peer areas (or upwards) that are allowed anyway, as (importer, imported module); keep it short.
ALLOWED = {
    # `verify_export` generates with our patched model the same way `longrope eval` does, to compare it with
    # the stock runtime's generation token by token.
    ("longrope.export.verify", "longrope.eval.generation"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("longrope", *parts))


def area(module: str) -> str:
    """The area (package under longrope, or ``base`` / ``cli``) a module belongs to."""
    parts = module.split(".")[1:]
    if parts and parts[-1] in ("cli", "__main__"):
        return "cli"
    return "base" if not parts or parts[0] in BASE else parts[0]


def layer(module: str) -> int:
    return LAYERS[area(module)]


def imported_modules(path: Path) -> set[str]:
    """The longrope modules (or packages) a file imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "longrope")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "longrope":
                continue
            for alias in node.names:  # `from longrope.x import y`: y may be a module of package x
                candidate = f"{node.module}.{alias.name}"
                as_module = SRC.joinpath(*candidate.split(".")[1:])
                found.add(candidate if as_module.with_suffix(".py").is_file() or as_module.is_dir() else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; longrope uses absolute imports only")
    return found


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    unknown = sorted({module_name(p) for p in MODULES if area(module_name(p)) not in LAYERS})
    assert not unknown, f"modules of no layer (add their area to LAYERS and ARCHITECTURE.md): {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_higher_layer_or_a_peer_area(path):
    importer = module_name(path)
    bad = []
    for target in sorted(imported_modules(path)):
        if target == "longrope" or area(target) == area(importer):
            continue
        allowed = any(importer == a and (target == b or target.startswith(b + ".")) for a, b in ALLOWED)
        if layer(target) >= layer(importer) and not allowed:
            bad.append(f"{target} ({area(target)}, layer {layer(target)})")
    assert not bad, f"{importer} ({area(importer)}, layer {layer(importer)}) imports " + ", ".join(bad)


def test_the_allowed_edges_are_all_still_used():
    """An allowed edge that no longer exists is removed from the list, so the list stays short and true."""
    by_name = {module_name(p): imported_modules(p) for p in MODULES}
    stale = [(a, b) for a, b in ALLOWED if not any(t == b or t.startswith(b + ".") for t in by_name.get(a, ()))]
    assert not stale, f"allowed edges no module uses any more: {stale}"


def test_the_checker_catches_an_upward_import(tmp_path):
    """The check itself: a function-local import of a higher layer is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from longrope.recipes.progressive import extend\n    return extend\n")
    targets = imported_modules(sample)
    assert "longrope.recipes.progressive" in targets
    assert layer("longrope.recipes.progressive") > layer("longrope.train.finetuning")
    assert area("longrope.search.cli") == "cli" and area("longrope.atomic") == "base"
    assert layer("longrope.attention.patch") < layer("longrope.loss") < layer("longrope.models.tiny")
    assert layer("longrope.models.tiny") < layer("longrope.recipes.tiny")
