"""Evaluation: the table of benchmarks (benchmarks), minimal-pair and bits-per-byte scoring (scoring), the fast
scorer and its prefix trees, pair sources and MultiBLiMP-style pairs built from UD (ud_pairs)."""
from __future__ import annotations

from .scoring import (  # noqa: F401
    auto_batch_size,
    bits_per_byte,
    head_rows,
    score_pairs,
    score_sequences,
    sentence_logprobs,
    tree_limits,
)
