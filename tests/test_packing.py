"""Tests of hyperllama_lib.corpus.packing: round trip, dtype choice, corruption detection."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hyperllama_lib.corpus.packing import PackedTokens, PackedTokensError, token_dtype, write_tokens


def test_round_trip_from_generator(tmp_path: Path):
    docs = [[1, 2, 3], [], [4, 5], [6, 7, 8, 9, 10]]
    path = tmp_path / "sub" / "train.bin"
    meta = write_tokens(path, (d for d in docs), vocab_size=2048)
    assert meta["n_tokens"] == 10 and meta["n_docs"] == 4 and meta["dtype"] == "<u2"
    assert json.loads(path.with_suffix(".json").read_text()) == meta
    assert path.stat().st_size == 20
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.bin", "train.json"]  # no temp files left

    packed = PackedTokens(path)
    assert len(packed) == 10 and packed.vocab_size == 2048
    assert packed.num_blocks(3) == 3
    block = packed.block(1, 3)
    assert block.dtype == np.int64 and block.tolist() == [4, 5, 6]
    with pytest.raises(IndexError, match="3 blocks"):
        packed.block(3, 3)
    packed.verify()


def test_dtype_choice(tmp_path: Path):
    assert token_dtype(65536) == np.dtype("<u2")
    assert token_dtype(65537) == np.dtype("<u4")
    meta = write_tokens(tmp_path / "big.bin", [[128_000, 5, 128_255]], vocab_size=128_256)
    assert meta["dtype"] == "<u4"
    assert (tmp_path / "big.bin").read_bytes() == np.array([128_000, 5, 128_255], dtype="<u4").tobytes()
    assert PackedTokens(tmp_path / "big.bin").block(0, 3).tolist() == [128_000, 5, 128_255]


def test_out_of_range_ids_write_nothing(tmp_path: Path):
    with pytest.raises(ValueError, match="out of range"):
        write_tokens(tmp_path / "x.bin", [[1, 2], [70_000]], vocab_size=65536)
    assert list(tmp_path.iterdir()) == []


def test_large_stream_crosses_chunks(tmp_path: Path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50_000, size=int(n)).tolist() for n in rng.integers(1, 5000, size=600)]
    write_tokens(tmp_path / "t.bin", iter(docs), vocab_size=50_000)
    packed = PackedTokens(tmp_path / "t.bin")
    assert np.array_equal(np.asarray(packed.tokens, dtype=np.int64), np.concatenate(docs))


def test_empty_stream(tmp_path: Path):
    meta = write_tokens(tmp_path / "e.bin", [], vocab_size=10)
    assert meta["n_tokens"] == 0
    packed = PackedTokens(tmp_path / "e.bin")
    assert len(packed) == 0 and packed.num_blocks(4) == 0
    packed.verify()


def test_truncated_file_detected(tmp_path: Path):
    path = tmp_path / "t.bin"
    write_tokens(path, [list(range(100))], vocab_size=1000)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(PackedTokensError, match="truncated or stale"):
        PackedTokens(path)


def test_corrupted_file_detected_by_verify(tmp_path: Path):
    path = tmp_path / "t.bin"
    write_tokens(path, [list(range(100))], vocab_size=1000)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    packed = PackedTokens(path)  # same size: only the checksum can tell
    with pytest.raises(PackedTokensError, match="sha256"):
        packed.verify()


def test_missing_sidecar(tmp_path: Path):
    path = tmp_path / "t.bin"
    write_tokens(path, [[1]], vocab_size=10)
    path.with_suffix(".json").unlink()
    with pytest.raises(PackedTokensError, match="t.json not found"):
        PackedTokens(path)
