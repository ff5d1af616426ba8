"""Packed token files: one flat little-endian token stream (`.bin`) plus a JSON sidecar.

Documents are concatenated without separators added here (the tokenizer step prepends BOS to
each document), so a training block may span document boundaries, as in the paper's packing.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_CHUNK_TOKENS = 1 << 20  # tokens buffered before a write
_HASH_CHUNK = 1 << 24  # bytes per read when hashing


class PackedTokensError(ValueError):
    """A packed token file or its sidecar is missing, truncated or corrupted."""

    def _render_traceback_(self) -> list[str]:  # one line in notebooks
        return [f"PackedTokensError: {self}"]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32; always little-endian."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be > 0, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def _atomic_temp(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def write_tokens(path: str | Path, docs_token_ids: Iterable[list[int]], vocab_size: int) -> dict:
    """Write documents' token ids as one stream to `path` and its sidecar, atomically.

    `docs_token_ids` may be a generator; at most about a million tokens are held at once.
    Ids outside [0, vocab_size) raise ValueError (and nothing is written). Returns the sidecar
    dict: dtype, n_tokens, n_docs, vocab_size, sha256 (of the .bin).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    sha = hashlib.sha256()
    n_tokens = n_docs = 0
    fd, tmp = _atomic_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            pending: list[np.ndarray] = []
            pending_len = 0
            for ids in docs_token_ids:
                arr = np.asarray(ids, dtype=np.int64)
                if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
                    raise ValueError(f"document {n_docs}: token id out of range [0, {vocab_size})")
                pending.append(arr)
                pending_len += arr.size
                n_docs += 1
                if pending_len >= _CHUNK_TOKENS:
                    n_tokens += _write_chunk(f, pending, dtype, sha)
                    pending, pending_len = [], 0
            n_tokens += _write_chunk(f, pending, dtype, sha)
        meta = {
            "dtype": dtype.str,
            "n_tokens": n_tokens,
            "n_docs": n_docs,
            "vocab_size": vocab_size,
            "sha256": sha.hexdigest(),
        }
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _write_json_atomic(sidecar_path(path), meta)
    return meta


def _write_chunk(f, arrays: list[np.ndarray], dtype: np.dtype, sha) -> int:
    if not arrays:
        return 0
    data = np.concatenate(arrays).astype(dtype).tobytes()
    f.write(data)
    sha.update(data)
    return len(data) // dtype.itemsize


def _write_json_atomic(path: Path, obj: dict) -> None:
    fd, tmp = _atomic_temp(path)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class PackedTokens:
    """Read-only view of a packed token file written by `write_tokens`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        side = sidecar_path(self.path)
        if not side.is_file():
            raise PackedTokensError(f"{side} not found: rebuild {self.path} with write_tokens")
        if not self.path.is_file():
            raise PackedTokensError(f"{self.path} not found: rebuild it with write_tokens")
        try:
            self.meta = json.loads(side.read_text())
            self.dtype = np.dtype(self.meta["dtype"])
            self.n_tokens = int(self.meta["n_tokens"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PackedTokensError(f"{side}: unreadable sidecar ({e}); rebuild {self.path}") from None
        expected = self.n_tokens * self.dtype.itemsize
        actual = self.path.stat().st_size
        if actual != expected:
            raise PackedTokensError(
                f"{self.path}: {actual} bytes but the sidecar says {self.n_tokens} tokens x "
                f"{self.dtype.itemsize} bytes = {expected}; the file is truncated or stale, rebuild it"
            )
        if self.n_tokens == 0:  # np.memmap cannot map an empty file
            self.tokens = np.zeros(0, dtype=self.dtype)
        else:
            self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def __len__(self) -> int:
        return self.n_tokens

    def num_blocks(self, block_len: int) -> int:
        """Whole blocks of `block_len` tokens; a shorter tail is not a block."""
        if block_len <= 0:
            raise ValueError(f"block_len must be > 0, got {block_len}")
        return self.n_tokens // block_len

    def block(self, i: int, block_len: int) -> np.ndarray:
        """Tokens [i * block_len, (i + 1) * block_len) as a fresh int64 array."""
        n = self.num_blocks(block_len)
        if not 0 <= i < n:
            raise IndexError(f"block {i} out of range: {self.path} has {n} blocks of {block_len} tokens")
        return np.array(self.tokens[i * block_len : (i + 1) * block_len], dtype=np.int64)

    def verify(self) -> None:
        """Recompute the sha256 of the .bin; PackedTokensError when it differs from the sidecar."""
        sha = hashlib.sha256()
        with open(self.path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                sha.update(chunk)
        if sha.hexdigest() != self.meta["sha256"]:
            raise PackedTokensError(f"{self.path}: sha256 differs from its sidecar: the file is corrupted, rebuild it")
