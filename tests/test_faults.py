"""Faults tried on purpose: each is detected before use, reported in one clear line, and redone or
refused (README, "Faults we tried")."""
from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from test_resume import tiny_model, tiny_params, tiny_stage, toy_tokenizer

from hyperllama_lib import artifacts, corpus, training
from hyperllama_lib.artifacts import atomic, checkpoints
from hyperllama_lib.corpus import packing
from hyperllama_lib.corpus import tokenizer as tok_lib
from hyperllama_lib.errors import DataError
from hyperllama_lib.models import modeling
from hyperllama_lib.models.modeling import ModelFolderError
from hyperllama_lib.params import ParamError, load_params

QUIET = dict(log=lambda m: None)


# ---------------------------------------------------------------- training faults


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model = tiny_model()
    forward, calls = model.forward, {"n": 0}

    def nan_from_step_7(*args, **kwargs):
        out = forward(*args, **kwargs)
        if model.training:
            calls["n"] += 1
            if calls["n"] >= 7:
                out.loss = out.loss * float("nan")
        return out

    model.forward = nan_from_step_7
    out = tmp_path / "run"
    with pytest.raises(training.NonFiniteLossError, match=r"loss is nan at step 7; .*step_000004\) is kept"):
        training.train(model, toy_tokenizer(), tiny_stage(tmp_path, out, 12), tiny_params(tmp_path), **QUIET)
    assert (out / "checkpoints" / "step_000004" / "model.safetensors").is_file()
    assert (out / "resume" / "step_000004" / "state.json").is_file()
    assert not (out / "final").exists()
    weights = modeling.load_model(out / "checkpoints" / "step_000004").state_dict()
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_infinite_gradient_stops_before_the_update(tmp_path):
    model = tiny_model()
    model.model.embed_tokens.weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(training.NonFiniteLossError, match="gradient norm is inf at step 1; .*no checkpoint was saved yet"):
        training.train(model, toy_tokenizer(), tiny_stage(tmp_path, tmp_path / "run", 3), tiny_params(tmp_path), **QUIET)


def test_less_text_than_one_batch_is_a_clear_error(tmp_path):
    packing.write_tokens(tmp_path / "short.bin", [list(range(3, 60)) * 5], 64)  # 4 blocks, batch is 8
    stage = training.Stage("1x-fao", tmp_path / "short.bin", tmp_path / "run")
    with pytest.raises(training.TooLittleDataError, match="stage 1x-fao: 4 blocks of 64 tokens are fewer than one batch of 8"):
        training.train(tiny_model(), toy_tokenizer(), stage, tiny_params(tmp_path), **QUIET)
    assert not (tmp_path / "run").exists()


def test_free_disk_below_need_stops_before_training(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**5, 10**5))
    with pytest.raises(training.DiskSpaceError, match=r"stage t needs about .* MiB free .* only 0.1 MiB are free"):
        training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp_path, tmp_path / "run"), tiny_params(tmp_path),
                       **QUIET)
    assert not (tmp_path / "run").exists()  # nothing written


def test_disk_full_while_saving_is_a_clear_error_and_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tiny_model()), "save_pretrained", full)
    out = tmp_path / "run"
    with pytest.raises(training.DiskSpaceError, match="disk full while writing .*step_000004 at step 4"):
        training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp_path, out, 6), tiny_params(tmp_path), **QUIET)
    assert list((out / "checkpoints").iterdir()) == []


# ---------------------------------------------------------------- corrupted inputs


def write_gz(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(data)


def test_empty_corpus_files(tmp_path):
    write_gz(tmp_path / "text/isl/a.txt.gz", b"")
    with pytest.raises(DataError, match=r"text/isl: every \*\.txt\.gz file is empty"):
        corpus.read_local_corpus(tmp_path, "isl")
    write_gz(tmp_path / "text/isl/b.txt.gz", b"Ein lina.\n")  # an empty file beside others adds nothing
    assert [d.text for d in corpus.read_local_corpus(tmp_path, "isl")] == ["Ein lina."]


def test_truncated_gzip_corpus_names_the_file(tmp_path):
    write_gz(tmp_path / "text/isl/a.txt.gz", "".join(f"Setning {i}.\n" for i in range(5000)).encode())
    path = tmp_path / "text/isl/a.txt.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"a\.txt\.gz:\d+: truncated or damaged gzip file"):
        corpus.read_local_corpus(tmp_path, "isl")


def test_truncated_jsonl_names_file_and_line(tmp_path):
    good = json.dumps({"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep."})
    write_gz(tmp_path / "blimp/p.jsonl.gz", (good + "\n" + good[:25]).encode())
    with pytest.raises(DataError, match=r"p\.jsonl\.gz:2: not valid JSON"):
        corpus.blimp_sentences(tmp_path)


def test_truncated_tsv_names_file_and_line(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("sen\twrong_sen\tphenomenon\nA cat sleeps.\tA cat sleep.\tSV-#\nThe dogs run.\tThe dogs")
    with pytest.raises(DataError, match=r"data\.tsv:3: not 3 tab-separated columns .* truncated"):
        corpus.pair_file_sentences(path)


# ---------------------------------------------------------------- corrupted artifacts


@pytest.fixture
def model_dir(tmp_path) -> Path:
    path = tmp_path / "run" / "model"
    tiny_model().save_pretrained(path)
    toy_tokenizer().save_pretrained(path)
    return path


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_header_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[20] = ord("}")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda d: truncate(d / "model.safetensors"), "truncated or corrupted safetensors file"),
    (lambda d: flip_header_byte(d / "model.safetensors"), "truncated or corrupted safetensors file"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer incomplete, no tokenizer.json or tokenizer.model"),
])
def test_load_model_refuses_damaged_folders_in_one_line(model_dir, damage, message):
    modeling.load_model(model_dir, require_tokenizer=True)
    damage(model_dir)
    with pytest.raises(ModelFolderError, match=message) as e:
        modeling.load_model(model_dir)
    assert "\n" not in str(e.value)


def test_load_tokenizer_missing_or_damaged(model_dir):
    (model_dir / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="unreadable tokenizer"):
        tok_lib.load_tokenizer(model_dir)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelFolderError, match="no tokenizer.json"):
        tok_lib.load_tokenizer(model_dir)
    with pytest.raises(ModelFolderError, match="tokenizer incomplete"):
        checkpoints.check_model_folder(model_dir)
    (model_dir / checkpoints.TOKENIZER_CONFIG).unlink()
    checkpoints.check_model_folder(model_dir)  # weights only: fine unless a tokenizer is required
    with pytest.raises(ModelFolderError, match="tokenizer incomplete"):
        checkpoints.check_model_folder(model_dir, require_tokenizer=True)


def edit_manifest(run: Path) -> None:
    data = json.loads((run / "manifest.json").read_text())
    data["steps"]["make"]["hashes"]["model"]["config.json"][1] = "0" * 64
    (run / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("damage, problem", [
    (lambda run: truncate(run / "model" / "model.safetensors"), "model.safetensors has .* bytes, the manifest says"),
    (lambda run: flip_byte(run / "model" / "model.safetensors"), r"model.safetensors differs from the manifest \(sha256\)"),
    (lambda run: (run / "model" / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda run: (run / "model" / "extra.bin").write_bytes(b"x"), "extra.bin is not in the manifest"),
    (edit_manifest, r"config.json differs from the manifest"),
    (lambda run: shutil.rmtree(run / "model"), "model is missing"),
])
def test_damaged_output_is_detected_and_the_step_redone(model_dir, damage, problem):
    run, calls, logs = model_dir.parent, [], []

    def step():
        with artifacts.Step(run, "make", {"x": 1}, log=logs.append) as s:
            if s.todo:
                calls.append(1)
                shutil.rmtree(model_dir, ignore_errors=True)
                tiny_model().save_pretrained(model_dir)
                toy_tokenizer().save_pretrained(model_dir)
                s.outputs = [model_dir]

    step()
    step()
    assert len(calls) == 1
    damage(run)
    logs.clear()
    step()
    assert len(calls) == 2
    assert any(m.startswith("[make] the manifest does not match the files: ") and m.endswith("; redoing the step")
               for m in logs), logs
    assert re.search(problem, " ".join(logs)), logs
    step()
    assert len(calls) == 2  # redone and recorded: up to date again


def test_big_files_skip_on_size_and_mtime_unless_full_verification(tmp_path, monkeypatch):
    f = tmp_path / "big.bin"
    f.write_bytes(b"a" * 1000)
    recorded = artifacts.tree_hashes(f)
    st = f.stat()
    f.write_bytes(b"b" * 1000)  # same size; restore the mtime, as a silent disk error would leave it
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "differs" in artifacts.verify_tree(f, recorded)  # small: always hashed
    monkeypatch.setattr(artifacts.manifest, "FULL_HASH_MAX_BYTES", 100)
    assert artifacts.verify_tree(f, recorded) is None  # big: size + mtime only
    monkeypatch.setenv(artifacts.VERIFY_ENV, "full")
    assert "differs" in artifacts.verify_tree(f, recorded)


def test_unreadable_manifest_redoes_every_step(tmp_path):
    out = tmp_path / "out.txt"
    calls = []

    def step():
        with artifacts.Step(tmp_path, "s", {}, log=lambda m: None) as s:
            if s.todo:
                calls.append(1)
                atomic.write_text(out, "x")
                s.outputs = [out]

    step()
    (tmp_path / "manifest.json").write_text('{"steps": {"s": {"fingerp')  # truncated
    with pytest.warns(UserWarning, match="manifest.json is unreadable .* every step will be redone"):
        step()
    assert len(calls) == 2 and (tmp_path / "manifest.json.corrupt").exists()
    assert artifacts.Manifest(tmp_path).entry("s")["outputs"] == ["out.txt"]


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("key", ["run_dir", "publish_dir"])
def test_relative_output_paths_cannot_leave_the_repository(key):
    with pytest.raises(ParamError, match=f"{key} '../../etc' leads outside the repository"):
        load_params("smoke", {key: "../../etc"}, need_data=False)
    load_params("smoke", {key: "runs/elsewhere"}, need_data=False)


def test_outputs_outside_the_run_directory_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lies outside the run directory"):
        with artifacts.Step(tmp_path / "run", "s", {}, log=lambda m: None) as s:
            s.outputs = [tmp_path / "run" / ".." / "elsewhere.txt"]


def test_retention_parameters_are_checked():
    with pytest.raises(ParamError, match="keep_checkpoints must be >= 0"):
        load_params("smoke", {"keep_checkpoints": -1}, need_data=False)
    with pytest.raises(ParamError, match="keep_resume_states >= 1"):
        load_params("smoke", {"keep_resume_states": 0}, need_data=False)
