"""Tests for hyperllama_lib.merging: hand-computed math on tiny tensors and end-to-end merges."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hyperllama_lib import merging as mg

T = torch.tensor


def assert_close(got: torch.Tensor, want: list | torch.Tensor) -> None:
    torch.testing.assert_close(got, torch.as_tensor(want, dtype=torch.float32), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- registry

def test_registry_declares_base_and_parameters():
    assert {"linear", "task_arithmetic", "ties"} <= set(mg.METHODS)
    assert not mg.METHODS["linear"].needs_base
    assert mg.METHODS["ties"].needs_base and mg.METHODS["task_arithmetic"].needs_base
    assert set(mg.METHODS["ties"].parameters) == {"density", "normalize"}
    with pytest.raises(ValueError, match="unknown merge method 'nope'"):
        mg.merge_tensors("nope", [T([1.0])])
    with pytest.raises(ValueError, match="needs a base model"):
        mg.merge_tensors("ties", [T([1.0])])


# ---------------------------------------------------------------- linear, task arithmetic

def test_linear():
    a, b = T([1.0, 2.0, -4.0]), T([3.0, 0.0, 4.0])
    assert_close(mg.merge_tensors("linear", [a, b]), [2.0, 1.0, 0.0])
    assert_close(mg.merge_tensors("linear", [a, b], weights=[3, 1]), [1.5, 1.5, -2.0])
    assert_close(mg.merge_tensors("linear", [a, b], weights=[3, 1], normalize=False),
                 [6.0, 6.0, -8.0])
    assert_close(mg.merge_tensors("linear", [a]), a)
    # A base, if given, is not part of the average.
    assert_close(mg.merge_tensors("linear", [a, b], base=T([100.0, 100.0, 100.0])), [2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="sum to 0"):
        mg.merge_tensors("linear", [a, b], weights=[1, -1])


def test_task_arithmetic():
    base = T([1.0, 1.0])
    a, b = T([3.0, 1.0]), T([1.0, -3.0])  # task vectors [2, 0] and [0, -4]
    assert_close(mg.merge_tensors("task_arithmetic", [a, b], base, normalize=False), [3.0, -3.0])
    assert_close(mg.merge_tensors("task_arithmetic", [a, b], base), [2.0, -1.0])
    # With normalize it equals the linear average (the paper's remark).
    assert_close(mg.merge_tensors("task_arithmetic", [a, b], base, weights=[1, 3]),
                 mg.merge_tensors("linear", [a, b], weights=[1, 3]))
    assert_close(mg.merge_tensors("task_arithmetic", [base, base], base), base)


# ---------------------------------------------------------------- TIES

def test_magnitude_prune_topk_and_ties():
    d = T([[0.1, -3.0, 2.0], [-2.0, 0.5, 0.0]])
    assert_close(mg.magnitude_prune(d, 0.5), [[0.0, -3.0, 2.0], [-2.0, 0.0, 0.0]])
    assert_close(mg.magnitude_prune(d, 1 / 3), [[0.0, -3.0, 2.0], [0.0, 0.0, 0.0]])  # k=2: tie
    assert_close(mg.magnitude_prune(d, 1.0), d)
    assert_close(mg.magnitude_prune(d, 0.01), torch.zeros(2, 3))  # k = int(0.06) = 0
    assert_close(mg.magnitude_prune(T([1.0, -1.0, 1.0, -1.0]), 0.5), [1.0, -1.0, 0.0, 0.0])


def test_ties_hand_computed():
    base = T([0.0, 0.0, 0.0, 0.0])
    a = T([2.0, -1.0, 4.0, 0.5])
    b = T([-1.0, 3.0, 1.0, -0.25])
    c = T([1.0, -0.5, 0.0, 0.1])
    # density 1: no pruning. Sums [2, 1.5, 5, 0.35] -> all elected +.
    # entry0: keep a=2, c=1 -> 3/2; entry1: keep b=3 -> 3; entry2: keep a, b (c=0 never kept) -> 5/2;
    # entry3: keep a=0.5, c=0.1 -> 0.3
    assert_close(mg.merge_tensors("ties", [a, b, c], base, density=1.0), [1.5, 3.0, 2.5, 0.3])
    assert_close(mg.merge_tensors("ties", [a, b, c], base, density=1.0, normalize=False),
                 [3.0, 3.0, 5.0, 0.6])
    # density 0.5 keeps 2 of 4 per model: a -> [2, 0, 4, 0], c -> [1, -0.5, 0, 0],
    # b -> [-1, 3, 0, 0] (|-1| ties |1|: the lower index wins); sums [2, 2.5, 4, 0] elect + everywhere
    # (a zero sum elects +; entry3 has nothing kept, so it stays at the base). Base shifted by 1.
    merged = mg.merge_tensors("ties", [a + 1, b + 1, c + 1], base + 1, density=0.5)
    assert_close(merged, [2.5, 4.0, 5.0, 1.0])


def test_ties_sign_tie_weights_and_edge_cases():
    base = T([1.0, 1.0, 1.0])
    # entry0: deltas +1, -1 -> sum 0 elects +, keeps +1; entry1: +2 and -3 -> elects -, keeps -3;
    # entry2: both zero -> divisor 0 -> 1, stays at base.
    a, b = T([2.0, 3.0, 1.0]), T([0.0, -2.0, 1.0])
    assert_close(mg.merge_tensors("ties", [a, b], base, density=1.0), [2.0, -2.0, 1.0])
    # Weights [2, 1]: weighted deltas [2, 4, 0] and [-1, -3, 0] -> elect +, + -> 2/2, 4/2.
    assert_close(mg.merge_tensors("ties", [a, b], base, weights=[2, 1], density=1.0),
                 [2.0, 3.0, 1.0])
    # Weights [1, 4]: [1, 2, 0] and [-4, -12, 0] -> elect -, - -> -4/4, -12/4.
    assert_close(mg.merge_tensors("ties", [a, b], base, weights=[1, 4], density=1.0),
                 [0.0, -2.0, 1.0])
    # All-zero task vectors give the base.
    assert_close(mg.merge_tensors("ties", [base, base], base), base)
    # A single model: its pruned task vector added to the base.
    assert_close(mg.merge_tensors("ties", [T([1.5, 4.0, -2.0])], base, density=0.34),
                 [1.0, 4.0, 1.0])
    # A very small density prunes everything on small tensors: the base.
    assert_close(mg.merge_tensors("ties", [a, b], base, density=0.01), base)


def test_ties_is_deterministic_and_matches_reference_on_random_tensors():
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
    torch.testing.assert_close(got, mg.merge_tensors("ties", thetas, base, weights=weights,
                                                     density=0.4), atol=0, rtol=0)


def test_merge_state_dicts():
    sds = [{"x": T([1.0, 2.0]), "y": T([[0.0]])}, {"x": T([3.0, 4.0]), "y": T([[2.0]])}]
    merged = mg.merge_state_dicts("linear", sds)
    assert_close(merged["x"], [2.0, 3.0])
    assert_close(merged["y"], [[1.0]])


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


def save_model(path: Path, seed: int, tokenizer, hidden: int = 16, **save_kwargs) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=32, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path, **save_kwargs)
    tokenizer.save_pretrained(path)
    return path


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
    dirs["other_tok"] = save_model(root / "other_tok", 5, make_tokenizer(["a", "b", "c"]))
    return dirs


def test_merge_models_ties_end_to_end(saved, tmp_path):
    models = [saved["est"], saved["isl"], saved["swe"]]
    assert (saved["swe"] / "model.safetensors.index.json").is_file()
    out = mg.merge_models("ties", models, tmp_path / "merged", base_dir=saved["base"],
                          weights=[1.0, 1.0, 1.0], density=0.5)
    assert out == tmp_path / "merged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary folder left
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, LlamaForCausalLM)
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert "lm_head.weight" not in f.keys()  # tied embeddings stay tied
    want = mg.merge_state_dicts("ties", [load_tensors(m) for m in models],
                                base=load_tensors(saved["base"]), density=0.5)
    got = load_tensors(out)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=0, rtol=0)
    assert (out / "tokenizer.json").read_bytes() == (saved["base"] / "tokenizer.json").read_bytes()
    manifest = json.loads((out / "merge.json").read_text())
    assert manifest == {"method": "ties", "models": [str(m) for m in models],
                        "base": str(saved["base"]), "weights": [1.0, 1.0, 1.0], "density": 0.5,
                        "normalize": True, "seed": 0, "dtype": "float32"}
    with pytest.raises(FileExistsError):
        mg.merge_models("ties", models, out, base_dir=saved["base"])


def test_merge_identical_models_linear_is_identity(saved, tmp_path):
    out = mg.merge_models("linear", [saved["est"]] * 3, tmp_path / "same", dtype="float32")
    got, want = load_tensors(out), load_tensors(saved["est"])
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-7, rtol=0)
    half = mg.merge_models("linear", [saved["est"], saved["isl"]], tmp_path / "half",
                           dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(half)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


def test_merge_models_rejects_mismatches(saved, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"hidden_size=16 .*wide.* hidden_size=32"):
        mg.merge_models("linear", [saved["est"], saved["wide"]], out)
    with pytest.raises(ValueError, match="tokenizer mismatch: .*other_tok"):
        mg.merge_models("linear", [saved["est"], saved["other_tok"]], out)
    with pytest.raises(ValueError, match="'ties' needs a base model"):
        mg.merge_models("ties", [saved["est"], saved["isl"]], out)
    assert not out.exists()


def test_check_compatible_tensor_shapes(saved, tmp_path):
    # Same config, but one tensor of another shape (a hand-edited checkpoint).
    bad = tmp_path / "bad"
    shutil.copytree(saved["est"], bad)
    tensors = load_tensors(bad)
    tensors["model.norm.weight"] = torch.ones(8)
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"shape mismatch for model.norm.weight: .* \[16\] .* \[8\]"):
        mg.check_compatible([saved["est"], bad])
