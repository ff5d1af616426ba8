"""Cleaning: exact dedup (in memory, or by 64-bit hashes for a stream) and decontamination against
evaluation sentences. Everything depends on the text only, never on Python's randomised `hash`."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .text import Document, dedup_key, split_sentences

MIN_CONTAINED_WORDS = 6  # evaluation sentences this long are also searched for inside documents
# Tokens for containment matching: runs of word characters, or single punctuation marks.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def dedup(docs: Iterable[Document]) -> tuple[list[Document], int]:
    """Exact dedup on `dedup_key`; the first occurrence wins. Returns (kept, number removed)."""
    seen: set[str] = set()
    kept = []
    removed = 0
    for doc in docs:
        key = dedup_key(doc.text)
        if key in seen:
            removed += 1
        else:
            seen.add(key)
            kept.append(doc)
    return kept, removed


class HashDedup:
    """Exact dedup on `dedup_key` that keeps 64-bit hashes of the keys, not the texts (about 70 bytes
    of RAM per distinct document). A false duplicate needs a 64-bit collision: at a billion
    documents the chance that any occurs is about 3%, and it costs one document."""

    def __init__(self):
        self.seen: set[int] = set()

    def is_new(self, text: str) -> bool:
        digest = hashlib.blake2b(dedup_key(text).encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "big")
        if h in self.seen:
            return False
        self.seen.add(h)
        return True


def _words(key: str) -> list[str]:
    return _TOKEN.findall(key)


@dataclass
class _ContainmentIndex:
    """Token tuples of evaluation sentences of >= MIN_CONTAINED_WORDS words, keyed by their
    first MIN_CONTAINED_WORDS tokens; `first` holds the first tokens for a cheap pre-filter."""

    by_head: dict[tuple[str, ...], list[tuple[str, ...]]]
    first: set[str]

    @classmethod
    def build(cls, eval_keys: set[str]) -> _ContainmentIndex:
        by_head: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for key in eval_keys:
            if key.count(" ") + 1 >= MIN_CONTAINED_WORDS:
                tokens = tuple(_words(key))
                if len(tokens) >= MIN_CONTAINED_WORDS:
                    by_head.setdefault(tokens[:MIN_CONTAINED_WORDS], []).append(tokens)
        return cls(by_head, {head[0] for head in by_head})

    def found_in(self, tokens: list[str]) -> bool:
        n = MIN_CONTAINED_WORDS
        for start in range(len(tokens) - n + 1):
            if tokens[start] not in self.first:
                continue
            for sentence in self.by_head.get(tuple(tokens[start : start + n]), ()):
                if tuple(tokens[start : start + len(sentence)]) == sentence:
                    return True
        return False


def is_contaminated(text: str, eval_keys: set[str], index: _ContainmentIndex | None = None) -> bool:
    """See `decontaminate`; pass `index` (built once from eval_keys) when testing many texts."""
    key = dedup_key(text)
    if key in eval_keys:
        return True
    if any(segment in eval_keys for segment in split_sentences(key)):
        return True
    if index is None:
        index = _ContainmentIndex.build(eval_keys)
    return bool(index.by_head) and index.found_in(_words(key))


def decontaminate(docs: Iterable[Document], eval_keys: set[str]) -> tuple[list[Document], int]:
    """Remove every document that contains an evaluation sentence. Returns (kept, number removed).

    `eval_keys` are `dedup_key`s of evaluation sentences. On the document's dedup key (NFC,
    whitespace collapsed, casefolded) a document is removed when
    1. the whole document equals an evaluation sentence, or
    2. one of its sentences equals one: the document is split after . ! ? ؟ followed by
       whitespace and each segment is looked up, or
    3. an evaluation sentence of at least 6 (space-separated) words occurs in it as a contiguous
       run of tokens, where a token is a run of word characters or one punctuation mark. So
       "The cat sat on the mat." is found in 'He said: "the cat sat on the mat." Then ...' but
       not in "... the tomcat sat on the mat." (whole tokens only).
    Case 3 indexes evaluation sentences by their first 6 tokens in a dict and slides a 6-token
    window over each document, so the cost is linear in the corpus size, not docs x sentences.
    Shorter evaluation sentences are only caught by 1 and 2 (substring matching of short
    sentences would remove many innocent documents).
    """
    index = _ContainmentIndex.build(eval_keys)
    kept = []
    removed = 0
    for doc in docs:
        if is_contaminated(doc.text, eval_keys, index):
            removed += 1
        else:
            kept.append(doc)
    return kept, removed


def contamination_index(eval_keys: set[str]) -> _ContainmentIndex:
    """Build once, then pass to `is_contaminated` for every document of a stream."""
    return _ContainmentIndex.build(eval_keys)
