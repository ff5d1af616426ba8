"""Prefix-tree packing of token sequences (prefix_tree)."""
from __future__ import annotations

import random

import pytest
import torch

from hyperllama_lib import prefix_tree


def ancestors(row: prefix_tree.Row, node: int) -> set[int]:
    out = {node}
    while row.parents[node] >= 0:
        node = row.parents[node]
        out.add(node)
    return out


def check_packing(sequences, packing, max_row_tokens):
    for i, seq in enumerate(sequences):
        row = packing.rows[packing.row_of[i]]
        path = packing.paths[i]
        assert [row.tokens[n] for n in path] == list(seq)       # the path spells the sequence
        assert [row.depths[n] for n in path] == list(range(len(seq)))
        assert all(row.parents[b] == a for a, b in zip(path, path[1:]))
        assert i in row.members
    for row in packing.rows:
        assert len(row) <= max_row_tokens or len(row.members) == 1
        for node in range(len(row)):  # preorder: a subtree is [node, end)
            subtree = {m for m in range(len(row)) if node in ancestors(row, m)}
            assert subtree == set(range(node, row.ends[node]))


def test_shared_prefixes_are_stored_once():
    sequences = [[0, 5, 6, 7], [0, 5, 6, 8], [0, 5, 9], [0, 5, 6, 7], [0, 5], [0, 4]]
    packing = prefix_tree.pack(sequences, max_row_tokens=64)
    check_packing(sequences, packing, 64)
    assert len(packing.rows) == 1
    # nodes: 0, 4 | 5, 6, 7, 8, 9  -> 7 nodes for 21 tokens
    assert len(packing.rows[0]) == 7
    assert packing.paths[0] == packing.paths[3]          # duplicates share one path
    assert packing.paths[4] == packing.paths[0][:2]      # a prefix of another sequence


def test_rows_respect_the_budget_and_long_sequences_get_their_own_row():
    rng = random.Random(0)
    sequences = [[0] + [rng.randrange(4) for _ in range(rng.randrange(1, 9))] for _ in range(60)]
    sequences.append([0] + [1] * 30)
    packing = prefix_tree.pack(sequences, max_row_tokens=16)
    check_packing(sequences, packing, 16)
    assert len(packing.rows) > 1
    assert len(packing.rows[packing.row_of[len(sequences) - 1]]) >= 31


def test_attention_mask_is_ancestor_or_self():
    rng = random.Random(1)
    sequences = [[0] + [rng.randrange(3) for _ in range(rng.randrange(0, 6))] for _ in range(25)]
    packing = prefix_tree.pack(sequences, max_row_tokens=20)
    width = max(len(r) for r in packing.rows) + 3  # with padding
    mask = prefix_tree.attention_mask(packing.rows, width)
    assert mask.shape == (len(packing.rows), 1, width, width)
    for r, row in enumerate(packing.rows):
        for i in range(width):
            allowed = ancestors(row, i) if i < len(row) else {i}  # padding: itself only
            assert set(torch.nonzero(mask[r, 0, i]).flatten().tolist()) == allowed


def test_bad_budget():
    with pytest.raises(ValueError, match="max_row_tokens"):
        prefix_tree.pack([[0, 1]], 0)
