"""Evaluation: minimal-pair scoring, bits per byte, the fast scorer, pair sources and UD-built pairs."""
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
