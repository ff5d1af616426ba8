"""Packed token files: one flat little-endian token stream (`.bin`) plus a JSON sidecar.

Documents are concatenated without separators added here (the tokenizer step prepends BOS to
each document), so a training block may span document boundaries, as in the paper's packing.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..artifacts import atomic
from ..errors import PackedTokensError  # noqa: F401  (defined in errors.py)

_CHUNK_TOKENS = 1 << 20  # tokens buffered before a write
_HASH_CHUNK = 1 << 24  # bytes per read when hashing


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32; always little-endian."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be > 0, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def write_tokens(path: str | Path, docs_token_ids: Iterable[list[int]], vocab_size: int,
                 offsets: bool = False) -> dict:
    """Write documents' token ids as one stream to `path` and its sidecar, atomically.

    `docs_token_ids` may be a generator; at most about a million tokens are held at once.
    Ids outside [0, vocab_size) raise ValueError (and nothing is written). Returns the sidecar
    dict: dtype, n_tokens, n_docs, vocab_size, sha256 (of the .bin); with `offsets`, also the
    document boundaries (see TokenWriter).
    """
    with TokenWriter(path, vocab_size, offsets=offsets) as writer:
        for ids in docs_token_ids:
            writer.add(ids)
    return writer.meta


def offsets_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".idx")


class TokenWriter:
    """Streams documents into a packed token file (`write_tokens`' format), atomically on exit.

    With `offsets`, a sidecar `<name>.idx` gets the little-endian int64 start of every document
    plus the end of the stream (n_docs + 1 numbers), and the JSON sidecar names it with its
    sha256; without, the files are exactly those `write_tokens` always wrote.
    """

    def __init__(self, path: str | Path, vocab_size: int, offsets: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size)
        self.sha = hashlib.sha256()
        self.n_tokens = self.n_docs = 0
        self.pending: list[np.ndarray] = []
        self.pending_len = 0
        self.meta: dict = {}
        # on exit the files are closed, then renamed into place (or deleted after an error)
        self._temps = ExitStack()
        self._files = [self._open(self.path)]
        self.offsets = offsets
        if offsets:
            self._files.append(self._open(offsets_path(self.path)))
            self.offsets_sha = hashlib.sha256()
            self._write_offsets([0])

    def _open(self, path: Path):
        tmp = self._temps.enter_context(atomic.replace_file(path))
        return self._temps.enter_context(open(tmp, "wb"))

    def add(self, ids) -> None:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"document {self.n_docs}: token id out of range [0, {self.vocab_size})")
        self.add_checked(arr)

    def add_checked(self, arr: np.ndarray) -> None:
        """Add one document whose ids are known to be in range (e.g. copied from a token file)."""
        self.pending.append(arr)
        self.pending_len += arr.size
        self.n_docs += 1
        if self.offsets:
            self._write_offsets([self.n_tokens + self.pending_len])
        if self.pending_len >= _CHUNK_TOKENS:
            self._flush()

    def _write_offsets(self, values) -> None:
        data = np.asarray(values, dtype="<i8").tobytes()
        self._files[1].write(data)
        self.offsets_sha.update(data)

    def _flush(self) -> None:
        self.n_tokens += _write_chunk(self._files[0], self.pending, self.dtype, self.sha)
        self.pending, self.pending_len = [], 0

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._temps.__exit__(exc_type, exc, tb)
            return
        with self._temps:
            self._flush()
        self.meta = {"dtype": self.dtype.str, "n_tokens": self.n_tokens, "n_docs": self.n_docs,
                     "vocab_size": self.vocab_size, "sha256": self.sha.hexdigest()}
        if self.offsets:
            self.meta |= {"offsets": offsets_path(self.path).name, "offsets_sha256": self.offsets_sha.hexdigest()}
        atomic.write_text(sidecar_path(self.path), json.dumps(self.meta, indent=1))


def _write_chunk(f, arrays: list[np.ndarray], dtype: np.dtype, sha) -> int:
    if not arrays:
        return 0
    data = np.concatenate(arrays).astype(dtype).tobytes()
    f.write(data)
    sha.update(data)
    return len(data) // dtype.itemsize


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
        except (ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON or a number that is not one
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
        self.offsets = self._load_offsets()

    def _load_offsets(self) -> np.ndarray | None:
        """The document starts (n_docs + 1 int64, memory-mapped) when the file was written with offsets."""
        if "offsets" not in self.meta:
            return None
        path = self.path.parent / self.meta["offsets"]
        n_docs = int(self.meta["n_docs"])
        if not path.is_file() or path.stat().st_size != 8 * (n_docs + 1):
            raise PackedTokensError(f"{path}: missing or not {n_docs + 1} offsets; rebuild {self.path}")
        offsets = np.memmap(path, dtype="<i8", mode="r", shape=(n_docs + 1,))
        if offsets[0] != 0 or offsets[-1] != self.n_tokens:
            raise PackedTokensError(f"{path}: offsets do not span the {self.n_tokens} tokens; rebuild {self.path}")
        return offsets

    @property
    def n_docs(self) -> int:
        return int(self.meta["n_docs"])

    def document(self, i: int) -> np.ndarray:
        """Token ids of document i (a memory-mapped view); needs a file written with offsets."""
        if self.offsets is None:
            raise PackedTokensError(f"{self.path} has no document offsets; write it with offsets=True")
        if not 0 <= i < self.n_docs:
            raise IndexError(f"document {i} out of range: {self.path} has {self.n_docs} documents")
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def doc_lengths(self) -> np.ndarray:
        if self.offsets is None:
            raise PackedTokensError(f"{self.path} has no document offsets; write it with offsets=True")
        return np.diff(self.offsets)

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


def write_mixture(path: str | Path, sources: list[PackedTokens], order: np.ndarray, vocab_size: int) -> dict:
    """Write a stream of documents picked from token files with offsets, in the given order.

    `order` holds global document numbers: source k's document i is `sum(n_docs of sources before k) + i`.
    Only these numbers are in memory; the tokens are copied from the memory-mapped sources.
    """
    if any(s.vocab_size > vocab_size for s in sources):
        raise ValueError(f"a source has a larger vocabulary than {vocab_size}: {[str(s.path) for s in sources]}")
    bounds = np.cumsum([0] + [s.n_docs for s in sources])
    with TokenWriter(path, vocab_size) as writer:
        for g in np.asarray(order, dtype=np.int64):
            k = int(np.searchsorted(bounds, g, side="right")) - 1
            if not 0 <= k < len(sources):
                raise IndexError(f"document number {g} out of range: the sources hold {bounds[-1]} documents")
            writer.add_checked(np.asarray(sources[k].document(int(g - bounds[k])), dtype=np.int64))
    return writer.meta
