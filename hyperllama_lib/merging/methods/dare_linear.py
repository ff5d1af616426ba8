"""DARE with a plain weighted sum of the task vectors, mergekit's `dare_linear`."""
from __future__ import annotations

from typing import Sequence

import torch

from ._base import MergeMethod, Tensor, dare


def dare_linear(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float | Sequence[float] = 0.5,
                normalize: bool = True, rescale: bool = True, seed: int = 0,
                generator: torch.Generator | None = None) -> Tensor:
    """Drop and rescale (`dare`), then combine as `task_arithmetic`."""
    return dare(tensors, base, weights, density, normalize, rescale, seed, consensus=False, generator=generator)


METHOD = MergeMethod("dare_linear", dare_linear,
                     parameters={"density": 0.5, "normalize": True, "rescale": True, "seed": 0},
                     per_model=("density",), mergekit_name="dare_linear")
