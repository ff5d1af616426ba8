"""Prefix-tree packing of token sequences (prefix_tree)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from hyperllama_lib.evaluation import prefix_tree


def parents_of(batch: prefix_tree.TreeBatch) -> np.ndarray:
    return np.where(batch.head_of >= 0, batch.heads[np.maximum(batch.head_of, 0)], -1)


def ancestors(parents: np.ndarray, node: int) -> set[int]:
    out = {node}
    while parents[node] >= 0:
        node = int(parents[node])
        out.add(node)
    return out


def check(sequences, packing, chunk, max_sequences=None, max_nodes=None):
    batches = list(packing)
    assert len(batches) == len(packing)
    seen = []
    for batch in batches:
        parents = parents_of(batch)
        nodes = len(batch.tokens)
        assert max_sequences is None or len(batch.members) <= max_sequences
        assert max_nodes is None or nodes <= max_nodes or len(batch.members) == 1
        for k, i in enumerate(batch.members):
            path = [int(n) for n in batch.paths[k] if n >= 0]
            assert (batch.paths[k][len(path):] == -1).all()
            assert [int(batch.tokens[n]) for n in path] == list(sequences[i])  # spells it
            assert [int(batch.depths[n]) for n in path] == list(range(len(sequences[i])))
            assert all(parents[b] == a for a, b in zip(path, path[1:]))
            assert not path or parents[path[0]] == -1
        assert (parents < np.arange(nodes)).all()  # preorder: a parent comes first
        assert sorted(set(parents[parents >= 0])) == list(batch.heads)
        # attention: each query sees exactly its ancestors-or-self among its chunk's keys
        assert batch.chunk == chunk and batch.mask.shape[:2] == (len(batch.keys), chunk)
        for c in range(len(batch.keys)):
            for q in range(chunk):
                node = c * chunk + q
                visible = batch.keys[c][batch.mask[c, q]]
                if node < nodes:
                    assert sorted(visible.tolist()) == sorted(ancestors(parents, node))
                else:
                    assert len(visible) == 1  # padding sees one key, never none
        seen += list(batch.members)
    assert sorted(seen) == list(range(len(sequences)))
    return batches


def test_shared_prefixes_are_stored_once():
    sequences = [[0, 5, 6, 7], [0, 5, 6, 8], [0, 5, 9], [0, 5, 6, 7], [0, 5], [0, 4]]
    batches = check(sequences, prefix_tree.pack(sequences, chunk=64), 64)
    assert len(batches) == 1
    batch = batches[0]
    # nodes: 0, 4 | 5, 6, 7, 8, 9  -> 7 nodes for 21 tokens; the head runs on 0, 5, 6
    assert len(batch.tokens) == 7 and len(batch.heads) == 3
    members = list(batch.members)
    path = {i: batch.paths[members.index(i)] for i in range(len(sequences))}
    assert (path[0] == path[3]).all()                       # duplicates share one path
    assert (path[4][:2] == path[0][:2]).all() and (path[4][2:] == -1).all()  # a prefix


@pytest.mark.parametrize("chunk", [1, 3, 8, 100])
def test_random_sequences_small_chunks(chunk):
    rng = random.Random(chunk)
    sequences = [[0] + [rng.randrange(3) for _ in range(rng.randrange(0, 7))] for _ in range(40)]
    sequences += [[1, 2], [1], [0] * 12, []]  # a second root, a deep chain, an empty one
    check(sequences, prefix_tree.pack(sequences, chunk), chunk)


def test_batches_respect_sequence_and_node_limits():
    rng = random.Random(0)
    sequences = [[0] + [rng.randrange(4) for _ in range(rng.randrange(1, 9))] for _ in range(60)]
    sequences.append([0] + [9] * 30)  # longer than max_nodes: a batch of its own
    by_count = check(sequences, prefix_tree.pack(sequences, 4, max_sequences=7), 4, max_sequences=7)
    assert all(len(b.members) == 7 for b in by_count[:-1])
    by_nodes = check(sequences, prefix_tree.pack(sequences, 4, max_nodes=16), 4, max_nodes=16)
    assert len(by_nodes) > 1
    assert any(len(b.members) == 1 and len(b.tokens) == 31 for b in by_nodes)


def test_large_inputs_are_built_in_pieces(monkeypatch):
    monkeypatch.setattr(prefix_tree, "PIECE_SEQUENCES", 10)
    rng = random.Random(2)
    sequences = [[0] + [rng.randrange(3) for _ in range(rng.randrange(1, 6))] for _ in range(50)]
    check(sequences, prefix_tree.pack(sequences, 5, max_sequences=4), 5, max_sequences=4)


def test_empty_input_and_bad_chunk():
    assert len(prefix_tree.pack([], 4)) == 0 and list(prefix_tree.pack([], 4)) == []
    with pytest.raises(ValueError, match="chunk"):
        prefix_tree.pack([[0, 1]], 0)
