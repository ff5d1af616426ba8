"""Tests for hyperllama_lib.merging and merge_methods: hand-computed math on tiny tensors for every
method, the registry and importance hook, end-to-end merges of saved models, and `hyperllama merge`."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hyperllama_lib import cli
from hyperllama_lib.merging import engine as mg
from hyperllama_lib.merging.methods import MergeMethod
from hyperllama_lib.models import cloning, modeling

T = torch.tensor


def assert_close(got: torch.Tensor, want: list | torch.Tensor, atol: float = 1e-6) -> None:
    torch.testing.assert_close(got, torch.as_tensor(want, dtype=torch.float32), atol=atol, rtol=0)


# ---------------------------------------------------------------- registry

def test_registry_declares_base_and_parameters():
    assert set(mg.METHODS) == {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "multislerp",
                               "fisher", "fisher_ties"}
    assert {n: m.base for n, m in mg.METHODS.items()} == {
        "linear": "ignored", "task_arithmetic": "required", "ties": "required", "dare_ties": "required",
        "dare_linear": "required", "multislerp": "optional", "fisher": "ignored", "fisher_ties": "required"}
    assert not mg.METHODS["linear"].needs_base and not mg.METHODS["multislerp"].needs_base
    assert mg.METHODS["ties"].needs_base and mg.METHODS["task_arithmetic"].needs_base
    assert mg.METHODS["ties"].parameters == {"density": 0.5, "normalize": True}
    assert mg.METHODS["dare_ties"].parameters == {"density": 0.5, "normalize": True, "rescale": True, "seed": 0}
    assert mg.METHODS["multislerp"].parameters == {"normalize_weights": True, "eps": 1e-8}
    # Fisher methods (tests/test_fisher.py) need importances and have no mergekit counterpart.
    assert {n for n, m in mg.METHODS.items() if m.needs_importance} == {"fisher", "fisher_ties"}
    assert all(m.mergekit_name == (None if m.needs_importance else n) for n, m in mg.METHODS.items())
    with pytest.raises(ValueError, match="unknown merge method 'nope'; valid choices: .*ties"):
        mg.merge_tensors("nope", [T([1.0])])
    with pytest.raises(ValueError, match="needs a base model"):
        mg.merge_tensors("ties", [T([1.0])])
    with pytest.raises(ValueError, match="base policy 'sometimes'"):
        MergeMethod("x", mg.METHODS["linear"].fn, base="sometimes")


def test_parameters_are_checked():
    a, b = T([1.0, 2.0]), T([3.0, 4.0])
    with pytest.raises(ValueError, match="unknown merge parameter 'densty'; ties takes: density, normalize"):
        mg.merge_tensors("ties", [a, b], a, densty=0.3)
    # A parameter of another method is ignored, so one call can serve all methods (pipeline/merge.py).
    assert_close(mg.merge_tensors("linear", [a, b], density=0.3, seed=1), [2.0, 3.0])
    with pytest.raises(ValueError, match="normalize of linear must be a bool, got 'yes'"):
        mg.merge_tensors("linear", [a, b], normalize="yes")
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\].*got 1.5"):
        mg.merge_tensors("ties", [a, b], a, density=1.5)
    with pytest.raises(ValueError, match="density must be in"):
        mg.merge_tensors("dare_ties", [a, b], a, density=-0.1)
    with pytest.raises(ValueError, match="got 3 weights for 2 models"):
        mg.merge_tensors("linear", [a, b], weights=[1, 2, 3])
    assert mg.resolve_params("dare_linear", {"density": 1}) == {
        "density": 1.0, "normalize": True, "rescale": True, "seed": 0}


# ---------------------------------------------------------------- linear, task arithmetic

def test_linear():
    a, b = T([1.0, 2.0, -4.0]), T([3.0, 0.0, 4.0])
    assert_close(mg.merge_tensors("linear", [a, b]), [2.0, 1.0, 0.0])
    assert_close(mg.merge_tensors("linear", [a, b], weights=[3, 1]), [1.5, 1.5, -2.0])
    assert_close(mg.merge_tensors("linear", [a, b], weights=[3, 1], normalize=False), [6.0, 6.0, -8.0])
    assert_close(mg.merge_tensors("linear", [a]), a)
    assert_close(mg.merge_tensors("linear", [a, a, a]), a)
    # A base, if given, is not part of the average.
    assert_close(mg.merge_tensors("linear", [a, b], base=T([100.0, 100.0, 100.0])), [2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="sum to 0"):
        mg.merge_tensors("linear", [a, b], weights=[1, -1])
    assert_close(mg.merge_tensors("linear", [a, b], weights=[1, -1], normalize=False), [-2.0, 2.0, -8.0])
    half = mg.merge_tensors("linear", [a.half(), b.bfloat16()])
    assert half.dtype == torch.float32


def test_task_arithmetic():
    base = T([1.0, 1.0])
    a, b = T([3.0, 1.0]), T([1.0, -3.0])  # task vectors [2, 0] and [0, -4]
    assert_close(mg.merge_tensors("task_arithmetic", [a, b], base, normalize=False), [3.0, -3.0])
    assert_close(mg.merge_tensors("task_arithmetic", [a, b], base), [2.0, -1.0])
    # With normalize it equals the linear average (the paper's remark).
    assert_close(mg.merge_tensors("task_arithmetic", [a, b], base, weights=[1, 3]),
                 mg.merge_tensors("linear", [a, b], weights=[1, 3]))
    # All-zero task vectors give the base; a single model gives itself.
    assert_close(mg.merge_tensors("task_arithmetic", [base, base], base), base)
    assert_close(mg.merge_tensors("task_arithmetic", [a], base), a)
    # Weights summing to 0: mergekit divides by 1 instead.
    assert_close(mg.merge_tensors("task_arithmetic", [a, b], base, weights=[1, -1]), [3.0, 5.0])


# ---------------------------------------------------------------- TIES

def test_magnitude_prune_topk_and_ties():
    d = T([[0.1, -3.0, 2.0], [-2.0, 0.5, 0.0]])
    assert_close(mg.magnitude_prune(d, 0.5), [[0.0, -3.0, 2.0], [-2.0, 0.0, 0.0]])
    assert_close(mg.magnitude_prune(d, 1 / 3), [[0.0, -3.0, 2.0], [0.0, 0.0, 0.0]])  # k=2: tie, lower index
    assert_close(mg.magnitude_prune(d, 1.0), d)
    # k = max(1, int(0.06)) = 1 as in mergekit: any density > 0 keeps the largest entry.
    assert_close(mg.magnitude_prune(d, 0.01), [[0.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(mg.magnitude_prune(d, 0.0), torch.zeros(2, 3))
    assert_close(mg.magnitude_prune(T([1.0, -1.0, 1.0, -1.0]), 0.5), [1.0, -1.0, 0.0, 0.0])
    assert_close(mg.magnitude_prune(torch.zeros(4), 0.5), torch.zeros(4))


def test_kth_smallest_magnitude_and_prune_on_large_tensors():
    from hyperllama_lib.merging.methods._base import kth_smallest_magnitude

    g = torch.Generator().manual_seed(0)
    values = torch.randn(300_000, generator=g).abs()
    values[:50_000] = 0.0  # many ties at zero
    values[50_000:60_000] = 0.25  # and in the middle
    values = values[torch.randperm(values.numel(), generator=g)]
    for q in (1, 2, 49_999, 50_000, 50_001, 150_000, 299_999, 300_000):
        assert kth_smallest_magnitude(values, q) == torch.kthvalue(values, q).values
    # Magnitude pruning keeps exactly k entries, ties at the threshold by index, on a large tensor.
    sign = torch.randint(0, 2, (400, 500), generator=g) * 2 - 1
    delta = (torch.randint(1, 30, (400, 500), generator=g) * sign) / 10  # no zeros, many ties
    for density in (0.5, 0.3, 0.999):
        kept = mg.magnitude_prune(delta, density) != 0
        k = int(density * delta.numel())
        assert int(kept.sum()) == k
        threshold = delta.abs().flatten().sort(descending=True).values[k - 1]
        assert (delta.abs()[kept] >= threshold).all() and (delta.abs()[~kept] <= threshold).all()
        tied = (delta.abs() == threshold).flatten().nonzero().squeeze(1)
        kept_tied = kept.flatten()[tied]
        assert kept_tied.sum() > 0 and not (kept_tied[1:] > kept_tied[:-1]).any()  # lower index first


def test_ties_hand_computed():
    base = T([0.0, 0.0, 0.0, 0.0])
    a = T([2.0, -1.0, 4.0, 0.5])
    b = T([-1.0, 3.0, 1.0, -0.25])
    c = T([1.0, -0.5, 0.0, 0.1])
    # density 1: no pruning. Sums [2, 1.5, 5, 0.35] -> all elected +.
    # entry0: keep a=2, c=1 -> 3/2; entry1: keep b=3 -> 3; entry2: keep a, b (c=0 never kept) -> 5/2;
    # entry3: keep a=0.5, c=0.1 -> 0.3
    assert_close(mg.merge_tensors("ties", [a, b, c], base, density=1.0), [1.5, 3.0, 2.5, 0.3])
    assert_close(mg.merge_tensors("ties", [a, b, c], base, density=1.0, normalize=False), [3.0, 3.0, 5.0, 0.6])
    # density 0.5 keeps 2 of 4 per model: a -> [2, 0, 4, 0], c -> [1, -0.5, 0, 0],
    # b -> [-1, 3, 0, 0] (|-1| ties |1|: the lower index wins); sums [2, 2.5, 4, 0] elect + everywhere
    # (a zero sum elects +; entry3 has nothing kept, so it stays at the base). Base shifted by 1.
    assert_close(mg.merge_tensors("ties", [a + 1, b + 1, c + 1], base + 1, density=0.5), [2.5, 4.0, 5.0, 1.0])


def test_ties_sign_tie_weights_and_edge_cases():
    base = T([1.0, 1.0, 1.0])
    # entry0: deltas +1, -1 -> sum 0 elects +, keeps +1; entry1: +2 and -3 -> elects -, keeps -3;
    # entry2: both zero -> divisor 0 -> 1, stays at base.
    a, b = T([2.0, 3.0, 1.0]), T([0.0, -2.0, 1.0])
    assert_close(mg.merge_tensors("ties", [a, b], base, density=1.0), [2.0, -2.0, 1.0])
    # Weights [2, 1]: weighted deltas [2, 4, 0] and [-1, -3, 0] -> elect +, + -> 2/2, 4/2.
    assert_close(mg.merge_tensors("ties", [a, b], base, weights=[2, 1], density=1.0), [2.0, 3.0, 1.0])
    # Weights [1, 4]: [1, 2, 0] and [-4, -12, 0] -> elect -, - -> -4/4, -12/4.
    assert_close(mg.merge_tensors("ties", [a, b], base, weights=[1, 4], density=1.0), [0.0, -2.0, 1.0])
    # All-zero task vectors give the base.
    assert_close(mg.merge_tensors("ties", [base, base], base), base)
    # A single model: its pruned task vector added to the base (k=1 of [0.5, 3, -3]: tie, lower index).
    assert_close(mg.merge_tensors("ties", [T([1.5, 4.0, -2.0])], base, density=0.34), [1.0, 4.0, 1.0])
    # A tiny density still keeps one entry per model: [0, 2, 0] and [0, -3, 0] -> elect -, keep -3.
    assert_close(mg.merge_tensors("ties", [a, b], base, density=0.01), [1.0, -2.0, 1.0])
    # density 0 drops every task vector: the base.
    assert_close(mg.merge_tensors("ties", [a, b], base, density=0.0), base)


def test_ties_matches_reference_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    thetas = [base + torch.randn(5, 7, generator=g) for _ in range(3)]
    weights = [1.0, 0.5, 2.0]
    got = mg.merge_tensors("ties", thetas, base, weights=weights, density=0.4)
    # Straightforward reference, entry by entry.
    k = int(0.4 * 35)
    pruned = []
    for t in thetas:
        d = (t - base).flatten()
        keep = torch.zeros(35, dtype=torch.bool)
        keep[sorted(range(35), key=lambda i: -abs(float(d[i])))[:k]] = True
        pruned.append(d * keep)
    want = base.flatten().clone()
    for i in range(35):
        wd = [w * float(p[i]) for w, p in zip(weights, pruned)]
        sign = 1.0 if sum(wd) >= 0 else -1.0
        kept = [(x, w) for x, w in zip(wd, weights) if x != 0 and (x > 0) == (sign > 0)]
        want[i] += sum(x for x, _ in kept) / (sum(w for _, w in kept) or 1.0)
    assert_close(got, want.reshape(5, 7))
    torch.testing.assert_close(got, mg.merge_tensors("ties", thetas, base, weights=weights, density=0.4),
                               atol=0, rtol=0)


# ---------------------------------------------------------------- DARE

def dare_reference(thetas, base, weights, density, seed, name, ties, normalize=True, rescale=True):
    """DARE by its formula, entry by entry, with the masks drawn as documented (one generator per
    tensor, seeded by tensor_seed(seed, name), models in order, keep where rand < density)."""
    g = torch.Generator().manual_seed(mg.tensor_seed(seed, name))
    deltas = []
    for t in thetas:
        d = (t - base).flatten().tolist()
        keep = (torch.rand(base.shape, generator=g) < density).flatten().tolist()
        kept = [x if k else 0.0 for x, k in zip(d, keep)]
        l1, l1_kept = sum(map(abs, d)), sum(map(abs, kept))
        if rescale and l1 >= 1e-7 and l1_kept >= 1e-7:
            kept = [x * l1 / l1_kept for x in kept]
        deltas.append(kept)
    out = []
    for i, b in enumerate(base.flatten().tolist()):
        wd = [w * d[i] for w, d in zip(weights, deltas)]
        if ties:
            positive = sum(wd) >= 0
            agree = [(x > 0) if positive else (x < 0) for x in wd]
            total = sum(x for x, a in zip(wd, agree) if a)
            divisor = sum(w for w, a in zip(weights, agree) if a) or 1.0
        else:
            total, divisor = sum(wd), (sum(weights) if abs(sum(weights)) >= 1e-8 else 1.0)
        out.append(b + (total / divisor if normalize else total))
    return torch.tensor(out).reshape(base.shape)


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
@pytest.mark.parametrize("density,normalize,rescale", [(0.5, True, True), (0.3, False, True), (0.7, True, False)])
def test_dare_matches_its_formula(method, density, normalize, rescale):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=g)
    thetas = [base + torch.randn(6, 5, generator=g) for _ in range(3)]
    weights = [1.0, 0.5, 2.0]
    got = mg.merge_tensors(method, thetas, base, weights=weights, name="layer.w", density=density, seed=11,
                           normalize=normalize, rescale=rescale)
    want = dare_reference(thetas, base, weights, density, 11, "layer.w", method == "dare_ties", normalize, rescale)
    assert_close(got, want, atol=1e-5)


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_dare_seed_density_edges(method):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(40, 50, generator=g)
    thetas = [base + torch.randn(40, 50, generator=g) for _ in range(3)]
    run = lambda **kw: mg.merge_tensors(method, thetas, base, **{"name": "w", **kw})  # noqa: E731
    # Reproducible for a seed and name; another seed or another tensor name draws other masks.
    torch.testing.assert_close(run(seed=3), run(seed=3), atol=0, rtol=0)
    assert not torch.equal(run(seed=3), run(seed=4))
    assert not torch.equal(run(seed=3), run(seed=3, name="v"))
    # density 1 keeps everything: TIES without trimming, resp. task arithmetic.
    plain = "ties" if method == "dare_ties" else "task_arithmetic"
    extra = {"density": 1.0} if method == "dare_ties" else {}
    assert_close(run(density=1.0), mg.merge_tensors(plain, thetas, base, **extra))
    # density 0 drops everything: the base.
    assert_close(run(density=0.0), base)
    # All-zero task vectors: the base. One model: its dropped, L1-rescaled task vector.
    assert_close(mg.merge_tensors(method, [base, base], base, name="w"), base)
    single = mg.merge_tensors(method, thetas[:1], base, name="w", seed=5)
    delta, got = thetas[0] - base, single - base
    assert abs(float(got.abs().sum() / delta.abs().sum()) - 1) < 1e-5  # L1 norm kept
    kept = got != 0
    assert 0.45 < kept.float().mean() < 0.55  # about density of the entries survive
    ratio = got[kept] / delta[kept]
    assert torch.allclose(ratio, ratio[0]) and 1.8 < float(ratio[0]) < 2.2  # about 1 / density


def test_dare_is_independent_of_tensor_order():
    g = torch.Generator().manual_seed(3)
    sds = [{n: torch.randn(8, 8, generator=g) for n in ("a", "b", "c")} for _ in range(3)]
    base = {n: torch.zeros(8, 8) for n in ("a", "b", "c")}
    forward = mg.merge_state_dicts("dare_ties", sds, base, seed=9)
    backward = mg.merge_state_dicts("dare_ties", [dict(reversed(sd.items())) for sd in sds], base, seed=9)
    for n in forward:
        torch.testing.assert_close(forward[n], backward[n], atol=0, rtol=0)


# ---------------------------------------------------------------- multislerp

def test_multislerp_hand_computed():
    a, b = T([1.0, 0.0]), T([0.0, 1.0])
    s = 1 / math.sqrt(2)
    # Orthogonal unit vectors, equal weights: the midpoint on the circle.
    assert_close(mg.merge_tensors("multislerp", [a, b]), [s, s])
    # Norms 2 and 4: same direction, the weighted mean norm 3.
    assert_close(mg.merge_tensors("multislerp", [2 * a, 4 * b]), [3 * s, 3 * s])
    # Weights 3:1: direction (0.75, 0.25) normalised, norm 1.
    n = math.hypot(0.75, 0.25)
    assert_close(mg.merge_tensors("multislerp", [a, b], weights=[3, 1]), [0.75 / n, 0.25 / n])
    # Unnormalised weights [1, 1]: the norm is their sum times the mean norm.
    assert_close(mg.merge_tensors("multislerp", [a, b], normalize_weights=False), [2 * s, 2 * s])
    # With a base the task vectors are interpolated and the base added back.
    base = T([1.0, -1.0])
    assert_close(mg.merge_tensors("multislerp", [base + 2 * a, base + 4 * b], base), [1 + 3 * s, -1 + 3 * s])
    # One model is returned unchanged, base or not.
    assert_close(mg.merge_tensors("multislerp", [a], base), a)
    # A tensor is treated as one flat vector.
    m = mg.merge_tensors("multislerp", [T([[1.0, 0.0]]), T([[0.0, 1.0]])])
    assert m.shape == (1, 2)
    assert_close(m, [[s, s]])


def test_multislerp_degenerate_cases():
    a = T([1.0, 0.0])
    # Antipodal pair with equal weights: linear interpolation (mergekit's fallback for two).
    assert_close(mg.merge_tensors("multislerp", [a, -a]), [0.0, 0.0])
    with pytest.raises(ValueError, match="weighted mean of the unit task vectors is zero"):
        mg.merge_tensors("multislerp", [a, -a, 0 * a])
    # All-zero task vectors give the base for any number of models (mergekit raises for > 2).
    base = T([0.5, 2.0])
    assert_close(mg.merge_tensors("multislerp", [base, base, base], base), base)
    assert_close(mg.merge_tensors("multislerp", [torch.zeros(3)] * 3), torch.zeros(3))


# ---------------------------------------------------------------- importance hook

def weighted_by_importance(tensors, base, weights, importances):
    """A dummy Fisher-style method: sum_i w_i F_i theta_i / sum_i w_i F_i."""
    assert all(i.dtype == torch.float32 for i in importances)
    num = sum(w * f * t.float() for w, f, t in zip(weights.tolist(), importances, tensors))
    return num / sum(w * f for w, f in zip(weights.tolist(), importances))


@pytest.fixture
def importance_method(monkeypatch):
    method = MergeMethod("by_importance", weighted_by_importance, base="ignored", needs_importance=True)
    monkeypatch.setitem(mg.METHODS, method.name, method)
    return method


def test_importance_hook_in_merge_tensors(importance_method):
    a, b = T([1.0, 2.0]), T([3.0, 6.0])
    got = mg.merge_tensors("by_importance", [a, b], importances=[T([1.0, 3.0]), T([3.0, 1.0]).half()])
    assert_close(got, [2.5, 3.0])  # (1*1 + 3*3)/4, (3*2 + 1*6)/4
    with pytest.raises(ValueError, match="needs one importance tensor per model"):
        mg.merge_tensors("by_importance", [a, b])


def test_importance_hook_in_merge_models(importance_method, saved, tmp_path):
    models = [saved["est"], saved["isl"]]
    tensors = [load_tensors(m) for m in models]
    files = []
    for i, sd in enumerate(tensors):
        g = torch.Generator().manual_seed(i)
        imp = {n: torch.rand(t.shape, generator=g) + 0.1 for n, t in sd.items()}
        save_file({n: v.half() if i else v for n, v in imp.items()}, str(tmp_path / f"imp{i}.safetensors"))
        files.append(tmp_path / f"imp{i}.safetensors")
    out = mg.merge_models("by_importance", models, tmp_path / "merged", importances=files, weights=[1, 2])
    got = load_tensors(out)
    imps = [load_tensors_file(f) for f in files]
    for name in tensors[0]:
        want = weighted_by_importance([sd[name] for sd in tensors], None, T([1.0, 2.0]),
                                      [i[name].float() for i in imps])
        torch.testing.assert_close(got[name], want, atol=0, rtol=0)
    manifest = json.loads((out / "merge.json").read_text())
    assert manifest["importances"] == [str(f) for f in files]
    assert "mergekit_config" not in manifest and not (out / "mergekit_config.yml").exists()

    with pytest.raises(ValueError, match="needs importances"):
        mg.merge_models("by_importance", models, tmp_path / "x")
    with pytest.raises(ValueError, match="got 1 importance files for 2 models"):
        mg.merge_models("by_importance", models, tmp_path / "x", importances=files[:1])
    with pytest.raises(ValueError, match="'linear' does not use importances"):
        mg.merge_models("linear", models, tmp_path / "x", importances=files)
    bad = load_tensors_file(files[0])
    bad["model.norm.weight"] = torch.ones(3)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"shape mismatch for model.norm.weight: .* \[16\] .*bad.safetensors.* \[3\]"):
        mg.merge_models("by_importance", models, tmp_path / "x", importances=[files[0], tmp_path / "bad.safetensors"])
    with pytest.raises(ValueError, match="importance file does not exist"):
        mg.merge_models("by_importance", models, tmp_path / "x", importances=[files[0], tmp_path / "missing"])
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- end to end on saved models

VOCAB = 64


def make_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        special_tokens=["[UNK]", "<|begin_of_text|>", "<|end_of_text|>"], show_progress=False)
    tok.train_from_iterator([" ".join(words)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|end_of_text|>", unk_token="[UNK]")


def save_model(path: Path, seed: int, tokenizer, hidden: int = 16, vocab: int = VOCAB, **save_kwargs) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=32, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path, **save_kwargs)
    tokenizer.save_pretrained(path)
    return path


def load_tensors_file(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def load_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name, path in mg.tensor_files(model_dir).items():
        with safe_open(path, framework="pt") as f:
            out[name] = f.get_tensor(name)
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    tok = make_tokenizer(["the", "cat", "sat", "on", "mat", "dog"])
    dirs = {"base": save_model(root / "base", 0, tok)}
    for i, lang in enumerate(["est", "isl"], start=1):
        dirs[lang] = save_model(root / lang, i, tok)
    dirs["swe"] = save_model(root / "swe", 3, tok, max_shard_size="4KB")  # sharded checkpoint
    dirs["wide"] = save_model(root / "wide", 4, tok, hidden=32)
    dirs["vocab"] = save_model(root / "vocab", 4, tok, vocab=80)
    dirs["other_tok"] = save_model(root / "other_tok", 5, make_tokenizer(["a", "b", "c"]))
    return dirs


@pytest.mark.parametrize("method", sorted(n for n, m in mg.METHODS.items() if not m.needs_importance))
def test_merge_models_end_to_end(saved, tmp_path, method):
    models = [saved["est"], saved["isl"], saved["swe"]]
    assert (saved["swe"] / "model.safetensors.index.json").is_file()
    params = {"density": 0.5} if "density" in mg.METHODS[method].parameters else {}
    out = mg.merge_models(method, models, tmp_path / "merged", base_dir=saved["base"],
                          weights=[1.0, 1.0, 1.0], seed=4, **params)
    assert out == tmp_path / "merged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary folder left
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, LlamaForCausalLM)
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert "lm_head.weight" not in f.keys()  # tied embeddings stay tied
    # The streamed file holds exactly the in-memory merge.
    want = mg.merge_state_dicts(method, [load_tensors(m) for m in models], base=load_tensors(saved["base"]),
                                seed=4, **params)
    got = load_tensors(out)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=0, rtol=0)
    assert (out / "tokenizer.json").read_bytes() == (saved["base"] / "tokenizer.json").read_bytes()
    manifest = json.loads((out / "merge.json").read_text())
    assert manifest == {"method": method, "models": [str(m) for m in models], "base": str(saved["base"]),
                        "weights": [1.0, 1.0, 1.0], "parameters": mg.resolve_params(method, {"seed": 4, **params}),
                        "dtype": "float32", "mergekit_config": "mergekit_config.yml"}
    config = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert config["merge_method"] == method and config["dtype"] == "float32"
    assert [m["model"] for m in config["models"]] == [str(m.resolve()) for m in models]
    assert ("base_model" in config) == (method != "linear")  # mergekit would average a linear base in
    with pytest.raises(FileExistsError):
        mg.merge_models(method, models, out, base_dir=saved["base"])


def test_mergekit_yaml():
    text = mg.mergekit_yaml("dare_ties", ["/m/a", "/m/b"], "/m/base", [1.0, 0.5], "float16", density=0.3, seed=2)
    assert text.startswith("# mergekit 0.1.5 config")
    assert "seeded per tensor name from seed 2" in text
    assert yaml.safe_load(text) == {
        "merge_method": "dare_ties", "base_model": "/m/base",
        "models": [{"model": "/m/a", "parameters": {"weight": 1.0, "density": 0.3}},
                   {"model": "/m/b", "parameters": {"weight": 0.5, "density": 0.3}}],
        "parameters": {"normalize": True, "rescale": True}, "dtype": "float32", "out_dtype": "float16"}
    assert "base_model" not in yaml.safe_load(mg.mergekit_yaml("linear", ["/a", "/b"], "/base"))
    assert "base_model" not in yaml.safe_load(mg.mergekit_yaml("multislerp", ["/a", "/b"]))


def test_merge_identical_models_linear_is_identity(saved, tmp_path):
    out = mg.merge_models("linear", [saved["est"]] * 3, tmp_path / "same", dtype="float32")
    got, want = load_tensors(out), load_tensors(saved["est"])
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-7, rtol=0)
    for dtype, torch_dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        half = mg.merge_models("linear", [saved["est"], saved["isl"]], tmp_path / dtype, dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(half)
        assert model.model.embed_tokens.weight.dtype == torch_dtype
        assert json.loads((half / "config.json").read_text())["dtype"] == dtype
        assert yaml.safe_load((half / "mergekit_config.yml").read_text())["out_dtype"] == dtype


def test_merge_single_model(saved, tmp_path):
    out = mg.merge_models("ties", [saved["est"]], tmp_path / "one", base_dir=saved["base"], density=1.0)
    for name, t in load_tensors(saved["est"]).items():
        torch.testing.assert_close(load_tensors(out)[name], t, atol=1e-6, rtol=0)


def test_merge_models_rejects_mismatches(saved, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"architecture mismatch: .*hidden_size=16 .*wide.* hidden_size=32"):
        mg.merge_models("linear", [saved["est"], saved["wide"]], out)
    with pytest.raises(ValueError, match=r"vocabulary mismatch: .*vocab_size=64 .*vocab.* vocab_size=80"):
        mg.merge_models("ties", [saved["est"], saved["isl"]], out, base_dir=saved["vocab"])
    with pytest.raises(ValueError, match="tokenizer mismatch: .*other_tok"):
        mg.merge_models("linear", [saved["est"], saved["other_tok"]], out)
    with pytest.raises(ValueError, match="'ties' needs a base model"):
        mg.merge_models("ties", [saved["est"], saved["isl"]], out)
    with pytest.raises(ValueError, match="missing: model folder does not exist"):
        mg.merge_models("linear", [saved["est"], tmp_path / "missing"], out)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        mg.merge_models("linear", [saved["est"], saved["isl"]], out, dtype="fp8")
    with pytest.raises(ValueError, match="got 1 weights for 2 models"):
        mg.merge_models("linear", [saved["est"], saved["isl"]], out, weights=[1.0])
    assert not out.exists()


@pytest.mark.parametrize("failure", ["while merging", "at the rename into place"])
def test_failed_merge_over_an_existing_folder_keeps_it(saved, tmp_path, monkeypatch, failure):
    out = mg.merge_models("linear", [saved["est"], saved["isl"]], tmp_path / "merged")
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    if failure == "while merging":
        def crash(*args, **kwargs):
            raise RuntimeError("simulated crash")
        monkeypatch.setattr(mg, "_write_metadata", crash)
    else:
        rename = os.replace

        def crash(src, dst):  # the new merge cannot take the old one's place
            merged = Path(src) / "merge.json"
            if Path(dst) == out and merged.is_file() and json.loads(merged.read_text())["method"] == "ties":
                raise RuntimeError("simulated crash")
            rename(src, dst)
        monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        mg.merge_models("ties", [saved["est"], saved["isl"]], out, base_dir=saved["base"], overwrite=True)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary or set-aside folder left


def test_check_compatible_tensor_shapes(saved, tmp_path):
    # Same config, but one tensor of another shape (a hand-edited checkpoint).
    bad = tmp_path / "bad"
    shutil.copytree(saved["est"], bad)
    tensors = load_tensors(bad)
    tensors["model.norm.weight"] = torch.ones(8)
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"shape mismatch for model.norm.weight: .* \[16\] .* \[8\]"):
        mg.check_compatible([saved["est"], bad])


@pytest.fixture(scope="module")
def clones(tmp_path_factory) -> dict[str, Path]:
    """x2 HyperClones (the 572M format: model_type hyperllama, head divided by 2) of tiny models."""
    root = tmp_path_factory.mktemp("clones")
    config = modeling.smollm2_config(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1,
                                     head_dim=8, intermediate_size=32)
    dirs = {}
    for i, name in enumerate(["base", "a", "b"]):
        modeling.new_model(config, seed=i).save_pretrained(root / f"src_{name}")
        dirs[name] = cloning.clone_folder(root / f"src_{name}", root / name, factor=2)
    dirs["plain"] = root / "src_a"
    return dirs


def test_merge_clones_with_scaled_head(clones, tmp_path):
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))

    def logits(path):
        with torch.inference_mode():
            return modeling.load_model(path)(input_ids=ids).logits

    out = mg.merge_models("ties", [clones["a"], clones["b"]], tmp_path / "ties", base_dir=clones["base"])
    model = modeling.load_model(out)
    assert isinstance(model, modeling.HyperLlamaForCausalLM) and modeling.lm_head_factor(model) == 2
    assert torch.isfinite(logits(out)).all()
    same = mg.merge_models("linear", [clones["a"], clones["a"]], tmp_path / "same")
    assert (logits(same) - logits(clones["a"])).abs().max() <= 1e-6
    with pytest.raises(ValueError, match="architecture mismatch: .*model_type='hyperllama' .* model_type='llama'"):
        mg.merge_models("linear", [clones["a"], clones["plain"]], tmp_path / "never")


# ---------------------------------------------------------------- hyperllama merge

def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["merge", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_merge(saved, tmp_path, capsys):
    models = [saved["est"], saved["isl"]]
    code, out, err = run_cli(capsys, "--method", "ties", "--base", saved["base"], "--out", tmp_path / "m",
                             *models, "--weight", "1", "--density", "0.3", "--dtype", "bfloat16",
                             "--mergekit-yaml", tmp_path / "mk.yml")
    assert code == 0, err
    assert "merged 2 models with ties (density=0.3, normalize=True" in out
    manifest = json.loads((tmp_path / "m" / "merge.json").read_text())
    assert manifest["weights"] == [1.0, 1.0] and manifest["dtype"] == "bfloat16"
    assert manifest["parameters"] == {"density": 0.3, "normalize": True}
    assert (tmp_path / "mk.yml").read_text() == (tmp_path / "m" / "mergekit_config.yml").read_text()
    want = mg.merge_state_dicts("ties", [load_tensors(m) for m in models], load_tensors(saved["base"]), density=0.3)
    got = load_tensors(tmp_path / "m")
    for name in want:
        torch.testing.assert_close(got[name], want[name].bfloat16(), atol=0, rtol=0)
    AutoModelForCausalLM.from_pretrained(tmp_path / "m")

    code, out, err = run_cli(capsys, "--method", "dare_linear", "--base", saved["base"], "--out", tmp_path / "d",
                             *models, "--weight", "1", "0.5", "--seed", "3", "--no-normalize",
                             "--param", "rescale=false")
    assert code == 0, err
    manifest = json.loads((tmp_path / "d" / "merge.json").read_text())
    assert manifest["weights"] == [1.0, 0.5]
    assert manifest["parameters"] == {"density": 0.5, "normalize": False, "rescale": False, "seed": 3}


@pytest.mark.parametrize("args,message", [
    (["--method", "nope"], "unknown merge method 'nope'; valid choices: "),
    (["--method", "ties"], "'ties' needs a base model"),
    (["--method", "linear", "--weight", "1", "2", "3"], "--weight takes one value for all models or one per model; "
                                                         "got 3 for 2 models"),
    (["--method", "linear", "--density", "0.3"], "merge method linear takes no density; its parameters: normalize"),
    (["--method", "ties", "--base", "BASE", "--density", "2"], "density must be in [0, 1]"),
    (["--method", "ties", "--base", "BASE", "--seed", "1"], "merge method ties takes no seed"),
    (["--method", "linear", "--param", "eps"], "--param expects KEY=VALUE"),
    (["--method", "multislerp", "--param", "eps=0"], "eps must be > 0"),
    (["--method", "linear", "OTHER_TOKENIZER"], "tokenizer mismatch"),
])
def test_cli_merge_errors_are_one_line(saved, tmp_path, capsys, args, message):
    models = [saved["est"], saved["isl"]]
    if "OTHER_TOKENIZER" in args:
        args, models = args[:-1], [saved["est"], saved["other_tok"]]
    args = [str(saved["base"]) if a == "BASE" else a for a in args]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "never", *models)
    assert code == 2
    assert err.startswith("hyperllama merge: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_cli_merge_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["merge", "--help"])
    assert exit_info.value.code == 0
    assert "mergekit" in capsys.readouterr().out
