import json

import pytest

from hyperllama_lib import artifacts
from hyperllama_lib.artifacts import atomic


def test_replace_dir_leaves_nothing_on_failure(tmp_path):
    dst = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic.replace_dir(dst) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("crash")
    assert not dst.exists() and list(tmp_path.iterdir()) == []
    with atomic.replace_dir(dst) as tmp:
        (tmp / "weights").write_text("full")
    assert (dst / "weights").read_text() == "full"


def test_step_runs_once_and_reruns_when_parameters_change(tmp_path):
    calls = []

    def run(params):
        with artifacts.Step(tmp_path, "train", params, log=lambda m: None) as s:
            if s.todo:
                calls.append(params)
                out = tmp_path / "out.txt"
                atomic.write_text(out, "x")
                s.outputs = [out]
        return s

    run({"lr": 1})
    run({"lr": 1})
    assert len(calls) == 1
    run({"lr": 2})
    assert len(calls) == 2
    (tmp_path / "out.txt").unlink()  # an output went missing: redo
    run({"lr": 2})
    assert len(calls) == 3
    entry = json.loads((tmp_path / "manifest.json").read_text())["steps"]["train"]
    assert entry["params"] == {"lr": 2} and entry["outputs"] == ["out.txt"] and entry["code_version"]


def test_failed_step_is_not_recorded(tmp_path):
    with pytest.raises(ValueError):
        with artifacts.Step(tmp_path, "s", {}, log=lambda m: None):
            raise ValueError
    assert artifacts.Manifest(tmp_path).entry("s") is None


def test_upstream_change_invalidates(tmp_path):
    a = artifacts.Step(tmp_path, "b", {}, ["fp1"], log=lambda m: None)
    b = artifacts.Step(tmp_path, "b", {}, ["fp2"], log=lambda m: None)
    assert a.fp != b.fp
