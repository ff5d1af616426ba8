"""Fisher-TIES, our language-aware merge: TIES whose notion of "important" is the Fisher of each
model's own language instead of the size of its task vector.

For model i, task vector d_i = theta_i - base and diagonal Fisher F_i (`hyperllama_lib.merging.fisher_information`,
raised to at least `fisher_floor`):
1. trim: keep the top `density` share of entries by saliency F_i * d_i^2, the second-order estimate
   of how much language i's loss rises when the entry is reset to the base (Optimal Brain Damage);
   an entry that moved a lot but does not matter to its language is dropped, a small change that
   matters is kept;
2. elect: the sign of sum_i w_i F_i d_i over the kept entries;
3. merge: the Fisher-weighted mean of the kept entries that agree with the elected sign,
   sum_i w_i F_i d_i / sum_i w_i F_i, added to the base (an entry nobody keeps stays at the base).
With equal Fisher everywhere this is exactly TIES (`ties`, normalize=True).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._base import MergeMethod, Tensor, magnitude_prune, per_model_values, task_vectors


def fisher_ties(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, *,
                importances: Sequence[Tensor], density: float | Sequence[float] = 0.5,
                fisher_floor: float = 1e-6) -> Tensor:
    base = base.float()
    kept, fishers = [], []
    densities = per_model_values(density, len(tensors))
    for delta, importance, w, p in zip(task_vectors(tensors, base), importances, weights.tolist(), densities):
        f = importance.to(torch.float32).clamp(min=fisher_floor)
        keep = magnitude_prune(f.sqrt() * delta.abs(), p) > 0  # top by sqrt(saliency)
        kept.append(delta.mul_(keep))
        fishers.append(f.mul_(w))
    elected = torch.zeros_like(base)
    for d, f in zip(kept, fishers):
        elected.addcmul_(d, f)
    elected = torch.where(elected >= 0, 1.0, -1.0)
    numerator, denominator = torch.zeros_like(base), torch.zeros_like(base)
    for d, f in zip(kept, fishers):
        agrees = (d * f * elected > 0).to(torch.float32)  # the sign of the weighted entry, as TIES
        numerator.addcmul_(d * agrees, f)
        denominator.addcmul_(agrees, f)
    return base + numerator / torch.where(denominator == 0, 1.0, denominator)


METHOD = MergeMethod("fisher_ties", fisher_ties, parameters={"density": 0.5, "fisher_floor": 1e-6},
                     per_model=("density",), needs_importance=True)
