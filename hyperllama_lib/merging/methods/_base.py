"""What a merge method is, and the task-vector helpers that several methods share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

Tensor = torch.Tensor
# fn(tensors, base, weights, **params) -> merged float32 tensor. `tensors` is a sequence of the
# models' tensors of one name (any dtype); in merge_models each item is read from disk when it is
# accessed, so walk it once, converting as you go, rather than keeping every model's copy.
# `base` is the base model's tensor (None when the method ignores the base or none was given),
# `weights` a float32 tensor with one weight per model. Methods with needs_importance also get
# importances=[float32 tensor per model]. A fn must not modify its inputs.
MergeFn = Callable[..., Tensor]
BASE_POLICIES = ("required", "optional", "ignored")  # mergekit's names for the same contracts


@dataclass(frozen=True)
class MergeMethod:
    """A merge method and its parameter schema.

    parameters maps each shared parameter to its default; a value must have the default's type
    (an int is accepted for a float). A parameter named "seed" reaches fn as a per-tensor seed
    (`merging.tensor_seed(seed, tensor_name)`), so randomness does not depend on tensor order.
    mergekit_name is the mergekit merge_method with the same math, used to write mergekit_config.yml;
    None where mergekit has none. per_model names the parameters that may instead be a list with one
    value per model, in model order (mergekit reads density per model); fn then gets that list.
    """

    name: str
    fn: MergeFn
    base: str = "required"
    parameters: dict[str, Any] = field(default_factory=dict)
    needs_importance: bool = False
    mergekit_name: str | None = None
    per_model: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.base not in BASE_POLICIES:
            raise ValueError(f"base policy {self.base!r} of {self.name!r}; valid choices: "
                             f"{', '.join(BASE_POLICIES)}")
        unknown = set(self.per_model) - set(self.parameters)
        if unknown:
            raise ValueError(f"per-model parameters {sorted(unknown)} of {self.name!r} are not parameters")

    @property
    def needs_base(self) -> bool:
        return self.base == "required"


# ---------------------------------------------------------------- shared task-vector math

def per_model_values(value: float | Sequence[float], n: int) -> list[float]:
    """A per-model parameter as one value per model: a scalar is every model's value."""
    if isinstance(value, (int, float)):
        return [float(value)] * n
    if len(value) != n:
        raise ValueError(f"got {len(value)} per-model values for {n} models")
    return [float(v) for v in value]


def magnitude_prune(delta: Tensor, density: float, inplace: bool = False) -> Tensor:
    """mergekit's `magnitude` sparsification: keep the k largest |delta| entries, zero the rest.

    k = max(1, int(density * numel)), so any density > 0 keeps at least one entry; density <= 0
    keeps none, density >= 1 all. Entries tied at the k-th magnitude are kept in flat (row-major)
    order; mergekit's unstable argsort leaves that order to the sort implementation.
    """
    n = delta.numel()
    if density >= 1:
        return delta
    if density <= 0 or n == 0:
        return delta.zero_() if inplace else torch.zeros_like(delta)
    k = max(1, int(density * n))
    flat = delta.abs().reshape(-1)
    threshold = kth_smallest_magnitude(flat, n - k + 1)  # the k-th largest magnitude
    missing = k - int(torch.count_nonzero(flat > threshold))
    tied = torch.nonzero(flat == threshold).squeeze(1)[:missing] if missing else None
    # A 0/1 float mask (1 above the threshold): float ops are several times faster than bool masks.
    keep = flat.sub_(threshold).clamp_(min=0).sign_()
    if tied is not None:
        keep[tied] = 1
    keep = keep.reshape(delta.shape)
    return delta.mul_(keep) if inplace else delta * keep


def kth_smallest_magnitude(flat: Tensor, q: int) -> Tensor:
    """The q-th smallest (1-based) value of a flat float32 tensor of magnitudes, exactly.

    Non-negative floats order as their int32 bit patterns, so a histogram of the top 16 bits finds
    the bucket holding the q-th value and torch.kthvalue only runs inside it: ~4x faster than
    torch.kthvalue on the whole tensor (which is most of a TIES merge's time).
    """
    if flat.numel() < 1 << 16:
        return torch.kthvalue(flat, q).values
    high = flat.view(torch.int32) >> 16
    cumulative = torch.bincount(high, minlength=1 << 15).cumsum(0)
    bucket = int(torch.searchsorted(cumulative, q))  # the first bucket reaching q values
    below = int(cumulative[bucket - 1]) if bucket else 0
    return torch.kthvalue(flat[high == bucket], q - below).values


def random_prune(delta: Tensor, density: float, rescale: bool, generator: torch.Generator,
                 inplace: bool = False) -> Tensor:
    """DARE's drop as mergekit 0.1.5 does it (`bernoulli` + `rescaled_masked_tensor`, L1 norm).

    Each entry is kept with probability density (torch.rand < density, drawn from `generator`: on CPU
    the same draws as mergekit's torch.bernoulli(torch.full_like(delta, density)) from that generator).
    With rescale, the kept entries are scaled so that the task vector keeps its L1 norm (the
    factor is about 1/density on large tensors), unless either norm is below 1e-7. density >= 1
    returns delta untouched.
    """
    if density >= 1:
        return delta
    before = delta.abs().sum() if rescale else None
    # 1.0 where rand < density, else 0.0, as a float mask (faster than a bool one)
    keep = torch.rand(delta.shape, generator=generator).neg_().add_(density).clamp_(min=0).sign_()
    kept = delta.mul_(keep) if inplace else delta * keep
    if rescale:
        after = kept.abs().sum()
        if before >= 1e-7 and after >= 1e-7:
            kept.mul_(before / after)
    return kept


def combine_task_vectors(base: Tensor, deltas: Sequence[Tensor], weights: Tensor, consensus: bool,
                         normalize: bool) -> Tensor:
    """mergekit's generalized task arithmetic after sparsification; consumes (scales) `deltas`.

    Each delta is multiplied by its weight. With consensus (TIES "sum" sign election) an entry of a
    weighted delta counts only where its sign equals the sign of the sum of all weighted deltas
    (a zero sum elects +, a zero entry never counts); normalize then divides by the summed weights of
    the counted entries (0 becomes 1). Without consensus all entries count and normalize divides by
    the sum of the weights (|sum| < 1e-8 becomes 1).
    """
    w = weights.tolist()
    for d, wi in zip(deltas, w):
        d.mul_(wi)
    merged = torch.zeros_like(base)
    if consensus:
        for d in deltas:
            merged.add_(d)
        elected = (merged >= 0).to(base.dtype).mul_(2).sub_(1)  # +1 or -1
        merged.zero_()
        divisor = torch.zeros_like(base)
        for d, wi in zip(deltas, w):
            # |d| where d has the elected sign, else 0; all in float (fast) and exact, as elected is +-1
            agreeing = d.mul_(elected).clamp_(min=0)
            merged.add_(agreeing)
            divisor.add_(agreeing.sign_(), alpha=wi)
        merged.mul_(elected)
        divisor[divisor == 0] = 1
    else:
        for d in deltas:
            merged.add_(d)
        total = sum(w)
        divisor = 1.0 if abs(total) < 1e-8 else total
    if normalize:
        merged.div_(divisor)
    return base + merged


def dare(tensors: Sequence[Tensor], base: Tensor, weights: Tensor, density: float | Sequence[float],
         normalize: bool, rescale: bool, seed: int, consensus: bool,
         generator: torch.Generator | None = None) -> Tensor:
    """DARE: drop each task-vector entry with probability 1 - density (per model, or one for all) and
    rescale (`random_prune`, models drawn in order), then combine (`combine_task_vectors`). The masks
    come from `generator` where one is given (a stream shared across tensors), else from a generator
    of this tensor seeded with `seed`."""
    base = base.float()
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    densities = per_model_values(density, len(tensors))
    deltas = [random_prune(d, p, rescale, g, inplace=True) for d, p in zip(task_vectors(tensors, base), densities)]
    return combine_task_vectors(base, deltas, weights, consensus=consensus, normalize=normalize)


def task_vectors(tensors: Iterable[Tensor], base: Tensor) -> Iterator[Tensor]:
    """theta_i - base in float32, a new tensor per model, made one at a time (so a lazily read
    model tensor can be freed before the next is read)."""
    return (t.to(torch.float32) - base for t in tensors)
