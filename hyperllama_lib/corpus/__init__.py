"""Data building blocks: documents (`text`), the offline data folder (`local`), dedup and
decontamination (`cleaning`), deterministic splits (`splits`), code documents (`code`), the Hub streams
(`hub`), UniMax, the tokenizer and packed token files."""
from __future__ import annotations

from ..errors import DataError
from .cleaning import HashDedup, contamination_index, decontaminate, dedup, is_contaminated
from .code import chunk_code, code_documents
from .hub import SHUFFLE_BUFFER, buffer_shuffle, fetch_software_heritage, hub_source, stream_documents
from .local import (
    blimp_rows,
    blimp_sentences,
    evaluation_keys,
    pair_file_sentences,
    read_local_corpus,
    read_texts,
    udhr_lines,
)
from .splits import StreamingHeldout, split_fraction, split_heldout, stable_unit
from .text import Document, dedup_key, normalize_text, split_sentences

__all__ = [
    "DataError", "Document", "HashDedup", "SHUFFLE_BUFFER", "StreamingHeldout", "blimp_rows", "blimp_sentences",
    "buffer_shuffle", "chunk_code", "code_documents", "contamination_index", "decontaminate", "dedup", "dedup_key",
    "evaluation_keys", "fetch_software_heritage", "hub_source", "is_contaminated", "normalize_text",
    "pair_file_sentences", "read_local_corpus", "read_texts", "split_fraction", "split_heldout", "split_sentences", "stable_unit",
    "stream_documents", "udhr_lines",
]
