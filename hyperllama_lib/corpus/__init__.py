"""Data building blocks: documents, cleaning, splits, code, Hub streams, UniMax, tokenizer, packed tokens."""
from __future__ import annotations

from .documents import *  # noqa: F401,F403
