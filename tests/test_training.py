import numpy as np
import pytest
import torch

from hyperllama_lib import training
from hyperllama_lib.corpus import packing
from hyperllama_lib.models import modeling
from hyperllama_lib.params import load_params


def toy_tokenizer():
    """Word-level tokenizer over t0..t63 (t1 = BOS), enough for the held-out bpb during training."""
    from tokenizers import Tokenizer
    from tokenizers import models as tm
    from transformers import PreTrainedTokenizerFast
    vocab = {f"t{i}": i for i in range(64)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tm.WordLevel(vocab, unk_token="t0")),
                                   bos_token="t1", eos_token="t2")


def test_schedule_warmup_constant_linear_decay_to_zero():
    f = [training.lr_factor(s, 100, 10, 0.2) for s in range(100)]
    assert f[0] < f[5] < f[9] <= 1.0  # warm-up
    assert all(x == 1.0 for x in f[10:80])  # constant
    assert all(a > b for a, b in zip(f[80:], f[81:]))  # decay over the last 20%
    assert 0 < f[-1] < 0.1 and training.lr_factor(100, 100, 10, 0.2) == 0.0


def test_training_reduces_loss_and_writes_checkpoints(tmp_path, data_dir):
    p = load_params("smoke", {"run_dir": str(tmp_path), "checkpoint_every_tokens": 8 * 64 * 5})
    rng = np.random.default_rng(0)
    # a learnable stream: a repeated short pattern
    pattern = rng.integers(3, 60, size=32).tolist()
    packing.write_tokens(tmp_path / "s.bin", [pattern * 100], 64)
    cfg = modeling.smollm2_config(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  head_dim=8, intermediate_size=64, max_position_embeddings=128)
    model = modeling.new_model(cfg, seed=0)
    tok = toy_tokenizer()
    stage = training.Stage("t", tmp_path / "s.bin", tmp_path / "run", steps=12, eval_texts={"eng": ["t3 t4"]})
    summary = training.train(model, tok, stage, p, log=lambda m: None)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    first, last = float(log[1].split(",")[2]), float(log[-1].split(",")[2])
    assert last < first
    assert summary["steps"] == 12 and summary["tokens"] == 12 * 8 * 64
    assert summary["flops_total"] == 6 * modeling.count_parameters(model)["total"] * summary["tokens"]
    assert (tmp_path / "run" / "checkpoints" / "step_000005" / "model.safetensors").exists()
    assert (tmp_path / "run" / "final" / "config.json").exists()
    curve = (tmp_path / "run" / "curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 4  # steps 0, 5, 10, 12


def test_curve_interval_is_independent_of_checkpoint_interval(tmp_path, data_dir):
    p = load_params("smoke", {"run_dir": str(tmp_path), "checkpoint_every_tokens": 8 * 64 * 6,
                              "train_eval_every_tokens": 8 * 64 * 2})
    packing.write_tokens(tmp_path / "s.bin", [list(range(3, 60)) * 80], 64)
    cfg = modeling.smollm2_config(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
                                  head_dim=8, intermediate_size=64, max_position_embeddings=128)
    tok = toy_tokenizer()
    stage = training.Stage("t", tmp_path / "s.bin", tmp_path / "run", steps=13, eval_texts={"eng": ["t3 t4"]})
    training.train(modeling.new_model(cfg, seed=0), tok, stage, p, log=lambda m: None)
    steps = [int(line.split(",")[1]) for line in (tmp_path / "run" / "curve.csv").read_text().splitlines()[1:]]
    assert steps == [0, 2, 4, 6, 8, 10, 12, 13]
    assert sorted(d.name for d in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_000006", "step_000012"]


def test_too_little_data_is_a_clear_error(tmp_path, data_dir):
    p = load_params("smoke", {"run_dir": str(tmp_path)})
    packing.write_tokens(tmp_path / "s.bin", [[1, 2, 3]], 64)
    stage = training.Stage("t", tmp_path / "s.bin", tmp_path / "run")
    with pytest.raises(ValueError, match="fewer than"):
        training.train(None, None, stage, p)


def test_chunk_code_cuts_at_top_level_lines():
    from hyperllama_lib.corpus import Document, chunk_code
    text = "import os\n\ndef a():\n    return 1\n\n\ndef b():\n    x = (1,\n2)\n    return x\n\nclass C:\n    pass\n"
    pieces = chunk_code([Document(text, "code", "m.py")], max_chars=10)
    assert [d.source for d in pieces] == ["m.py#0", "m.py#1", "m.py#2", "m.py#3"]
    assert pieces[1].text.startswith("def a") and pieces[2].text.startswith("def b") and "2)" in pieces[2].text
    assert "".join(d.text for d in pieces).replace("\n", "") == text.replace("\n", "")


def _fp16_run(tmp_path, name: str, steps: int = 3, **overrides):
    p = load_params("smoke", {"run_dir": str(tmp_path), "checkpoint_every_tokens": 10**9, **overrides},
                    need_data=False)
    if not (tmp_path / "s.bin").exists():
        packing.write_tokens(tmp_path / "s.bin", [np.random.default_rng(0).integers(3, 64, 8 * 64 * 4).tolist()], 64)
    cfg = modeling.smollm2_config(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  head_dim=8, intermediate_size=64, max_position_embeddings=128)
    model, lines = modeling.new_model(cfg, seed=0), []
    stage = training.Stage("t", tmp_path / "s.bin", tmp_path / name, steps=steps, eval_texts={"eng": ["t3 t4"]})
    summary = training.train(model, toy_tokenizer(), stage, p, log=lines.append)
    rows = [r.split(",") for r in (tmp_path / name / "train_log.csv").read_text().splitlines()]
    return model, summary, [dict(zip(rows[0], r)) for r in rows[1:]], lines


def test_fp16_loss_scaling_tracks_fp32_and_logs_skipped_updates(tmp_path, monkeypatch):
    _, _, fp32, _ = _fp16_run(tmp_path, "fp32", precision="fp32")
    _, summary, fp16, _ = _fp16_run(tmp_path, "fp16", precision="fp16")
    assert summary["skipped_steps"] == 0 and all(r["skipped"] == "0" for r in fp16)
    assert np.allclose([float(r["loss"]) for r in fp16], [float(r["loss"]) for r in fp32], rtol=1e-2)
    # a loss scale so large that fp16 gradients overflow: every update is skipped and the scale halves
    monkeypatch.setattr(training.loop, "FP16_INIT_SCALE", 2.0 ** 40)
    model, summary, rows, lines = _fp16_run(tmp_path, "overflow", precision="fp16")
    assert summary["skipped_steps"] == 3 and [r["skipped"] for r in rows] == ["1", "1", "1"]
    assert [float(r["loss_scale"]) for r in rows] == [2.0 ** 40, 2.0 ** 39, 2.0 ** 38]
    assert sum("fp16 gradient overflow at step" in line for line in lines) == 3
    untouched = modeling.new_model(model.config, seed=0).state_dict()
    assert all(torch.equal(t, untouched[k]) for k, t in model.state_dict().items())


def test_compiled_training_saves_plain_parameter_names(tmp_path, monkeypatch):
    import functools

    from safetensors import safe_open
    compiled = []
    # the eager backend keeps the test fast on CPU (inductor would build C++ for minutes); the wrapper
    # and its `_orig_mod.` names are the same as with any backend
    eager = functools.partial(torch.compile, backend="eager")
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or eager(m, **kw))
    _, _, plain, _ = _fp16_run(tmp_path, "plain", steps=2, compile="false")
    assert not compiled
    _, _, rows, _ = _fp16_run(tmp_path, "compiled", steps=2, compile="true")
    assert len(compiled) == 1
    assert [r["loss"] for r in rows] == [r["loss"] for r in plain]
    with safe_open(tmp_path / "compiled" / "final" / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert names and not [n for n in names if "_orig_mod" in n]


@pytest.mark.parametrize("precision, expected", [("auto", "fp32"), ("fp16", "fp16"), ("bf16", "bf16")])
def test_held_out_evaluation_runs_in_the_stages_precision(tmp_path, monkeypatch, precision, expected):
    """Training's held-out bits per byte use the stage's precision (scoring's own "auto" would pick bf16
    on every GPU, which a T4 training in fp16 does not have)."""
    from hyperllama_lib import evaluation

    seen, real = [], evaluation.bits_per_byte
    monkeypatch.setattr(evaluation, "bits_per_byte",
                        lambda *a, **kw: seen.append(kw["dtype"]) or real(*a, **kw))
    _fp16_run(tmp_path, precision, steps=1, precision=precision)
    assert seen and set(seen) == {expected}
