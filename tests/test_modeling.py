import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import hyperllama_lib  # noqa: F401  (registers hyperllama)
from hyperllama_lib.models.modeling import (
    PAPER_1X,
    PAPER_2X,
    HyperLlamaConfig,
    HyperLlamaForCausalLM,
    ModelFolderError,
    count_parameters,
    export_llama,
    lm_head_factor,
    load_model,
    new_model,
    smollm2_config,
)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=48)


def hyper_config(factor: float = 2, **overrides) -> HyperLlamaConfig:
    d = smollm2_config(**TINY).to_dict()
    d.pop("model_type")
    d.update(overrides)
    return HyperLlamaConfig(**d, lm_head_normalization_factor=factor)


def ids(seed: int = 0, vocab: int = 97) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(seed))


def test_paper_parameter_counts():
    assert count_parameters(smollm2_config(**PAPER_1X))["total"] == 180_078_912
    assert count_parameters(smollm2_config(**PAPER_2X))["total"] == 572_494_464
    counts = count_parameters(smollm2_config(**PAPER_1X))
    assert counts["embedding"] == 128256 * 576
    assert counts["embedding"] + counts["non_embedding"] == counts["total"]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_word_embeddings": False}, {"attention_bias": True, "mlp_bias": True}],
)
def test_config_count_matches_model(overrides):
    config = smollm2_config(**TINY)
    for key, value in overrides.items():
        setattr(config, key, value)
    assert count_parameters(config) == count_parameters(new_model(config, seed=0))


def test_smollm2_config_fields():
    config = smollm2_config(**TINY, rope_theta=500.0)
    assert config.hidden_act == "gelu" and config.tie_word_embeddings
    assert config.initializer_range == pytest.approx(1 / 32**0.5)
    assert config.rms_norm_eps == 1e-5 and config.max_position_embeddings == 2048
    model = new_model(config, seed=0)
    # rope theta must reach the rotary embedding, not just sit in the config
    inv_freq = 1.0 / (500.0 ** (torch.arange(0, 8, 2).float() / 8))
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, inv_freq)
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(model.model.layers[0].mlp.act_fn(x), F.gelu(x))  # exact GELU


def test_new_model_is_deterministic_fp32():
    config = smollm2_config(**TINY)
    a, b, c = new_model(config, 1), new_model(config, 1), new_model(config, 2)
    assert all(p.dtype == torch.float32 for p in a.parameters())
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    std = a.model.layers[0].mlp.up_proj.weight.std().item()
    assert abs(std - 1 / 32**0.5) < 0.02


def test_hyperllama_divides_logits_and_loss():
    plain = new_model(smollm2_config(**TINY), seed=3)
    hyper = new_model(hyper_config(2), seed=0)
    hyper.load_state_dict(plain.state_dict())
    assert isinstance(hyper, HyperLlamaForCausalLM)
    assert hyper.lm_head.weight is hyper.model.embed_tokens.weight
    x = ids()
    out = hyper(x, labels=x)
    torch.testing.assert_close(out.logits, plain(x).logits / 2, rtol=0, atol=1e-6)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 97), x[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert lm_head_factor(hyper) == 2.0 and lm_head_factor(plain) == 1.0
    assert lm_head_factor(hyper.config) == 2.0


def test_hyperllama_save_load_fresh_process(tmp_path):
    model = new_model(hyper_config(2), seed=0)
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "hyperllama" and config["lm_head_normalization_factor"] == 2
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    x = ids()
    with torch.no_grad():
        save_file({"ids": x, "logits": model(x).logits}, str(tmp_path / "expected.safetensors"))
    script = f"""
import torch, hyperllama_lib
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'm')!r})
e = load_file({str(tmp_path / 'expected.safetensors')!r})
assert m.lm_head.weight is m.model.embed_tokens.weight
with torch.no_grad():
    assert (m(e["ids"]).logits - e["logits"]).abs().max() == 0
print(type(m).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("HyperLlamaForCausalLM")


def test_load_model_with_authors_auto_map(tmp_path):
    """The released checkpoints name remote code in auto_map; the registered class must win without it."""
    model = new_model(hyper_config(2), seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration.HyperLlamaConfig", "AutoModelForCausalLM": "modeling.X"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_model(tmp_path)
    assert isinstance(loaded, HyperLlamaForCausalLM)
    x = ids()
    assert torch.equal(loaded(x).logits, model(x).logits)


def test_load_model_bf16(tmp_path):
    new_model(smollm2_config(**TINY), seed=0).save_pretrained(tmp_path, safe_serialization=True)
    model = load_model(tmp_path, dtype=torch.bfloat16)
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.bfloat16


def write_folder(path: Path, config: dict | str | None, weights: bool = True) -> Path:
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights:
        save_file({"x": torch.zeros(1)}, str(path / "model.safetensors"))
    return path


@pytest.mark.parametrize(
    "config, weights, message",
    [
        (None, True, "no config.json"),
        ("{not json", True, "not valid JSON"),
        ({"model_type": "gpt2"}, True, "model_type 'gpt2' is not a Llama-architecture model"),
        ({"hidden_size": 8}, True, "model_type None is not a Llama-architecture model"),
        ({"model_type": "llama"}, False, "no *.safetensors weights"),
    ],
)
def test_load_model_rejects_bad_folders(tmp_path, config, weights, message):
    folder = write_folder(tmp_path / "bad", config, weights)
    with pytest.raises(ModelFolderError, match=message.replace("*", r"\*").replace("(", r"\(")) as err:
        load_model(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_load_model_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_load_model_refuses_bin_only(tmp_path):
    folder = write_folder(tmp_path / "bin", smollm2_config(**TINY).to_dict(), weights=False)
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelFolderError, match="safetensors"):
        load_model(folder)


@pytest.mark.parametrize("mode", ["fold_norm", "untie"])
def test_export_llama(tmp_path, mode):
    hyper = new_model(hyper_config(3), seed=0)
    plain = export_llama(hyper, mode)
    assert type(plain) is LlamaForCausalLM and plain.config.model_type == "llama"
    assert not hasattr(plain.config, "lm_head_normalization_factor")
    assert plain.config.tie_word_embeddings == (mode == "fold_norm")
    if mode == "untie":
        assert plain.lm_head.weight is not plain.model.embed_tokens.weight
    x = ids()
    torch.testing.assert_close(plain(x).logits, hyper(x).logits, rtol=0, atol=1e-5)
    # and it survives a save/load as a plain llama
    plain.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = load_model(tmp_path)
    assert type(reloaded) is LlamaForCausalLM
    assert torch.equal(reloaded(x).logits, plain(x).logits)


def test_export_plain_llama_is_a_copy():
    model = new_model(smollm2_config(**TINY), seed=0)
    out = export_llama(model)
    assert out is not model and type(out) is LlamaForCausalLM
    assert out.model.embed_tokens.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    x = ids()
    assert torch.equal(out(x).logits, model(x).logits)


def test_auto_model_from_config():
    model = AutoModelForCausalLM.from_config(hyper_config(2))
    assert isinstance(model, HyperLlamaForCausalLM)
    assert isinstance(smollm2_config(**TINY), LlamaConfig)
