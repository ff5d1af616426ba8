"""peft LoRA adapters under merging (hyperllama_lib/merging/adapters.py), on tiny 1x Llama and 2x
HyperLlama (HyperCloned, tied head, factor 2) models.

What is pinned: a zero-B adapter is the base exactly and keeps the tied head tied; `dense_deltas`
are the folded-minus-base deltas the registry merges; peft's `cat` is our task_arithmetic
(normalize false) on the folded models, and our linear (normalize true) is `cat` with normalised
weights; peft's `svd` is the truncated SVD of that sum; and peft's `ties` is NOT mergekit's.
"""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

import hyperllama_lib  # noqa: F401  (registers hyperllama with the Auto classes)
from hyperllama_lib.errors import MergeError
from hyperllama_lib.merging import adapters, merge_models, merge_tensors
from hyperllama_lib.models.cloning import hyperclone
from hyperllama_lib.models.modeling import load_model, new_model, smollm2_config

peft = pytest.importorskip("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.utils import merge_utils  # noqa: E402

KINDS = ("llama", "hyperllama")
TOKENS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])


def _base(kind: str):
    config = smollm2_config(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1,
                            head_dim=8, intermediate_size=32)
    model = new_model(config, seed=0)
    return hyperclone(model, 2) if kind == "hyperllama" else model


def _lora(base, seed: int, r: int = 4, **kw):
    """A peft LoRA on a copy of `base` with B randomised (peft starts B at zero)."""
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=kw.pop("target_modules", "all-linear"),
                        lora_dropout=0.0, **kw)
    model = get_peft_model(copy.deepcopy(base), config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _save(model, adapter_dir, folded_dir) -> None:
    model.save_pretrained(adapter_dir)
    copy.deepcopy(model).merge_and_unload().save_pretrained(folded_dir)


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """Per kind: base folder, adapters a0 (r=4), a1 (r=4), a2 (r=2) and their folded models, all
    trained (here: randomised) on the base as loaded from its folder, as the pipeline does."""
    out = {}
    for kind in KINDS:
        root = tmp_path_factory.mktemp(kind)
        _base(kind).save_pretrained(root / "base")
        base = load_model(root / "base")
        for i, r in enumerate((4, 4, 2)):
            _save(_lora(base, seed=10 + i, r=r), root / f"ad{i}", root / f"folded{i}")
        out[kind] = root
    return out


def _tensors(folder):
    return load_file(str(folder / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_b_adapter_is_the_base_and_the_head_stays_tied(kind):
    base = _base(kind)
    with torch.no_grad():
        expected = base(TOKENS).logits
        peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(
            r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)).eval()
        inner = peft_model.base_model.model
        assert inner.lm_head.weight is inner.model.embed_tokens.weight
        assert not hasattr(inner.lm_head, "lora_A")  # all-linear leaves the (tied) output head alone
        assert torch.equal(peft_model(TOKENS).logits, expected)
        folded = peft_model.merge_and_unload()
        assert folded.lm_head.weight is folded.model.embed_tokens.weight
        assert type(folded.lm_head) is type(base.lm_head)  # ScaledLMHead (factor 2) for hyperllama
        assert torch.equal(folded(TOKENS).logits, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_dense_deltas_are_the_folded_deltas(setups, kind):
    root = setups[kind]
    deltas = adapters.dense_deltas(root / "base", root / "ad0")
    base, folded = _tensors(root / "base"), _tensors(root / "folded0")
    assert len(deltas) == 14  # q, k, v, o, gate, up, down in each of 2 layers
    assert all(k.startswith("model.layers.") and k.endswith("_proj.weight") for k in deltas)
    for name in base:
        expected = folded[name] - base[name]
        got = deltas.get(name, torch.zeros_like(expected))
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), name
    assert min(float(d.abs().max()) for d in deltas.values()) > 1e-3  # B was randomised


@pytest.mark.parametrize("kind", KINDS)
def test_cat_is_task_arithmetic_of_the_folded_models(setups, tmp_path, kind):
    """peft's `cat` with weights w is base + sum w_i delta_i: our task_arithmetic with normalize
    false on the folded models and the base. Our linear with normalize true averages whole weights,
    sum w_i (base + delta_i) / sum w = base + sum (w_i / sum w) delta_i: `cat` with weights w_i / sum w."""
    root = setups[kind]
    w = [0.6, 1.5, -0.4]
    ads, folded = [root / f"ad{i}" for i in range(3)], [root / f"folded{i}" for i in range(3)]
    cat = _tensors(adapters.peft_merge(root / "base", ads, tmp_path / "cat", w, "cat"))
    ta = _tensors(merge_models("task_arithmetic", folded, tmp_path / "ta", root / "base", w, normalize=False))
    assert _max_diff(cat, ta) < 1e-5

    base = _tensors(root / "base")
    expected = dict(base)
    for wi, ad in zip(w, ads):
        for name, d in adapters.dense_deltas(root / "base", ad).items():
            expected[name] = expected[name] + wi * d
    assert _max_diff(cat, expected) < 1e-5
    assert _max_diff(cat, base) > 1e-2  # the merge does change the model

    w_norm = [wi / sum(w) for wi in w]
    cat_norm = _tensors(adapters.peft_merge(root / "base", ads, tmp_path / "catn", w_norm, "cat"))
    lin = _tensors(merge_models("linear", folded, tmp_path / "lin", weights=w, normalize=True))
    assert _max_diff(cat_norm, lin) < 1e-5

    merged = load_model(tmp_path / "cat")  # a loadable folder that keeps the head
    assert merged.lm_head.weight is merged.model.embed_tokens.weight
    assert merged.config.model_type == kind
    manifest = json.loads((tmp_path / "cat" / "merge.json").read_text())
    assert manifest["method"] == "peft_cat" and manifest["weights"] == w


def test_svd_is_the_truncated_weighted_sum(setups, tmp_path):
    root = setups["llama"]
    ads, w = [root / "ad0", root / "ad1"], [1.0, 0.5]
    cat = _tensors(adapters.peft_merge(root / "base", ads, tmp_path / "cat", w, "cat"))
    full = _tensors(adapters.peft_merge(root / "base", ads, tmp_path / "s8", w, "svd", svd_rank=8))
    assert _max_diff(cat, full) < 1e-5  # rank 8 = 4 + 4 keeps the whole sum
    low = _tensors(adapters.peft_merge(root / "base", ads, tmp_path / "s2", w, "svd", svd_rank=2))
    base = _tensors(root / "base")
    name = "model.layers.1.mlp.down_proj.weight"
    exact = (cat[name] - base[name]).double()
    singular = torch.linalg.svdvals(exact)
    error = torch.linalg.norm((low[name] - base[name]).double() - exact)
    # Eckart-Young: the best rank-2 approximation misses exactly the tail singular values
    assert float(singular[2]) > 1e-3
    assert error == pytest.approx(float(singular[2:].norm()), rel=1e-3)


def test_peft_merge_refuses_bad_input_in_one_line(setups, tmp_path, monkeypatch):
    small, big = setups["llama"], setups["hyperllama"]
    ads = [small / "ad0", small / "ad1"]
    out = tmp_path / "out"
    cases = [
        (dict(adapter_dirs=ads, combination_type="ties"), "unknown peft combination_type 'ties'"),
        (dict(adapter_dirs=ads, weights=[1.0]), "got 1 weights for 2 adapters"),
        (dict(adapter_dirs=ads, weights=[1.0, float("nan")]), "finite numbers"),
        (dict(adapter_dirs=ads, svd_rank=2), "only goes with combination_type svd"),
        (dict(adapter_dirs=ads, combination_type="svd", svd_rank=0), "svd_rank must be a positive"),
        (dict(adapter_dirs=[small / "ad0", big / "ad0"]), "adapters on different bases"),
        (dict(adapter_dirs=[big / "ad0"]), "does not fit base"),
        (dict(adapter_dirs=[small / "base"]), "not a peft adapter folder"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MergeError, match=message) as info:
            adapters.peft_merge(small / "base", out_dir=out, **kwargs)
        assert "\n" not in str(info.value)
        assert not out.exists()

    # cat cannot combine a regex target_modules with a list of names (peft refuses the mix)
    regex = _lora(load_model(small / "base"), seed=3, target_modules=r".*\.q_proj")
    regex.save_pretrained(tmp_path / "regex")
    with pytest.raises(MergeError, match="peft cannot cat-merge these adapters"):
        adapters.peft_merge(small / "base", [small / "ad0", tmp_path / "regex"], out)
    assert not out.exists()

    monkeypatch.setattr(peft, "__version__", "0.18.1")
    with pytest.raises(MergeError, match=r"needs peft >= 0.19 .*found peft 0.18.1"):
        adapters.peft_merge(small / "base", ads, out)


def test_peft_ties_elects_signs_unweighted_and_divides_by_count():
    """On plain tensors with density 1 (no trimming), weights (3, 1), base 0:
    deltas (+1, -2): mergekit elects the sign of 3*1 + 1*(-2) = +1, keeps model 1 and divides by its
    weight: +1. peft elects the sign of 1 - 2 = -1 (unweighted), keeps model 2, 1*(-2) / 1 task: -2.
    deltas (+1, +1): mergekit (3 + 1) / (3 + 1) = 1; peft (3 + 1) / 2 tasks = 2."""
    w = torch.tensor([3.0, 1.0])
    zero = torch.zeros(2)
    deltas = [torch.tensor([1.0, 1.0]), torch.tensor([-2.0, 1.0])]
    ours = merge_tensors("ties", deltas, zero, w.tolist(), density=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns that density 1 prunes nothing
        theirs = merge_utils.ties(deltas, w, density=1.0)
    assert ours.tolist() == [1.0, 1.0]
    assert theirs.tolist() == [-2.0, 2.0]


def test_peft_ties_merges_factors_not_deltas(tmp_path):
    """Two r=1 adapters on q_proj of layer 0, (B, A) = (b, a) and (-b, -a): the same delta b a^T.
    Our TIES (density 1, weights 1, normalize) of the folded models gives base + b a^T. peft's ties
    merges A and B separately, each factor weighted by sqrt(w_i * scaling_i) = sqrt(2): the elected
    sign of a + (-a) = 0 is +, so each entry keeps the positive one of a_j, -a_j, i.e. merged
    A = sqrt(2) |a|, merged B = sqrt(2) |b| (scaling 1), delta 2 |b| |a|^T. With a, b of entries
    +-0.1 ours is +-0.02 and peft's +0.02 everywhere: they differ by exactly 0.04 on the 128 of 256
    entries where b_i a_j < 0 and agree on the rest."""
    _base("llama").save_pretrained(tmp_path / "base")
    base = load_model(tmp_path / "base")
    a = torch.tensor([0.1, -0.1] * 8)
    b = torch.tensor([0.1, 0.1, -0.1, -0.1] * 4)
    for i, sign in enumerate((1.0, -1.0)):
        model = _lora(base, seed=0, r=1, target_modules=["q_proj"], layers_to_transform=[0])
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(sign * a[None, :])
            layer.lora_B["default"].weight.copy_(sign * b[:, None])
        assert layer.scaling["default"] == 2.0  # lora_alpha = 2 r
        _save(model, tmp_path / f"ad{i}", tmp_path / f"folded{i}")
    name = "model.layers.0.self_attn.q_proj.weight"
    delta = 2.0 * torch.outer(b, a)

    ours = merge_models("ties", [tmp_path / "folded0", tmp_path / "folded1"], tmp_path / "ties",
                        tmp_path / "base", [1.0, 1.0], density=1.0)
    ours_delta = _tensors(ours)[name] - _tensors(tmp_path / "base")[name]
    assert torch.allclose(ours_delta, delta, atol=1e-6, rtol=0)

    model, names = adapters.load_adapters(tmp_path / "base", [tmp_path / "ad0", tmp_path / "ad1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.add_weighted_adapter(names, [1.0, 1.0], "ties", combination_type="ties", density=1.0)
    peft_delta = model.base_model.model.model.layers[0].self_attn.q_proj.get_delta_weight("ties")
    assert torch.allclose(peft_delta, delta.abs(), atol=1e-6, rtol=0)

    gap = (peft_delta - ours_delta).abs()
    assert int((gap > 1e-3).sum()) == 128 and gap.numel() == 256
    assert float(gap.max()) == pytest.approx(0.04, abs=1e-6)
    assert float(gap[gap <= 1e-3].max()) < 1e-7
