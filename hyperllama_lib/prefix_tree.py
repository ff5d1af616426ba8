"""Prefix trees of token sequences, packed into rows so that a shared prefix is computed once.

Minimal pairs and template-generated benchmarks repeat prefixes a lot: in BLiMP, a prefix tree over
the sentences of consecutive (sorted) sentences has about 0.62 nodes per token. A row holds one such
tree in preorder; a node attends to itself and its ancestors only, and its position is its depth, so
each node sees exactly what it would see in its own sequence (`attention_mask`).

A sequence's log-probability is then the sum, over the nodes of its path after the root, of
log p(node's token | parent node), and each node's next-token distribution is computed once however
many sequences pass through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch


@dataclass
class Row:
    """One packed prefix tree; nodes in preorder, so a subtree is the range [i, end[i])."""
    tokens: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # -1 for a root
    ends: list[int] = field(default_factory=list)
    members: list[int] = field(default_factory=list)  # sequences whose path is in this row

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Packing:
    rows: list[Row]
    row_of: np.ndarray        # sequence -> row
    paths: list[list[int]]    # sequence -> node indices (within its row), root first


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def pack(sequences: Sequence[Sequence[int]], max_row_tokens: int) -> Packing:
    """Prefix trees of consecutive sequences in sorted order, at most max_row_tokens nodes a row.

    A sequence longer than max_row_tokens gets a row of its own. Duplicates share one path.
    """
    if max_row_tokens < 1:
        raise ValueError(f"max_row_tokens must be positive, got {max_row_tokens}")
    order = sorted(range(len(sequences)), key=lambda i: list(sequences[i]))
    rows: list[Row] = []
    row_of = np.zeros(len(sequences), dtype=np.int64)
    paths: list[list[int]] = [[] for _ in sequences]
    row, previous, path = None, (), []
    for i in order:
        seq = list(sequences[i])
        shared = _common_prefix(previous, seq) if row is not None else 0
        if row is None or len(row) + len(seq) - shared > max_row_tokens:
            if row is not None:
                _close(row, path, 0)
            row = Row()
            rows.append(row)
            shared, path = 0, []
        _close(row, path, shared)
        path = path[:shared]
        for depth in range(shared, len(seq)):
            row.parents.append(path[-1] if path else -1)
            path.append(len(row.tokens))
            row.tokens.append(seq[depth])
            row.depths.append(depth)
            row.ends.append(-1)
        row.members.append(i)
        row_of[i] = len(rows) - 1
        paths[i] = list(path)
        previous = seq
    if row is not None:
        _close(row, path, 0)
    return Packing(rows, row_of, paths)


def _close(row: Row, path: list[int], keep: int) -> None:
    """Nodes of `path` below depth `keep` have no more descendants: their subtree ends here."""
    for node in path[keep:]:
        if row.ends[node] < 0:
            row.ends[node] = len(row.tokens)


def attention_mask(rows: Sequence[Row], width: int) -> torch.Tensor:
    """(rows, 1, width, width) bool: node i may attend to node j iff j is i or an ancestor of i.

    In preorder, j is an ancestor-or-self of i exactly when j <= i < end[j]. Padding attends to
    itself only, so that no softmax row is empty.
    """
    ends = np.zeros((len(rows), width), dtype=np.int64)
    ends[:] = np.arange(1, width + 1)
    for r, row in enumerate(rows):
        ends[r, : len(row)] = row.ends
    i = torch.arange(width).view(1, width, 1)
    j = torch.arange(width).view(1, 1, width)
    return ((j <= i) & (i < torch.from_numpy(ends).unsqueeze(1))).unsqueeze(1)
