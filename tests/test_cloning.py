import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hyperllama_lib.models.cloning import clone_config, clone_folder, hyperclone
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

VOCAB = 101


def tiny(**overrides) -> LlamaConfig:
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=40,
        hidden_act="gelu",
        tie_word_embeddings=True,
        initializer_range=0.15,
    )
    kw.update(overrides)
    return LlamaConfig(**kw)


def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(0))


def max_logit_diff(a: LlamaForCausalLM, b: LlamaForCausalLM) -> float:
    with torch.no_grad():
        return (a(ids()).logits - b(ids()).logits).abs().max().item()


def perturb_norms(model: LlamaForCausalLM, seed: int = 1) -> LlamaForCausalLM:
    """Random norm weights and biases, so that tiling mistakes in them cannot hide behind ones/zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                noise = torch.randn(p.shape, generator=gen)
                p.copy_(1 + 0.3 * noise if "norm" in name else 0.1 * noise)
    return model


CASES = {
    "gqa_tied_gelu": (tiny(), {}),
    "mha": (tiny(num_key_value_heads=6), {}),
    "mqa": (tiny(num_key_value_heads=1), {}),
    "untied": (tiny(tie_word_embeddings=False), {}),
    "silu": (tiny(hidden_act="silu"), {}),
    "gelu_tanh": (tiny(hidden_act="gelu_pytorch_tanh"), {}),
    "biases": (tiny(attention_bias=True, mlp_bias=True), {}),
    "factor3": (tiny(), {"factor": 3}),
    "factor3_untied_biases": (tiny(tie_word_embeddings=False, attention_bias=True, mlp_bias=True), {"factor": 3}),
    "ffn_factor3": (tiny(), {"ffn_factor": 3}),
    "ffn_factor1": (tiny(), {"factor": 2, "ffn_factor": 1}),
}


@pytest.mark.parametrize("name", CASES)
def test_clone_preserves_logits(name):
    config, kw = CASES[name]
    source = perturb_norms(new_model(config, seed=0))
    clone = hyperclone(source, **kw)
    factor, ffn = kw.get("factor", 2), kw.get("ffn_factor", kw.get("factor", 2))
    c = clone.config
    assert c.hidden_size == config.hidden_size * factor and c.intermediate_size == config.intermediate_size * ffn
    assert c.num_attention_heads == config.num_attention_heads * factor
    assert c.num_key_value_heads == config.num_key_value_heads * factor and c.head_dim == config.head_dim
    assert c.num_hidden_layers == config.num_hidden_layers
    if config.tie_word_embeddings:
        assert isinstance(clone, HyperLlamaForCausalLM) and lm_head_factor(clone) == factor
        assert clone.lm_head.weight is clone.model.embed_tokens.weight
    else:
        assert type(clone) is LlamaForCausalLM and not c.tie_word_embeddings
    assert count_parameters(clone) == count_parameters(c)
    assert max_logit_diff(source, clone) <= 1e-5


def test_hidden_states_are_copies():
    source = perturb_norms(new_model(tiny(), seed=0))
    clone = hyperclone(source, factor=3)
    with torch.no_grad():
        h = source(ids(), output_hidden_states=True).hidden_states
        hc = clone(ids(), output_hidden_states=True).hidden_states
    for layer in (0, 1, 2):  # embeddings, after layer 0, after layer 1
        torch.testing.assert_close(hc[layer], torch.cat([h[layer]] * 3, dim=-1), rtol=0, atol=1e-5)


def test_weight_layout():
    source = perturb_norms(new_model(tiny(attention_bias=True), seed=0))
    clone = hyperclone(source)
    s, c = source.model.layers[0], clone.model.layers[0]
    q = s.self_attn.q_proj.weight
    torch.testing.assert_close(c.self_attn.q_proj.weight, torch.cat([torch.cat([q, q], 1)] * 2) / 2)
    torch.testing.assert_close(c.self_attn.q_proj.bias, torch.cat([s.self_attn.q_proj.bias] * 2))
    torch.testing.assert_close(c.input_layernorm.weight, torch.cat([s.input_layernorm.weight] * 2))
    e = source.model.embed_tokens.weight
    torch.testing.assert_close(clone.model.embed_tokens.weight, torch.cat([e, e], 1))  # not divided
    # GQA: new query heads h and h + H both use a copy of the old kv head h // group
    heads, kv, d = 6, 2, 8
    k_new = c.self_attn.k_proj.weight.view(2 * kv, d, -1)[..., :48]
    q_new = c.self_attn.q_proj.weight.view(2 * heads, d, -1)[..., :48]
    group = heads // kv
    for head in range(2 * heads):
        old = head % heads
        torch.testing.assert_close(q_new[head] * 2, q.view(heads, d, -1)[old])
        torch.testing.assert_close(k_new[head // group] * 2, s.self_attn.k_proj.weight.view(kv, d, -1)[old // group])


def test_noise_variant():
    source = perturb_norms(new_model(tiny(tie_word_embeddings=False, mlp_bias=True), seed=0))
    plain = hyperclone(source)
    noisy = hyperclone(source, noise_std=0.05, seed=7)
    again = hyperclone(source, noise_std=0.05, seed=7)
    other = hyperclone(source, noise_std=0.05, seed=8)
    for name in ("model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        w0, w1 = plain.state_dict()[name], noisy.state_dict()[name]
        assert (w1 - w0).abs().max() > 0.01, name
        assert torch.equal(w1, again.state_dict()[name]) and not torch.equal(w1, other.state_dict()[name])
        half = w0.shape[1] // 2  # the noise blocks cancel across the input-side copies
        torch.testing.assert_close((w1 - w0)[:, :half] + (w1 - w0)[:, half:], torch.zeros_like(w0[:, :half]), rtol=0, atol=1e-6)
    # vectors and the embedding are never noised
    for name in ("model.norm.weight", "model.embed_tokens.weight", "model.layers.0.mlp.up_proj.bias"):
        assert torch.equal(plain.state_dict()[name], noisy.state_dict()[name])
    assert max_logit_diff(source, noisy) <= 1e-5


def test_noise_variant_factor3_tied():
    source = perturb_norms(new_model(tiny(), seed=0))
    noisy = hyperclone(source, factor=3, noise_std=0.05)
    plain = hyperclone(source, factor=3)
    assert not torch.equal(noisy.model.layers[0].mlp.up_proj.weight, plain.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(noisy.model.embed_tokens.weight, plain.model.embed_tokens.weight)
    assert max_logit_diff(source, noisy) <= 1e-5


def test_clone_of_clone_compounds():
    source = perturb_norms(new_model(tiny(), seed=0))
    twice = hyperclone(hyperclone(source), factor=3, ffn_factor=2, noise_std=0.02)
    assert isinstance(twice.config, HyperLlamaConfig) and lm_head_factor(twice) == 6
    assert twice.config.hidden_size == 48 * 6 and twice.config.num_key_value_heads == 2 * 6
    assert max_logit_diff(source, twice) <= 1e-5
    untied = hyperclone(hyperclone(new_model(tiny(tie_word_embeddings=False), seed=0)))
    assert type(untied.config) is LlamaConfig


@pytest.mark.parametrize("mode", ["fold_norm", "untie"])
def test_exported_clone_matches(mode):
    source = perturb_norms(new_model(tiny(), seed=0))
    exported = export_llama(hyperclone(source), mode)
    assert type(exported) is LlamaForCausalLM
    assert max_logit_diff(source, exported) <= 1e-5


def test_clone_keeps_dtype():
    source = new_model(tiny(), seed=0).to(torch.bfloat16)
    clone = hyperclone(source)
    assert all(p.dtype == torch.bfloat16 for p in clone.parameters())


def test_clone_config_counts():
    config = clone_config(smollm2_config(**PAPER_1X))
    assert isinstance(config, HyperLlamaConfig) and config.lm_head_normalization_factor == 2
    assert count_parameters(config)["total"] == 572_494_464
    assert count_parameters(config) == count_parameters(smollm2_config(**PAPER_2X))
    assert config.rope_parameters["rope_theta"] == 10000.0 and config.hidden_act == "gelu"
    with pytest.raises(ValueError):
        clone_config(tiny(), factor=0)


# --- clone_folder -------------------------------------------------------------------------------

TOKENIZER_FILES = {
    "tokenizer.json": '{"version": "1.0", "dummy": true}',
    "tokenizer_config.json": '{"model_max_length": 2048}',
    "special_tokens_map.json": '{"bos_token": "<s>"}',
}


def make_source(path: Path, config: LlamaConfig | None = None) -> LlamaForCausalLM:
    model = perturb_norms(new_model(config or tiny(), seed=0))
    model.save_pretrained(path, safe_serialization=True)
    for name, text in TOKENIZER_FILES.items():
        (path / name).write_text(text)
    return model


def test_clone_folder_round_trip(tmp_path):
    source = make_source(tmp_path / "src")
    out = clone_folder(tmp_path / "src", tmp_path / "out" / "clone", noise_std=0.01, seed=3)
    assert out == tmp_path / "out" / "clone"
    clone = load_model(out)
    assert isinstance(clone, HyperLlamaForCausalLM) and lm_head_factor(clone) == 2
    assert max_logit_diff(source, clone) <= 1e-5
    for name, text in TOKENIZER_FILES.items():
        assert (out / name).read_text() == text
    info = json.loads((out / "hyperclone.json").read_text())
    assert info["factor"] == 2 and info["ffn_factor"] == 2 and info["noise_std"] == 0.01 and info["seed"] == 3
    assert info["source"] == str((tmp_path / "src").resolve())
    assert info["parameters_before"] == count_parameters(source)
    assert info["parameters_after"] == count_parameters(clone)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary folders left behind


def test_clone_folder_destination_rules(tmp_path):
    make_source(tmp_path / "src", tiny(tie_word_embeddings=False))
    (tmp_path / "empty").mkdir()
    clone_folder(tmp_path / "src", tmp_path / "empty", factor=3)  # an empty folder may be filled
    assert json.loads((tmp_path / "empty" / "config.json").read_text())["hidden_size"] == 48 * 3
    with pytest.raises(FileExistsError, match="not empty"):
        clone_folder(tmp_path / "src", tmp_path / "empty")
    clone_folder(tmp_path / "src", tmp_path / "empty", overwrite=True)
    config = json.loads((tmp_path / "empty" / "config.json").read_text())
    assert config["hidden_size"] == 48 * 2 and config["model_type"] == "llama"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "src"]


def test_clone_folder_rejects_gpt2(tmp_path):
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    with pytest.raises(ModelFolderError, match="model_type 'gpt2' is not a Llama-architecture model"):
        clone_folder(tmp_path / "gpt2", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_config", "no config.json"),
        ("bad_json", "not valid JSON"),
        ("no_weights", "no \\*.safetensors weights"),
        ("missing", "does not exist"),
    ],
)
def test_clone_folder_rejects_malformed(tmp_path, breakage, message):
    src = tmp_path / "src"
    make_source(src)
    if breakage == "no_config":
        (src / "config.json").unlink()
    elif breakage == "bad_json":
        (src / "config.json").write_text('{"model_type": "llama",')
    elif breakage == "no_weights":
        (src / "model.safetensors").unlink()
        save_file({"x": torch.zeros(1)}, str(src / "unrelated.bin"))
    else:
        src = tmp_path / "elsewhere"
    with pytest.raises(ModelFolderError, match=message):
        clone_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
