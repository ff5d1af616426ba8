import pytest

from hyperllama_lib import params
from hyperllama_lib.params import ParamError, load_params


@pytest.mark.parametrize("scale", params.SCALES)
def test_every_scale_loads(scale, data_dir):
    p = load_params(scale, need_data=scale != "paper")
    assert p.scale == scale
    assert p.global_batch_size % p.micro_batch_size == 0


def test_paper_scale_is_the_authors_recipe():
    p = load_params("paper", need_data=False)
    assert (p.hidden_size, p.num_layers, p.num_heads, p.num_kv_heads, p.head_dim, p.intermediate_size) == \
        (576, 30, 9, 3, 64, 1536)
    assert p.tokenizer == "llama3" and p.hidden_act == "gelu"
    assert (p.lr, p.adam_beta1, p.adam_beta2, p.adam_eps, p.weight_decay, p.grad_clip) == \
        (3e-3, 0.9, 0.95, 1e-8, 0.01, 1.0)
    assert p.global_batch_size * p.seq_len == 10_485_760
    assert p.cpt_steps == {"swe": 6279, "fas": 5928, "est": 7087, "isl": 2514, "fao": 144, "multilingual": 21940}
    assert (p.seed_steps, p.base_steps) == (15244, 3572)
    assert p.checkpoint_every_tokens == 250 * 10_485_760


def test_unknown_key_is_one_line_with_valid_keys(data_dir):
    with pytest.raises(ParamError) as e:
        load_params("tiny", {"lrr": 0.1})
    msg = str(e.value)
    assert "\n" not in msg and "'lrr'" in msg and "did you mean 'lr'" in msg and "valid keys:" in msg


@pytest.mark.parametrize("overrides, needle", [
    ({"lang": "klingon"}, "valid choices: eng (english), est (estonian)"),
    ({"langs": ["est", "xxx"]}, "unknown language 'xxx'"),
    ({"setups": ["3x"]}, "valid choices: 1x, 1x_cloned, 2x"),
    ({"merge_methods": ["frankenmerge"]}, "valid choices: dare_linear, dare_ties, fisher"),
    ({"tokenizer": "gpt2"}, "valid choices: bpe, llama3"),
    ({"lr": "fast"}, "bad value 'fast'"),
    ({"multiblimp_pairs_per_phenomenon": 0}, "multiblimp_pairs_per_phenomenon must be a positive number"),
    ({"multiblimp_dir": "/no/such/multiblimp"}, "multiblimp_dir /no/such/multiblimp not found"),
])
def test_bad_values_name_the_valid_choices(overrides, needle, data_dir):
    with pytest.raises(ParamError) as e:
        load_params("tiny", overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_scale():
    with pytest.raises(ParamError, match="valid choices: smoke, tiny, small, paper"):
        load_params("huge")


def test_missing_data_folder(tmp_path):
    with pytest.raises(ParamError, match="data folder .* not found.*HYPERLLAMA_DATA"):
        load_params("tiny", {"data_dir": str(tmp_path / "nowhere")})


def test_language_names_and_codes(data_dir):
    assert load_params("tiny", {"lang": "Persian"}).lang == "fas"
    assert load_params("tiny", {"lang": "isl"}).lang == "isl"
    assert load_params("tiny", {"lang": "multilingual"}).lang == "multilingual"
    assert load_params("tiny", {"langs": "estonian,swe"}).langs == ["est", "swe"]
    with pytest.raises(ParamError, match="source language"):
        load_params("tiny", {"lang": "english"})


def test_papermill_style_values_are_coerced(data_dir):
    p = load_params("tiny", {"lr": 1, "seed_steps": "7", "merge_normalize": "false", "heldout_max_docs": "None"})
    assert p.lr == 1.0 and isinstance(p.lr, float)
    assert p.seed_steps == 7 and p.merge_normalize is False and p.heldout_max_docs is None


def test_from_notebook_takes_injected_globals(data_dir):
    import math
    ns = {"scale": "smoke", "lang": "faroese", "math": math, "In": [], "_": None, "lr": 0.01}
    p = params.from_notebook(ns)
    assert (p.scale, p.lang, p.lr) == ("smoke", "fao", 0.01)
    with pytest.raises(ParamError, match="unknown parameter 'langg'"):
        params.from_notebook({**ns, "langg": "x"})


def test_run_dir_from_environment(monkeypatch, tmp_path, data_dir):
    monkeypatch.setenv(params.RUNS_ENV, str(tmp_path))
    assert load_params("smoke").run_path == tmp_path / "smoke"
    monkeypatch.setenv(params.DATA_ENV, str(data_dir))
    assert load_params("smoke").data_path == data_dir


def test_paper_params_build_the_paper_models():
    from hyperllama_lib import cloning, modeling, upscale
    p = load_params("paper", need_data=False)
    config = upscale.model_config(p, vocab_size=128_256, bos=128_000, eos=128_001)
    assert modeling.count_parameters(config)["total"] == 180_078_912
    assert modeling.count_parameters(cloning.clone_config(config, p.clone_factor))["total"] == 572_494_464
    assert config.hidden_act == "gelu" and config.tie_word_embeddings and config.rms_norm_eps == 1e-5


def test_eval_models_names_a_group_or_stops_with_the_choices():
    assert load_params("smoke", {"eval_models": "persian"}, need_data=False).eval_models == "fas"
    assert load_params("smoke", {"eval_models": "merged"}, need_data=False).eval_models == "merged"
    assert load_params("smoke", {"eval_models": "multilingual"}, need_data=False).eval_models == "multilingual"
    for bad in ("klingon", "eng"):
        with pytest.raises(ParamError, match="valid choices: base, merged, est"):
            load_params("smoke", {"eval_models": bad}, need_data=False)
