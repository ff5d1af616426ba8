"""Linear averaging (Wortsman et al. 2022, model soups), mergekit's `linear`."""
from __future__ import annotations

from typing import Sequence

import torch

from ...errors import MergeError
from ._base import MergeMethod, Tensor


def linear(tensors: Sequence[Tensor], base: None, weights: Tensor, normalize: bool = True) -> Tensor:
    """sum_i w_i theta_i, divided by sum_i w_i with normalize. The base model takes no part.

    mergekit divides by a zero weight sum (inf/nan); we refuse it instead.
    """
    merged = None
    for t, w in zip(tensors, weights.tolist()):
        t = t.to(torch.float32)
        merged = t * w if merged is None else merged.add_(t, alpha=w)
    if normalize:
        total = float(weights.sum())
        if abs(total) < 1e-8:
            raise MergeError("linear merge with normalize=True needs weights that do not sum to 0")
        merged.div_(total)
    return merged


METHOD = MergeMethod("linear", linear, base="ignored", parameters={"normalize": True},
                     mergekit_name="linear")
