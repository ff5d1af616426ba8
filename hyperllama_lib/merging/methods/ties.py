"""TIES-merging (Yadav et al. 2023), mergekit's `ties`: trim by magnitude, elect sign, disjoint mean."""
from __future__ import annotations

from typing import Sequence

from ._base import MergeMethod, Tensor, combine_task_vectors, magnitude_prune, per_model_values, task_vectors


def ties(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float | Sequence[float] = 0.5,
         normalize: bool = True) -> Tensor:
    """Per model keep the top max(1, int(density * numel)) |task vector| entries (density per model,
    or one for all), then TIES-combine (see `magnitude_prune` and `combine_task_vectors`)."""
    base = base.float()
    densities = per_model_values(density, len(tensors))
    deltas = [magnitude_prune(d, p, inplace=True) for d, p in zip(task_vectors(tensors, base), densities)]
    return combine_task_vectors(base, deltas, weights, consensus=True, normalize=normalize)


METHOD = MergeMethod("ties", ties, parameters={"density": 0.5, "normalize": True}, per_model=("density",),
                     mergekit_name="ties")
