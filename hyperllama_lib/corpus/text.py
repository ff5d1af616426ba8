"""Documents and the text keys every other corpus module compares on."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_WHITESPACE = re.compile(r"\s+")
# A sentence ends at . ! ? or the Arabic question mark, followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?\u061f])\s+")


@dataclass
class Document:
    text: str
    lang: str
    source: str


def normalize_text(s: str) -> str:
    """NFC, every run of whitespace (newlines included) becomes one space, stripped."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", s)).strip()


def dedup_key(s: str) -> str:
    return normalize_text(s).casefold()


def split_sentences(text: str) -> list[str]:
    """Split at sentence-final punctuation (. ! ? ؟) followed by whitespace."""
    return [s for s in _SENTENCE_END.split(text) if s]
