"""The package's layout: every module imports, old flat names still resolve (for one release), and only
pipeline/layout.py builds paths inside a run directory."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import hyperllama_lib

LIB = Path(hyperllama_lib.__file__).parent


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages([str(LIB)], prefix="hyperllama_lib.")]
    assert "hyperllama_lib.pipeline.layout" in names and "hyperllama_lib.merging.methods.ties" in names
    for name in names:
        importlib.import_module(name)


@pytest.mark.parametrize("old, new", sorted(hyperllama_lib.MOVED.items()))
def test_old_flat_names_resolve_with_a_warning(old, new):
    with pytest.warns(DeprecationWarning, match=f"hyperllama_lib.{old} moved to hyperllama_lib.{new}"):
        module = getattr(hyperllama_lib, old)
    assert module is importlib.import_module(f"hyperllama_lib.{new}")


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        hyperllama_lib.nonexistent  # noqa: B018


def test_only_the_layout_builds_paths_in_a_run_directory():
    """Steps ask pipeline/layout.py for paths; a `run_path / ...` anywhere else is a second owner."""
    offenders = [f"{path.relative_to(LIB)}:{n}" for path in sorted(LIB.rglob("*.py")) if path.name != "layout.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"run_path\s*/", line)]
    assert not offenders, offenders
