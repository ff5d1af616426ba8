"""DARE-TIES (Yu et al. 2024 drop-and-rescale, then TIES sign election), mergekit's `dare_ties`."""
from __future__ import annotations

from typing import Sequence

import torch

from ._base import MergeMethod, Tensor, dare


def dare_ties(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float | Sequence[float] = 0.5,
              normalize: bool = True, rescale: bool = True, seed: int = 0,
              generator: torch.Generator | None = None) -> Tensor:
    """Drop and rescale (`dare`), then TIES-combine as `ties` does."""
    return dare(tensors, base, weights, density, normalize, rescale, seed, consensus=True, generator=generator)


METHOD = MergeMethod("dare_ties", dare_ties,
                     parameters={"density": 0.5, "normalize": True, "rescale": True, "seed": 0},
                     per_model=("density",), mergekit_name="dare_ties")
