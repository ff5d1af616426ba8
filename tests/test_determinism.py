"""The same parameters and seed give the same bytes: training and merging (DARE's random drop included)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file
from test_resume import tiny_model, tiny_params, tiny_stage, toy_tokenizer

from hyperllama_lib import merging, training


def test_same_training_twice_gives_identical_weights_and_rows(tmp_path):
    p = tiny_params(tmp_path)
    runs = []
    for name in ("a", "b"):
        model = tiny_model()
        summary = training.train(model, toy_tokenizer(), tiny_stage(tmp_path, tmp_path / name, 10), p,
                                 log=lambda m: None)
        runs.append((model.state_dict(), summary))
    (a, sa), (b, sb) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sa["final_bpb"] == sb["final_bpb"] and sa["final_loss"] == sb["final_loss"]
    for rel in ["final/model.safetensors", "curve.csv", "train_log.csv"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def _model_dir(path, seed):
    torch.manual_seed(seed)
    model = tiny_model()
    with torch.no_grad():
        for q in model.parameters():
            q.add_(torch.randn_like(q) * 0.01)
    model.save_pretrained(path)
    toy_tokenizer().save_pretrained(path)
    return path


def test_same_merge_twice_gives_identical_tensors(tmp_path):
    method = "dare_ties" if "dare_ties" in merging.METHODS else "ties"
    base = tmp_path / "base"
    tiny_model().save_pretrained(base)
    toy_tokenizer().save_pretrained(base)
    models = [_model_dir(tmp_path / f"m{i}", i) for i in range(3)]
    params = {"density": 0.5, "seed": 7} if method == "dare_ties" else {"density": 0.5}
    outs = [merging.merge_models(method, models, tmp_path / f"out{k}", base_dir=base, **params) for k in range(2)]
    a, b = (load_file(o / "model.safetensors") for o in outs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (outs[0] / "model.safetensors").read_bytes() == (outs[1] / "model.safetensors").read_bytes()
    if method == "dare_ties":  # and the seed matters: another seed drops other entries
        other = merging.merge_models(method, models, tmp_path / "other", base_dir=base, density=0.5, seed=8)
        c = load_file(other / "model.safetensors")
        assert any(not torch.equal(a[k], c[k]) for k in a)
