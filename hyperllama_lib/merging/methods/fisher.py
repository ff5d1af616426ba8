"""Fisher-weighted averaging (Matena & Raffel 2022): each parameter is the average of the models'
values weighted by each model's diagonal Fisher (`hyperllama_lib.merging.fisher_information`), so a model counts most
where its own language's loss is most sensitive.

theta_j = sum_i w_i F_ij theta_ij / sum_i w_i F_ij, with F_ij raised to at least `fisher_floor`, so
an entry no model's data touches (all Fisher zero) falls back to the weighted average. The base
model is not used: the same formula on task vectors gives the same result.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._base import MergeMethod, Tensor


def fisher(tensors: Sequence[Tensor], base: Tensor | None, weights: Tensor, *,
           importances: Sequence[Tensor], fisher_floor: float = 1e-6) -> Tensor:
    numerator = denominator = None
    for theta, importance, w in zip(tensors, importances, weights.tolist()):
        f = importance.to(torch.float32).clamp(min=fisher_floor).mul_(w)
        term = f * theta.to(torch.float32)
        numerator = term if numerator is None else numerator.add_(term)
        denominator = f if denominator is None else denominator.add_(f)
    return numerator.div_(denominator)


METHOD = MergeMethod("fisher", fisher, base="ignored", parameters={"fisher_floor": 1e-6},
                     needs_importance=True)
