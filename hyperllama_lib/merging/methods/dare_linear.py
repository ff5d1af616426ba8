"""DARE with a plain weighted sum of the task vectors, mergekit's `dare_linear`."""
from __future__ import annotations

from typing import Sequence

from ._base import MergeMethod, Tensor, dare


def dare_linear(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float = 0.5,
                normalize: bool = True, rescale: bool = True, seed: int = 0) -> Tensor:
    """Drop and rescale (`dare`), then combine as `task_arithmetic`."""
    return dare(tensors, base, weights, density, normalize, rescale, seed, consensus=False)


METHOD = MergeMethod("dare_linear", dare_linear,
                     parameters={"density": 0.5, "normalize": True, "rescale": True, "seed": 0},
                     mergekit_name="dare_linear")
