"""The merge methods: one module per method, each defining `METHOD = MergeMethod(...)`.

Adding a method is adding a module here; `METHODS` collects every public module's METHOD, so the
method is at once valid in params (`merge_methods`), `merging.merge_models` and `hyperllama merge`.
"""
from __future__ import annotations

import importlib
import pkgutil

from ._base import BASE_POLICIES, MergeFn, MergeMethod

__all__ = ["BASE_POLICIES", "METHODS", "MergeFn", "MergeMethod"]


def _collect() -> dict[str, MergeMethod]:
    methods: dict[str, MergeMethod] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        method = importlib.import_module(f"{__name__}.{info.name}").METHOD
        if method.name in methods:
            raise RuntimeError(f"merge method {method.name!r} is defined twice")
        methods[method.name] = method
    return methods


METHODS: dict[str, MergeMethod] = _collect()
