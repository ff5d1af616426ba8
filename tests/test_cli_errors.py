"""Every error a user can cause is one line from every `hyperllama` command: exit status 2, the line
`hyperllama <command>: <ErrorClass>: <message>` on stderr, no traceback. Each command is driven into
each error class it can raise, through the real command (in-process, tiny models and files)."""
from __future__ import annotations

import contextlib
import errno
import inspect
import json
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_resume import toy_tokenizer  # word-level, 64 ids, BOS 1, EOS 2
from tqdm.auto import tqdm

from hyperllama_lib import artifacts, cli, errors
from hyperllama_lib.corpus import packing
from hyperllama_lib.models import modeling
from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import layout, runner, upscale
from hyperllama_lib.training import loop

VOCAB = 64
QUIET = dict(log=lambda message: None)


@pytest.fixture(autouse=True)
def no_training_bar(monkeypatch):
    """Training draws a progress bar on stderr; it is progress, not part of an error's line."""
    monkeypatch.setattr(loop, "tqdm", lambda *args, **kwargs: tqdm(*args, **{**kwargs, "disable": True}))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    cfg = modeling.smollm2_config(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                                  head_dim=8, intermediate_size=32)
    path = tmp_path_factory.mktemp("cli_errors") / "model"
    modeling.new_model(cfg, seed=0).save_pretrained(path)
    return path


class Case:
    """What a provocation may use: a fresh folder, monkeypatch, the tiny model, a lock held until the end."""

    def __init__(self, tmp: Path, monkeypatch, model: Path, stack: contextlib.ExitStack):
        self.tmp, self.monkeypatch, self.model, self.stack = tmp, monkeypatch, model, stack
        (tmp / "data" / "text").mkdir(parents=True)  # what load_params checks of a data folder

    @property
    def overrides(self) -> dict:
        return {"run_dir": str(self.tmp / "run"), "data_dir": str(self.tmp / "data")}

    def scale_args(self) -> list:
        return ["--scale", "smoke", "--run-dir", self.tmp / "run", "--set", f"data_dir={self.tmp / 'data'}"]

    def fake_data(self, seed_tokens: int = 40 * 64, lang_tokens: int = 40 * 64, base: bool = True):
        """01_data's outputs as upscale and cpt read them (plan, tokenizer, streams, held-out text), and
        with `base` 02_upscale's 1x base, recorded in the manifest without doing their work."""
        p = load_params("smoke", self.overrides)
        dp = layout.of(p).data
        toy_tokenizer().save_pretrained(dp.tokenizer)
        rng = np.random.default_rng(0)
        for name, n in {"seed": seed_tokens, "base": 40 * 64, "est": lang_tokens}.items():
            packing.write_tokens(dp.train(name), [rng.integers(3, VOCAB, size=n).tolist()], VOCAB)
        for lang in ("eng", "est"):
            artifacts.atomic.write_text(dp.heldout(lang), "t3 t4 t5\nt6 t7\n")
        artifacts.atomic.write_json(dp.plan, {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2,
                                              "seed_steps": 4, "base_steps": 4, "cpt_steps": {"est": 4}})
        with artifacts.Step(p.run_path, layout.DATA_STEP, {"fake": True}, **QUIET) as s:
            s.outputs = [dp.root]
        if base:
            folder = layout.of(p).base_model("1x")
            modeling.new_model(upscale.model_config(p, VOCAB, 1, 2), seed=0).save_pretrained(folder)
            with artifacts.Step(p.run_path, layout.RunLayout.base_step("1x"), {"fake": True}, **QUIET) as s:
                s.outputs = [folder]
        return p

    def step_args(self) -> list:
        return [*self.scale_args(), "--set", "checkpoint_every_tokens=1000000"]

    def disk_full(self):
        usage = namedtuple("usage", "total used free")
        self.monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 10**5, 10**5))

    def offline(self):
        from huggingface_hub.errors import LocalEntryNotFoundError

        def snapshot_download(repo_id, **kwargs):
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                          "has been disabled.\nTo enable hf.co look-ups, set HF_HUB_OFFLINE=0.")
        self.monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)

    def file(self, name: str, text: str = "") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def tokens(self, name: str, ids: list[int], vocab: int = VOCAB) -> Path:
        packing.write_tokens(self.tmp / name, [ids], vocab)
        return self.tmp / name


# -- provocations: each prepares what it needs and returns the command line -------------------------

def reproduce_unknown_key(c):
    return ["reproduce", *c.scale_args(), "--set", "lrr=0.1"]


def reproduce_run_dir_busy(c):
    c.stack.enter_context(runner.run_lock(load_params("smoke", c.overrides)))
    return ["reproduce", *c.scale_args()]


def status_value_not_yaml(c):
    return ["status", *c.scale_args(), "--set", "langs=[est"]


def status_no_step_matches(c):
    return ["status", *c.scale_args(), "--only", "nothing/*"]


def plan_unknown_language(c):
    return ["plan", *c.scale_args(), "--langs", "klingon"]


def released_unknown_language(c):
    return ["released", "--langs", "klingon"]


def released_bad_pattern(c):
    return ["released", "--set", "released_repo_pattern=liu-nlp/{model}"]


def upscale_bad_value(c):
    return ["upscale", *c.step_args(), "--set", "seq_len=0"]


def upscale_before_data(c):
    return ["upscale", *c.step_args()]


def upscale_truncated_stream(c):
    p = c.fake_data()
    path = layout.of(p).data.train("seed")
    path.write_bytes(path.read_bytes()[:100])
    return ["upscale", *c.step_args()]


def upscale_stream_shorter_than_a_block(c):
    c.fake_data(seed_tokens=10)
    return ["upscale", *c.step_args()]


def upscale_diverging_lr(c):
    c.fake_data()
    return ["upscale", *c.step_args(), "--set", "lr=1e30"]


def upscale_disk_full(c):
    c.fake_data()
    c.disk_full()
    return ["upscale", *c.step_args()]


def upscale_release_offline(c):
    c.fake_data()
    c.offline()
    return ["upscale", *c.step_args(), "--set", "models_from=hub"]


def cpt_unknown_language(c):
    return ["cpt", *c.step_args(), "--lang", "klingon"]


def cpt_before_upscale(c):
    c.fake_data(base=False)
    return ["cpt", *c.step_args(), "--lang", "est", "--setups", "1x"]


def cpt_language_without_data(c):
    c.fake_data()
    return ["cpt", *c.step_args(), "--lang", "isl", "--setups", "1x"]


def cpt_damaged_base(c):
    p = c.fake_data()
    (layout.of(p).base_model("1x") / "config.json").unlink()
    return ["cpt", *c.step_args(), "--lang", "est", "--setups", "1x"]


def cpt_stream_shorter_than_a_block(c):
    c.fake_data(lang_tokens=10)
    return ["cpt", *c.step_args(), "--lang", "est", "--setups", "1x"]


def cpt_diverging_lr(c):
    c.fake_data()
    return ["cpt", *c.step_args(), "--lang", "est", "--setups", "1x", "--set", "lr=1e30"]


def cpt_disk_full(c):
    c.fake_data()
    c.disk_full()
    return ["cpt", *c.step_args(), "--lang", "est", "--setups", "1x"]


def cpt_release_offline(c):
    c.fake_data()
    c.offline()
    return ["cpt", *c.step_args(), "--lang", "est", "--setups", "1x", "--set", "models_from=hub"]


def clone_missing_source(c):
    return ["clone", c.tmp / "missing", c.tmp / "out"]


def clone_zero_factor(c):
    return ["clone", c.model, c.tmp / "out", "--factor", "0"]


def clone_destination_not_empty(c):
    (c.tmp / "dst").mkdir()
    c.file("dst/keep.txt", "x")
    return ["clone", c.model, c.tmp / "dst"]


def export_not_a_llama(c):
    (c.tmp / "gpt2").mkdir()
    c.file("gpt2/config.json", json.dumps({"model_type": "gpt2"}))
    return ["export-llama", c.tmp / "gpt2", c.tmp / "out"]


def export_destination_inside_a_file(c):
    return ["export-llama", c.model, c.file("plain.txt") / "out"]


def merge_unknown_method(c):
    return ["merge", "--method", "average", "--out", c.tmp / "out", c.model, c.model]


def merge_damaged_weights(c):
    shutil.copytree(c.model, c.tmp / "damaged")
    (c.tmp / "damaged" / "model.safetensors").write_bytes(b"\xff" * 64)
    return ["merge", "--method", "linear", "--out", c.tmp / "out", c.model, c.tmp / "damaged"]


def merge_output_exists(c):
    (c.tmp / "out").mkdir()
    return ["merge", "--method", "linear", "--out", c.tmp / "out", c.model, c.model]


def fisher_missing_model(c):
    return ["fisher", c.tmp / "missing", c.tokens("t.bin", list(range(3, 60)) * 5), "--out", c.tmp / "f.safetensors",
            "--seq-len", "16"]


def fisher_missing_tokens(c):
    return ["fisher", c.model, c.tmp / "missing.bin", "--out", c.tmp / "f.safetensors"]


def fisher_tokens_shorter_than_a_window(c):
    return ["fisher", c.model, c.tokens("t.bin", list(range(3, 60))), "--out", c.tmp / "f.safetensors"]


def fisher_tokens_of_another_vocabulary(c):
    ids = np.random.default_rng(0).integers(0, 1000, 300).tolist()
    return ["fisher", c.model, c.tokens("t.bin", ids, vocab=1000), "--out", c.tmp / "f.safetensors",
            "--seq-len", "16", "--n-tokens", "64"]


def score_malformed_pairs(c):
    return ["score-pairs", c.model, c.file("pairs.jsonl", "{oops\n")]


def score_missing_pairs(c):
    return ["score-pairs", c.model, c.tmp / "absent.jsonl"]


def score_missing_model(c):
    record = {"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep.", "UID": "p", "pairID": "0"}
    return ["score-pairs", c.tmp / "missing", c.file("pairs.jsonl", json.dumps(record) + "\n")]


def score_unknown_device(c):
    record = {"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep.", "UID": "p", "pairID": "0"}
    return ["score-pairs", c.model, c.file("pairs.jsonl", json.dumps(record) + "\n"), "--device", "abacus"]


def build_pairs_malformed_conllu(c):
    return ["build-pairs", "--lang", "xx", "--out", c.tmp / "data.tsv", c.file("bad.conllu", "1\tdog\n\n")]


def build_pairs_missing_conllu(c):
    return ["build-pairs", "--lang", "xx", "--out", c.tmp / "data.tsv", c.tmp / "missing.conllu"]


def lab_without_jupyterlab(c):
    c.monkeypatch.setitem(sys.modules, "jupyterlab", None)  # an environment without the lab extra
    return ["lab", "--no-browser"]


CASES = [  # command, provocation, the error class its one line names
    ("lab", lab_without_jupyterlab, "JupyterSetupError"),
    ("reproduce", reproduce_unknown_key, "ParamError"),
    ("reproduce", reproduce_run_dir_busy, "RunBusyError"),
    ("status", status_value_not_yaml, "ParamError"),
    ("status", status_no_step_matches, "ParamError"),
    ("plan", plan_unknown_language, "ParamError"),
    ("released", released_unknown_language, "ParamError"),
    ("released", released_bad_pattern, "ParamError"),
    ("upscale", upscale_bad_value, "ParamError"),
    ("upscale", upscale_before_data, "MissingInputError"),
    ("upscale", upscale_truncated_stream, "PackedTokensError"),
    ("upscale", upscale_stream_shorter_than_a_block, "TooLittleDataError"),
    ("upscale", upscale_diverging_lr, "NonFiniteLossError"),
    ("upscale", upscale_disk_full, "DiskSpaceError"),
    ("upscale", upscale_release_offline, "ReleasedModelError"),
    ("cpt", cpt_unknown_language, "ParamError"),
    ("cpt", cpt_before_upscale, "MissingInputError"),
    ("cpt", cpt_language_without_data, "MissingInputError"),
    ("cpt", cpt_damaged_base, "ModelFolderError"),
    ("cpt", cpt_stream_shorter_than_a_block, "TooLittleDataError"),
    ("cpt", cpt_diverging_lr, "NonFiniteLossError"),
    ("cpt", cpt_disk_full, "DiskSpaceError"),
    ("cpt", cpt_release_offline, "ReleasedModelError"),
    ("clone", clone_missing_source, "ModelFolderError"),
    ("clone", clone_zero_factor, "ParamError"),
    ("clone", clone_destination_not_empty, "FileExistsError"),
    ("export-llama", export_not_a_llama, "ModelFolderError"),
    ("export-llama", export_destination_inside_a_file, "FileExistsError"),
    ("merge", merge_unknown_method, "MergeError"),
    ("merge", merge_damaged_weights, "ModelFolderError"),
    ("merge", merge_output_exists, "FileExistsError"),
    ("fisher", fisher_missing_model, "ModelFolderError"),
    ("fisher", fisher_missing_tokens, "PackedTokensError"),
    ("fisher", fisher_tokens_shorter_than_a_window, "DataError"),
    ("fisher", fisher_tokens_of_another_vocabulary, "DataError"),
    ("score-pairs", score_malformed_pairs, "PairsFormatError"),
    ("score-pairs", score_missing_pairs, "FileNotFoundError"),
    ("score-pairs", score_missing_model, "ModelFolderError"),
    ("score-pairs", score_unknown_device, "ParamError"),
    ("build-pairs", build_pairs_malformed_conllu, "ConlluError"),
    ("build-pairs", build_pairs_missing_conllu, "FileNotFoundError"),
]


@pytest.mark.parametrize("command, provoke, error", CASES, ids=[case[1].__name__ for case in CASES])
def test_user_errors_are_one_line_from_every_command(command, provoke, error, tmp_path, monkeypatch, model_dir):
    with contextlib.ExitStack() as stack:
        argv = provoke(Case(tmp_path, monkeypatch, model_dir, stack))
        assert argv[0] == command
        res = run_cli(*argv)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"hyperllama {command}: {error}: "), res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_every_command_is_driven_into_its_errors():
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {command for command, _, _ in CASES}


@pytest.mark.parametrize("bug", [KeyError("steps"), RuntimeError("jobs wait on jobs not in the grid"),
                                 OSError(errno.EIO, "Input/output error")], ids=lambda bug: type(bug).__name__)
def test_anything_else_keeps_its_traceback(bug, monkeypatch):
    def cmd_plan(args):
        raise bug

    monkeypatch.setattr(cli, "cmd_plan", cmd_plan)
    with pytest.raises(type(bug)):
        cli.main(["plan"])


USER_ERRORS = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.HyperllamaError)]


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_class_renders_as_one_line(cls):
    error = cls("first line\n  second line\n\tthird")
    assert error._render_traceback_() == [f"{cls.__name__}: first line second line third"]
    assert cls("")._render_traceback_() == [cls.__name__]
    if cls is not errors.HyperllamaError:  # `except ValueError` (or RuntimeError, OSError) callers still catch it
        assert any(base.__module__ == "builtins" and base is not Exception for base in cls.__mro__[1:-2])
