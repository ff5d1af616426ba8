"""DARE-TIES (Yu et al. 2024 drop-and-rescale, then TIES sign election), mergekit's `dare_ties`."""
from __future__ import annotations

from typing import Sequence

import torch

from ._base import MergeMethod, Tensor, combine_task_vectors, random_prune, task_vectors


def dare_ties(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float = 0.5,
              normalize: bool = True, rescale: bool = True, seed: int = 0) -> Tensor:
    """Drop each task-vector entry with probability 1 - density and rescale (`random_prune`; one
    generator per tensor, models drawn in order), then TIES-combine as `ties` does."""
    base = base.float()
    g = torch.Generator().manual_seed(seed)
    deltas = [random_prune(d, density, rescale, g, inplace=True) for d in task_vectors(tensors, base)]
    return combine_task_vectors(base, deltas, weights, consensus=True, normalize=normalize)


METHOD = MergeMethod("dare_ties", dare_ties,
                     parameters={"density": 0.5, "normalize": True, "rescale": True, "seed": 0},
                     mergekit_name="dare_ties")
