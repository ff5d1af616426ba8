"""Diagonal Fisher estimation (hyperllama_lib.merging.fisher_information)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from hyperllama_lib.corpus.packing import PackedTokens, write_tokens
from hyperllama_lib.merging import fisher_information

VOCAB = 50


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True)).eval()


def example_grads(model, window: np.ndarray) -> dict[str, torch.Tensor]:
    ids = torch.as_tensor(window).unsqueeze(0)
    model.zero_grad()
    loss = model(input_ids=ids[:, :-1], labels=None).logits[0].log_softmax(-1)
    nll = -loss[torch.arange(len(window) - 1), ids[0, 1:]].mean()
    nll.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_fisher_is_the_mean_of_squared_per_example_gradients():
    model = tiny_model()
    rng = np.random.default_rng(0)
    examples = [rng.integers(0, VOCAB, 9) for _ in range(3)]
    got = fisher_information.diagonal_fisher(model, examples)
    assert all(p.grad is None for p in model.parameters())
    grads = [example_grads(model, x) for x in examples]
    for name, _ in model.named_parameters():
        want = sum(g[name] ** 2 for g in grads) / len(grads)
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-12)
        batch_grad_squared = (sum(g[name] for g in grads) / len(grads)) ** 2
        assert not torch.allclose(got[name], batch_grad_squared)  # not the batch gradient squared
    # the tied output head appears under its checkpoint name too, with the embedding's values
    assert got["lm_head.weight"] is got["model.embed_tokens.weight"]


def test_windows_are_spread_over_the_stream(tmp_path):
    path = tmp_path / "train.bin"
    write_tokens(path, [list(range(i, i + 10)) for i in range(0, 1000, 10)], vocab_size=2000)
    tokens = PackedTokens(path)
    got = fisher_information.windows(tokens, seq_len=10, n_tokens=50)
    assert len(got) == 5 and all(len(w) == 11 for w in got)
    assert got[0][0] == 0 and got[-1][0] >= 900  # first and (nearly) last block
    with pytest.raises(ValueError, match="fewer than one window"):
        fisher_information.windows(tokens, seq_len=5000, n_tokens=50)


def test_normalize_and_save(tmp_path):
    model = tiny_model()
    values = fisher_information.diagonal_fisher(model, [np.arange(12) % VOCAB])
    scaled = fisher_information.normalize(values)
    unique = {id(t): t for t in scaled.values()}.values()
    mean = sum(float(t.sum()) for t in unique) / sum(t.numel() for t in unique)
    assert mean == pytest.approx(1.0, rel=1e-5)
    assert scaled["lm_head.weight"] is scaled["model.embed_tokens.weight"]
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    out = fisher_information.save_fisher(scaled, tmp_path / "f" / "fisher.safetensors", names)
    with safe_open(out, framework="pt") as f:
        assert sorted(f.keys()) == names
        torch.testing.assert_close(f.get_tensor("model.norm.weight"), scaled["model.norm.weight"])
    assert [p.name for p in out.parent.iterdir()] == ["fisher.safetensors"]  # no temporary left
    with pytest.raises(ValueError, match="no Fisher"):
        fisher_information.save_fisher(scaled, tmp_path / "g.safetensors", ["missing.weight"])


# ---------------------------------------------------------------- fisher and fisher_ties merges

from hyperllama_lib import merging  # noqa: E402


def test_fisher_merge_hand_computed():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 6.0, -3.0])
    fa, fb = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([3.0, 0.0, 1.0])
    got = merging.merge_tensors("fisher", [a, b], weights=[1.0, 1.0], importances=[fa, fb],
                                fisher_floor=1e-6)
    # (1*1 + 3*3) / 4 = 2.5; both zero -> floor on both -> plain mean 4; (1e-6*3 - 3) / (1 + 1e-6)
    torch.testing.assert_close(got, torch.tensor([2.5, 4.0, (3e-6 - 3) / (1 + 1e-6)]))
    weighted = merging.merge_tensors("fisher", [a, b], weights=[3.0, 1.0], importances=[fa, fb])
    assert float(weighted[0]) == pytest.approx((3 * 1 * 1 + 1 * 3 * 3) / (3 * 1 + 1 * 3))


def test_fisher_equal_importance_is_linear_and_needs_importances():
    rng = torch.Generator().manual_seed(0)
    tensors = [torch.randn(4, 5, generator=rng) for _ in range(3)]
    ones = [torch.ones(4, 5)] * 3
    got = merging.merge_tensors("fisher", tensors, weights=[1.0, 2.0, 1.0], importances=ones)
    want = merging.merge_tensors("linear", tensors, weights=[1.0, 2.0, 1.0])
    torch.testing.assert_close(got, want)
    with pytest.raises(merging.MergeError, match="importance"):
        merging.merge_tensors("fisher", tensors)


def test_fisher_ties_with_equal_fisher_is_ties():
    rng = torch.Generator().manual_seed(1)
    base = torch.randn(6, 7, generator=rng)
    tensors = [base + torch.randn(6, 7, generator=rng) for _ in range(3)]
    ones = [torch.full((6, 7), 2.0)] * 3
    for density in (0.0, 0.3, 0.5, 1.0):
        got = merging.merge_tensors("fisher_ties", tensors, base, [1.0, 0.5, 2.0],
                                    importances=ones, density=density)
        want = merging.merge_tensors("ties", tensors, base, [1.0, 0.5, 2.0], density=density)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_fisher_ties_trims_by_saliency_and_averages_by_fisher():
    base = torch.zeros(4)
    # model a moved entries 0 and 1 a lot, but its language only cares about entry 2 and 3
    a = torch.tensor([5.0, -5.0, 0.5, 0.1])
    b = torch.tensor([1.0, 1.0, -1.0, 0.2])
    fa = torch.tensor([1e-4, 1e-4, 10.0, 10.0])
    fb = torch.tensor([1.0, 1.0, 1.0, 1.0])
    got = merging.merge_tensors("fisher_ties", [a, b], base, [1.0, 1.0], importances=[fa, fb],
                                density=0.5, fisher_floor=0.0)
    # a keeps entries 2, 3 (saliency 2.5, 0.1 vs 0.0025); b keeps the first two of its ties (1, 1)
    # entry 0, 1: only b's kept -> b; entry 2: a (10*0.5=5) alone kept -> 0.5; entry 3: a only -> 0.1
    torch.testing.assert_close(got, torch.tensor([1.0, 1.0, 0.5, 0.1]))
    ties = merging.merge_tensors("ties", [a, b], base, [1.0, 1.0], density=0.5)
    assert not torch.allclose(got, ties)  # TIES keeps a's large but unimportant entries


def save_language_models(root, n: int = 2) -> list:
    """The base (tiny_model) at root/base and n perturbed copies at root/m<i>; returns the copies' folders."""
    tiny_model().save_pretrained(root / "base")
    folders = []
    for i in range(n):
        model = tiny_model()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        model.save_pretrained(root / f"m{i}")
        folders.append(root / f"m{i}")
    return folders


def test_fisher_merges_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    dirs, fishers = save_language_models(tmp_path), []
    for i, folder in enumerate(dirs):
        model = LlamaForCausalLM.from_pretrained(folder)
        values = fisher_information.normalize(fisher_information.diagonal_fisher(model, [rng.integers(0, VOCAB, 9)]))
        fishers.append(fisher_information.save_fisher(values, tmp_path / f"f{i}.safetensors",
                                          sorted(merging.tensor_files(folder))))
    for method in ("fisher", "fisher_ties"):
        out = merging.merge_models(method, dirs, tmp_path / method, base_dir=tmp_path / "base",
                                   importances=fishers)
        merged = LlamaForCausalLM.from_pretrained(out)
        assert torch.isfinite(merged(torch.tensor([[1, 2, 3]])).logits).all()
        assert not (out / "mergekit_config.yml").exists()  # mergekit has no such method


def test_cli_fisher_then_merge(tmp_path, capsys):
    from hyperllama_lib.cli import main

    tokens = tmp_path / "train.bin"
    write_tokens(tokens, [list(np.random.default_rng(i).integers(0, VOCAB, 40)) for i in range(10)], VOCAB)
    models = [str(folder) for folder in save_language_models(tmp_path)]
    fishers = [str(tmp_path / f"f{i}.safetensors") for i in range(len(models))]
    for model, fisher_file in zip(models, fishers):
        assert main(["fisher", model, str(tokens), "--out", fisher_file, "--n-tokens", "64",
                     "--seq-len", "16"]) == 0
    assert "4 windows of 16 tokens" in capsys.readouterr().out
    out = tmp_path / "merged"
    assert main(["merge", "--method", "fisher_ties", "--base", str(tmp_path / "base"), "--out", str(out),
                 *models, "--importance", *fishers]) == 0
    assert torch.isfinite(LlamaForCausalLM.from_pretrained(out)(torch.tensor([[1, 2]])).logits).all()
    assert main(["fisher", models[0], str(tokens), "--out", fishers[0], "--seq-len", "5000"]) == 2
    assert "fewer than one window" in capsys.readouterr().err
