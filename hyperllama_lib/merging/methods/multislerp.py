"""Multi-SLERP, mergekit's `multislerp`: a weighted mean on the hypersphere (Goddard 2025).

Each model's tensor (minus the base, if one is given) is flattened and put on the unit sphere; the
points are averaged in the tangent space at their normalised weighted Euclidean mean, mapped back
with the exponential map, scaled by the weighted mean of the norms, and the base is added back.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...errors import MergeError
from ._base import MergeMethod, Tensor


def multislerp(tensors: Sequence[Tensor], base: Tensor | None, weights: Tensor,
               normalize_weights: bool = True, eps: float = 1e-8) -> Tensor:
    """As mergekit: one model is returned as it is (the base then plays no part); a zero weighted
    mean falls back to linear interpolation for two models and is an error for more. Unlike
    mergekit, all-zero task vectors (every model equal to the base, or zero tensors without a base)
    give the base (or zeros) for any number of models instead of that error."""
    if len(tensors) == 1:
        return tensors[0].to(torch.float32)
    x = torch.stack([t.to(torch.float32) for t in tensors])
    if base is not None:
        base = base.float()
        x -= base
    flat = x.reshape(len(tensors), -1)
    if not flat.any():
        return x[0] if base is None else x[0] + base
    w = weights / weights.sum() if normalize_weights else weights
    norms = flat.norm(dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean_norm = mean.norm()
    if mean_norm < eps:
        if len(tensors) != 2:
            raise MergeError("multislerp: the weighted mean of the unit task vectors is zero "
                             "(antipodal inputs with balancing weights); use other weights")
        merged = x[0] * w[0] + x[1] * w[1]
        return merged if base is None else merged + base
    mean = mean / mean_norm
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    tangent = (tangents * w.view(-1, 1)).sum(0)
    length = tangent.norm() + eps
    merged = mean * torch.cos(length) + tangent * (torch.sin(length) / length)
    merged = (merged * (norms.squeeze(-1) * w).sum()).view(x.shape[1:])
    return merged if base is None else merged + base


METHOD = MergeMethod("multislerp", multislerp, base="optional",
                     parameters={"normalize_weights": True, "eps": 1e-8}, mergekit_name="multislerp")
