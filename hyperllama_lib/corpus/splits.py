"""Deterministic splits: held-out text and the English seed/base split, by a stable hash of each
document's dedup key and a seed, so membership never depends on document order or the machine."""
from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterable

from .text import Document, dedup_key


def stable_unit(key: str, seed: int, salt: str) -> float:
    """A number in [0, 1) from sha256 of (salt, seed, key): stable across runs and machines."""
    digest = hashlib.sha256(f"{salt}\x00{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")


def split_fraction(
    docs: Iterable[Document], fraction: float, seed: int, salt: str
) -> tuple[list[Document], list[Document]]:
    """(first, rest): a document goes to `first` when stable_unit(dedup_key, seed, salt) < fraction.

    Membership depends only on the text, seed and salt, so it is independent of document order
    (output lists keep the input order); identical texts always land on the same side.
    """
    _check_fraction(fraction)
    first, rest = [], []
    for doc in docs:
        (first if stable_unit(dedup_key(doc.text), seed, salt) < fraction else rest).append(doc)
    return first, rest


def split_heldout(
    docs: Iterable[Document], fraction: float, seed: int, max_docs: int | None = None
) -> tuple[list[Document], list[Document]]:
    """(train, heldout): `fraction` of the documents held out by stable hash (see split_fraction).

    With `max_docs`, only the held-out candidates with the smallest hash values are held out;
    the other candidates go to train. Output lists keep the input order.
    """
    _check_fraction(fraction)
    scored = [(stable_unit(dedup_key(doc.text), seed, "heldout"), i, doc) for i, doc in enumerate(docs)]
    candidates = sorted((u, i) for u, i, _ in scored if u < fraction)
    if max_docs is not None:
        candidates = candidates[: max(max_docs, 0)]
    held = {i for _, i in candidates}
    train = [doc for _, i, doc in scored if i not in held]
    heldout = [doc for _, i, doc in scored if i in held]
    return train, heldout


class StreamingHeldout:
    """`split_heldout` for a stream: candidates (stable_unit < fraction) are held out, and with
    `max_docs` only those with the smallest units, so a later candidate can push an earlier one
    back to training. `offer` returns the documents that go to training now. Candidates are
    checked with `reject` before they compete, so the held-out set is `split_heldout`'s on the
    accepted documents."""

    def __init__(self, fraction: float, seed: int, max_docs: int | None = None,
                 reject: Callable[[Document], bool] | None = None):
        _check_fraction(fraction)
        self.fraction, self.seed, self.max_docs = fraction, seed, max_docs
        self.reject = reject  # candidates it returns True for are dropped (e.g. contaminated ones)
        self.rejected = 0
        self.heap: list[tuple[float, int, Document]] = []  # (-unit, -arrival, doc): largest unit on top
        self.arrivals = 0

    def offer(self, doc: Document) -> list[Document]:
        unit = stable_unit(dedup_key(doc.text), self.seed, "heldout")
        if unit >= self.fraction or (self.max_docs is not None and self.max_docs <= 0):
            return [doc]
        if self.reject is not None and self.reject(doc):
            self.rejected += 1
            return []
        # ties on the unit go to the earlier arrival, as in split_heldout's sort on (unit, position)
        heapq.heappush(self.heap, (-unit, -self.arrivals, doc))
        self.arrivals += 1
        if self.max_docs is not None and len(self.heap) > self.max_docs:
            return [heapq.heappop(self.heap)[2]]
        return []

    def heldout(self) -> list[Document]:
        """The held-out documents in arrival order."""
        return [doc for _, _, doc in sorted(self.heap, key=lambda item: -item[1])]
