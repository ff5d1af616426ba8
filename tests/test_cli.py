"""The `hyperllama` console script: help texts, clone, export-llama, one-line errors."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import run_cli
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import hyperllama_lib  # noqa: F401  (registers hyperllama)
from hyperllama_lib.models import modeling

cli = run_cli


def test_console_script_runs_in_a_fresh_process():
    res = subprocess.run([sys.executable, "-m", "hyperllama_lib.cli", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "usage: hyperllama" in res.stdout


@pytest.mark.parametrize("command", [[], ["reproduce"], ["status"], ["plan"], ["clone"], ["export-llama"], ["build-pairs"],
                                     ["merge"], ["fisher"], ["score-pairs"]])
def test_help_explains_each_command(command):
    res = cli(*command, "--help")
    assert res.returncode == 0 and "usage: hyperllama" in res.stdout
    assert len(res.stdout) > 300


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    cfg = modeling.smollm2_config(vocab_size=97, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2,
                                  head_dim=8, intermediate_size=96)
    path = tmp_path_factory.mktemp("m") / "src"
    modeling.new_model(cfg, seed=3).save_pretrained(path)
    return path


def _logits(path, ids):
    with torch.inference_mode():
        return AutoModelForCausalLM.from_pretrained(path).eval()(input_ids=ids).logits


def test_clone_command_preserves_logits_and_exports(llama_dir, tmp_path):
    res = cli("clone", str(llama_dir), str(tmp_path / "x2"), "--factor", "2")
    assert res.returncode == 0, res.stderr
    assert "function preserved" in res.stdout
    config = json.loads((tmp_path / "x2" / "config.json").read_text())
    assert config["model_type"] == "hyperllama" and config["lm_head_normalization_factor"] == 2
    assert config["hidden_size"] == 96 and config["num_key_value_heads"] == 4
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    assert (_logits(llama_dir, ids) - _logits(tmp_path / "x2", ids)).abs().max() <= 1e-5

    res = cli("export-llama", str(tmp_path / "x2"), str(tmp_path / "plain"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "llama"
    assert (_logits(llama_dir, ids) - _logits(tmp_path / "plain", ids)).abs().max() <= 1e-5


def test_clone_refuses_existing_destination(llama_dir, tmp_path):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "file").write_text("x")
    res = cli("clone", str(llama_dir), str(tmp_path / "dst"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


def test_clone_non_llama_and_malformed_folders_are_one_line_errors(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    res = cli("clone", str(tmp_path / "gpt2"), str(tmp_path / "out"))
    assert res.returncode == 2 and "gpt2" in res.stderr and "llama" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    res = cli("clone", str(tmp_path / "broken"), str(tmp_path / "out2"))
    assert res.returncode == 2 and "config.json" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli("clone", str(tmp_path / "missing"), str(tmp_path / "out3"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()
