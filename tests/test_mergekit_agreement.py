"""Our merges against mergekit 0.1.5 on small random Llama models, tensor by tensor.

mergekit 0.1.5 installs into the project's .venv beside its pins: `pip install --dry-run
mergekit==0.1.5` there would only add immutables, mergekit, protobuf and sentencepiece, leaving torch
2.13.0+cpu, transformers 5.23.0, tokenizers, safetensors, huggingface_hub and accelerate as they are
(mergekit 0.1.5 requires transformers>=5,<6 itself). So no separate venv is needed:

    .venv/bin/pip install -e '.[test]'        # the test extra includes mergekit==0.1.5

Without it these tests skip. mergekit runs in this process through its Python API on the
mergekit_config.yml that `merging.merge_models` writes (what `mergekit-yaml` does with the file),
on CPU in float32. linear, task_arithmetic, ties and multislerp must agree within 1e-6. DARE draws
random masks, which cannot follow mergekit's random stream, so for dare_ties and dare_linear we
check that mergekit accepts the config and that the share of entries left at the base (dropped in
every model) and the mean size of the merged task vector agree statistically.
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_merging import load_tensors, make_tokenizer

from hyperllama_lib.merging import engine as mg
from hyperllama_lib.models import modeling

try:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"mergekit is not installed ({e}); pip install -e '.[test]' to run the agreement "
                "tests", allow_module_level=True)

N_MODELS = 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A base and three 'language models': base plus a random task vector each (fp32, model_type llama)."""
    root = tmp_path_factory.mktemp("mk")
    config = modeling.smollm2_config(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4,
                                     num_kv_heads=2, head_dim=8, intermediate_size=64)
    tokenizer = make_tokenizer(["the", "cat", "sat", "on", "mat"])
    base = modeling.new_model(config, seed=0)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    dirs = []
    for i in range(N_MODELS):
        model = modeling.new_model(config, seed=0)
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
        model.save_pretrained(root / f"m{i}")
        tokenizer.save_pretrained(root / f"m{i}")
        dirs.append(root / f"m{i}")
    return root, root / "base", dirs


def run_mergekit(config_yaml: str, out) -> dict[str, torch.Tensor]:
    config = MergeConfiguration.model_validate(yaml.safe_load(config_yaml))
    run_merge(config, str(out), MergeOptions(device="cpu", out_shard_size=1 << 40, quiet=True,
                                             write_model_card=False, random_seed=0))
    return load_tensors(out)


def ours_and_theirs(models, tmp_path, method, weights, **params):
    _, base, dirs = models
    ours = mg.merge_models(method, dirs, tmp_path / "ours", base_dir=base, weights=weights, **params)
    config_yaml = (ours / "mergekit_config.yml").read_text()
    assert json.loads((ours / "merge.json").read_text())["mergekit_config"] == "mergekit_config.yml"
    theirs = run_mergekit(config_yaml, tmp_path / "theirs")
    return load_tensors(ours), theirs, config_yaml


CASES = [
    ("linear", [1.0, 1.0, 1.0], {}),
    ("linear", [0.5, 1.0, 2.0], {"normalize": False}),
    ("task_arithmetic", [1.0, 1.0, 1.0], {}),
    ("task_arithmetic", [0.3, 1.0, -0.5], {"normalize": False}),
    ("ties", [1.0, 1.0, 1.0], {}),
    ("ties", [1.0, 0.5, 2.0], {"density": 0.3}),
    ("ties", [1.0, 1.0, 1.0], {"density": 0.9, "normalize": False}),
    ("multislerp", [1.0, 1.0, 1.0], {}),
    ("multislerp", [1.0, 2.0, 0.5], {"normalize_weights": False}),
]


@pytest.mark.parametrize("method,weights,params", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_agrees_with_mergekit(models, tmp_path, method, weights, params):
    ours, theirs, config_yaml = ours_and_theirs(models, tmp_path, method, weights, **params)
    assert f"merge_method: {method}" in config_yaml
    # mergekit writes the tied output head as well; it must be the merged embedding
    if "lm_head.weight" in theirs and "lm_head.weight" not in ours:
        torch.testing.assert_close(theirs.pop("lm_head.weight"), ours["model.embed_tokens.weight"],
                                   atol=1e-6, rtol=0)
    assert set(ours) == set(theirs)
    worst = max((ours[n] - theirs[n]).abs().max().item() for n in ours)
    assert worst <= 1e-6, f"{method}: max |ours - mergekit| = {worst:.2e}"
    base = load_tensors(models[1])
    assert max((ours[n] - base[n]).abs().max().item() for n in ours) > 1e-3  # the merge did something


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_dare_statistics_match_mergekit(models, tmp_path, method):
    ours, theirs, _ = ours_and_theirs(models, tmp_path, method, [1.0] * N_MODELS, density=0.5, seed=7)
    base = load_tensors(models[1])
    theirs.pop("lm_head.weight", None)
    names = [n for n in ours if ours[n].numel() > 1000]
    at_base = {k: sum(int((t[n] == base[n]).sum()) for n in names) / sum(base[n].numel() for n in names)
               for k, t in (("ours", ours), ("theirs", theirs))}
    # an entry stays at the base only where all three models dropped it: 0.5 ** 3
    assert abs(at_base["ours"] - 0.125) < 0.01 and abs(at_base["theirs"] - 0.125) < 0.01, at_base
    size = {k: torch.cat([(t[n] - base[n]).abs().flatten() for n in names]).mean().item()
            for k, t in (("ours", ours), ("theirs", theirs))}
    assert abs(size["ours"] / size["theirs"] - 1) < 0.02, size
