"""Task arithmetic (Ilharco et al. 2023), mergekit's `task_arithmetic`.

The paper merges with normalize true (mergekit's default is false), which makes it equal to linear.
"""
from __future__ import annotations

from typing import Sequence

from ._base import MergeMethod, Tensor, combine_task_vectors, task_vectors


def task_arithmetic(tensors: Sequence[Tensor], base: Tensor, weights: Tensor,
                    normalize: bool = True) -> Tensor:
    """base + sum_i w_i (theta_i - base), divided by sum_i w_i with normalize (a zero sum by 1)."""
    base = base.float()
    return combine_task_vectors(base, list(task_vectors(tensors, base)), weights, consensus=False,
                                normalize=normalize)


METHOD = MergeMethod("task_arithmetic", task_arithmetic, parameters={"normalize": True},
                     mergekit_name="task_arithmetic")
