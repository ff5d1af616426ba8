"""Prefix trees of token sequences, packed into batches so that a shared prefix is computed once.

Minimal pairs and template-generated benchmarks repeat prefixes a lot: BLiMP's sentences, sorted
and cut into batches of 32, form prefix trees with 0.62 nodes per token.

A batch (`TreeBatch`) is the prefix tree of consecutive sequences in sorted order, its nodes a flat
list in preorder. The model's linear layers, norms and output head run on the nodes as they are,
without padding. A node's rotary position is its depth, and it attends to itself and its ancestors
only, so it sees exactly what it would see in its own sequence. Attention runs in chunks of
`chunk` consecutive nodes: in preorder, every ancestor of a node in a chunk is either in the chunk
or an ancestor of the chunk's first node, so a chunk's keys are that first node's ancestors
followed by the chunk itself (`keys`), and `mask` says which of them each query may see. Dense
attention over a chunk costs chunk x (depth + chunk), not nodes x nodes.

A sequence's log-probability is the sum, over the nodes of its path after the root, of
log p(node's token | parent node); each parent's next-token distribution is computed once however
many children (and sequences) it has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

# Batches are built lazily, a piece of about this many sequences at a time: it bounds the memory of
# the node bookkeeping, and lets a consumer score one piece while the next is built.
PIECE_SEQUENCES = 1024


@dataclass
class TreeBatch:
    members: np.ndarray   # (sequences,) indices into the packed sequences
    tokens: np.ndarray    # (nodes,) token of each node, nodes in preorder
    depths: np.ndarray    # (nodes,) depth = position in its sequences
    heads: np.ndarray     # (parents,) the nodes that have a child: where the output head runs
    head_of: np.ndarray   # (nodes,) index into `heads` of the node's parent, -1 for a root
    paths: np.ndarray     # (sequences, longest) node at each depth of a member, -1 past its end
    chunk: int            # query nodes per attention chunk; chunk c holds nodes c*chunk, ...
    keys: np.ndarray      # (chunks, width) node at each key slot of a chunk (0 where none)
    mask: np.ndarray      # (chunks, chunk, width) bool: query may attend to key slot


def _sorted_matrix(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, the sorted sequences right-padded with -1, and their lengths."""
    order = sorted(range(len(sequences)), key=lambda i: list(sequences[i]))
    lengths = np.fromiter((len(sequences[i]) for i in order), dtype=np.int64, count=len(order))
    matrix = np.full((len(order), max(int(lengths.max(initial=0)), 1)), -1, dtype=np.int64)
    for r, i in enumerate(order):
        matrix[r, : lengths[r]] = sequences[i]
    return np.asarray(order, dtype=np.int64), matrix, lengths


def _common_prefixes(matrix: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """lcp[i]: length of the common prefix of sorted sequences i - 1 and i (lcp[0] = 0)."""
    lcp = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        same = np.cumprod(matrix[1:] == matrix[:-1], axis=1).sum(axis=1)
        lcp[1:] = np.minimum(same, np.minimum(lengths[1:], lengths[:-1]))
    return lcp


def _batch_starts(lengths: np.ndarray, lcp: np.ndarray, max_sequences: int | None,
                  max_nodes: int | None) -> list[int]:
    """Greedy cut of the sorted sequences into batches of at most max_sequences sequences and
    max_nodes tree nodes (a single longer sequence gets a batch of its own)."""
    starts: list[int] = []
    members = nodes = 0
    for i, (length, shared) in enumerate(zip(lengths.tolist(), lcp.tolist())):
        grows = length - shared
        if starts and (max_sequences is None or members < max_sequences) \
                and (max_nodes is None or nodes + grows <= max_nodes):
            members, nodes = members + 1, nodes + grows
        else:
            starts.append(i)
            members, nodes = 1, length
    return starts


class Packing:
    """The batches of `pack`, built lazily piece by piece; `len` is known up front."""

    def __init__(self, sequences: Sequence[Sequence[int]], chunk: int, max_sequences: int | None,
                 max_nodes: int | None) -> None:
        self.chunk = chunk
        self.order, self.matrix, self.lengths = _sorted_matrix(sequences)
        self.lcp = _common_prefixes(self.matrix, self.lengths)
        self.starts = _batch_starts(self.lengths, self.lcp, max_sequences, max_nodes)
        self.lcp[self.starts] = 0

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self) -> Iterator[TreeBatch]:
        bounds = self.starts + [len(self.lengths)]
        first = 0
        while first < len(self.starts):
            last = first + 1
            while last < len(self.starts) and bounds[last + 1] - bounds[first] <= PIECE_SEQUENCES:
                last += 1
            s0, s1 = bounds[first], bounds[last]
            yield from _build(self.order[s0:s1], self.matrix[s0:s1], self.lengths[s0:s1],
                              self.lcp[s0:s1], [b - s0 for b in bounds[first:last + 1]], self.chunk)
            first = last


def pack(sequences: Sequence[Sequence[int]], chunk: int, max_sequences: int | None = None,
         max_nodes: int | None = None) -> Packing:
    """Prefix trees of the sequences in sorted order, cut into batches (`_batch_starts`), with
    attention chunks of `chunk` nodes. Every sequence is the member of exactly one batch;
    duplicates share one path, and an empty sequence has an empty path."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    return Packing(sequences, chunk, max_sequences, max_nodes)


def _build(order: np.ndarray, matrix: np.ndarray, lengths: np.ndarray, lcp: np.ndarray,
           bounds: list[int], chunk: int) -> list[TreeBatch]:
    """The batches [bounds[k], bounds[k + 1]) of a run of sorted sequences (lcp 0 at each start)."""
    depth = np.arange(matrix.shape[1])
    inside = depth < lengths[:, None]
    new = (depth >= lcp[:, None]) & inside        # nodes created by each sorted sequence
    node_id = (np.cumsum(new.ravel()) - 1).reshape(new.shape)
    # The node of sequence i at depth d was created by the last sequence j <= i with new[j, d].
    creator = np.maximum.accumulate(np.where(new, np.arange(len(lengths))[:, None], -1), axis=0)
    paths = np.where(inside, np.take_along_axis(node_id, np.maximum(creator, 0), axis=0), -1)
    seq_of_node, depth_of_node = np.nonzero(new)  # row-major = node id order = preorder
    first_node = np.concatenate([[0], np.cumsum(new.sum(axis=1))])
    batches = []
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        n0, n1 = int(first_node[b0]), int(first_node[b1])
        seqs, depths = seq_of_node[n0:n1], depth_of_node[n0:n1]
        member_paths = np.where(paths[b0:b1] >= 0, paths[b0:b1] - n0, -1)
        # node_paths[n]: the path of the sequence that created node n; its first depths[n] + 1
        # entries are n's ancestors-or-self
        node_paths = paths[seqs] - n0
        batches.append(_batch(order[b0:b1], matrix[seqs, depths], depths, member_paths,
                              node_paths, chunk))
    return batches


def _batch(members: np.ndarray, tokens: np.ndarray, depths: np.ndarray, member_paths: np.ndarray,
           node_paths: np.ndarray, chunk: int) -> TreeBatch:
    nodes = len(tokens)
    longest = int(depths.max()) + 1 if nodes else 1
    member_paths, node_paths = member_paths[:, :longest], node_paths[:, :longest]
    parents = np.where(depths > 0, node_paths[np.arange(nodes), np.maximum(depths - 1, 0)], -1)
    child = parents >= 0
    heads, inverse = np.unique(parents[child], return_inverse=True)
    head_of = np.full(nodes, -1, dtype=np.int64)
    head_of[child] = inverse
    keys, mask = _chunks(depths, node_paths, chunk)
    return TreeBatch(members, tokens, depths, heads, head_of, member_paths, chunk, keys, mask)


def _chunks(depths: np.ndarray, node_paths: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Key slots and mask of the attention chunks: chunk c's keys are the ancestors of its first
    node s (slot = depth) followed by its own nodes (slot = depth[s] + n - s)."""
    nodes = len(depths)
    n_chunks = max(1, -(-nodes // chunk))
    first = np.arange(n_chunks) * chunk
    context = depths[first] if nodes else np.zeros(1, dtype=np.int64)
    longest_context = int(context.max())
    keys = np.zeros((n_chunks, longest_context + chunk), dtype=np.int64)
    mask = np.zeros((n_chunks, chunk, longest_context + chunk), dtype=bool)
    mask[:, :, 0] = True  # padding queries (past the last node) see one key, not none
    if not nodes:
        return keys, mask
    is_context = np.arange(longest_context) < context[:, None]
    keys[:, :longest_context] = np.where(is_context, node_paths[first, :longest_context], 0)
    own = first[:, None] + np.arange(chunk)
    real = own < nodes
    keys[np.nonzero(real)[0], (context[:, None] + np.arange(chunk))[real]] = own[real]
    node = np.arange(nodes)
    mask[node // chunk, node % chunk, 0] = False
    is_ancestor = np.arange(node_paths.shape[1]) <= depths[:, None]
    query = np.broadcast_to(node[:, None], node_paths.shape)[is_ancestor]
    ancestor = node_paths[is_ancestor]
    c = query // chunk
    slot = np.where(ancestor >= first[c], context[c] + ancestor - first[c], depths[ancestor])
    mask[c, query % chunk, slot] = True
    return keys, mask
