"""UniMax sampling budgets (Chung et al. 2023).

Spread a total budget as evenly as possible over languages, capping each language at
max_epochs x its available data; what a capped language leaves unused goes to the others.
"""
from __future__ import annotations

import math

from ..errors import DataError, ParamError


def unimax(available: dict[str, float], budget: float, max_epochs: float) -> dict[str, float]:
    """Allocation per language, in the units of `available` and `budget` (e.g. characters).

    Languages are visited from the smallest available amount to the largest (ties by name); each
    gets min(remaining budget / languages left, max_epochs * available). When the budget exceeds
    what all caps allow, every language is capped and the rest of the budget is unused.
    The result keeps the order of `available`.
    """
    if budget < 0 or not math.isfinite(budget):
        raise ParamError(f"budget must be a finite number >= 0, got {budget}")
    if max_epochs <= 0 or not math.isfinite(max_epochs):
        raise ParamError(f"max_epochs must be a finite number > 0, got {max_epochs}")
    for lang, amount in available.items():
        if not amount > 0 or not math.isfinite(amount):
            raise DataError(f"language {lang!r} has no usable data (available = {amount}); drop it or add data")

    order = sorted(available, key=lambda lang: (available[lang], lang))
    remaining = float(budget)
    alloc: dict[str, float] = {}
    for i, lang in enumerate(order):
        share = min(remaining / (len(order) - i), max_epochs * available[lang])
        alloc[lang] = share
        remaining -= share
    return {lang: alloc[lang] for lang in available}


def epochs(alloc: dict[str, float], available: dict[str, float]) -> dict[str, float]:
    """How many passes over each language's data an allocation means."""
    return {lang: alloc[lang] / available[lang] for lang in alloc}
