import numpy as np
import pytest

from hyperllama_lib import modeling, packing, training
from hyperllama_lib.data import repeat_epochs, replay_counts
from hyperllama_lib.params import load_params


def toy_tokenizer():
    """Word-level tokenizer over t0..t63 (t1 = BOS), enough for the held-out bpb during training."""
    from tokenizers import Tokenizer, models as tm
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


def test_repeat_epochs_fractional():
    import random
    items = list(range(10))
    out = repeat_epochs(items, 2.5, random.Random(0))
    assert len(out) == 25 and sorted(out[:10]) == items and sorted(out[10:20]) == items


def test_replay_scaled_by_document_share():
    class P:
        replay_english_fraction, replay_code_fraction, replay_reference_lang = 0.01, 0.05, "swe"
    counts = replay_counts(P, {"swe": 1000, "fao": 10}, n_english=10_000, n_code=2_000)
    assert counts["swe"] == (100, 100)  # 1% of English, 5% of code
    assert counts["fao"] == (1, 1)  # scaled by 10 / 1000


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
