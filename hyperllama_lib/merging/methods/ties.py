"""TIES-merging (Yadav et al. 2023), mergekit's `ties`: trim by magnitude, elect sign, disjoint mean."""
from __future__ import annotations

from typing import Sequence

from ._base import MergeMethod, Tensor, combine_task_vectors, magnitude_prune, task_vectors


def ties(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float = 0.5,
         normalize: bool = True) -> Tensor:
    """Per model keep the top max(1, int(density * numel)) |task vector| entries, then TIES-combine
    (see `magnitude_prune` and `combine_task_vectors`)."""
    base = base.float()
    deltas = [magnitude_prune(d, density, inplace=True) for d in task_vectors(tensors, base)]
    return combine_task_vectors(base, deltas, weights, consensus=True, normalize=normalize)


METHOD = MergeMethod("ties", ties, parameters={"density": 0.5, "normalize": True},
                     mergekit_name="ties")
