"""DARE with a plain weighted sum of the task vectors, mergekit's `dare_linear`."""
from __future__ import annotations

from typing import Sequence

import torch

from ._base import MergeMethod, Tensor, combine_task_vectors, random_prune, task_vectors


def dare_linear(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float = 0.5,
                normalize: bool = True, rescale: bool = True, seed: int = 0) -> Tensor:
    """Drop and rescale as `dare_ties`, then combine as `task_arithmetic`."""
    base = base.float()
    g = torch.Generator().manual_seed(seed)
    deltas = [random_prune(d, density, rescale, g, inplace=True) for d in task_vectors(tensors, base)]
    return combine_task_vectors(base, deltas, weights, consensus=False, normalize=normalize)


METHOD = MergeMethod("dare_linear", dare_linear,
                     parameters={"density": 0.5, "normalize": True, "rescale": True, "seed": 0},
                     mergekit_name="dare_linear")
