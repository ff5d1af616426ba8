import pytest

from hyperllama_lib import params
from hyperllama_lib.params import FULL_SETUPS, ParamError, load_params


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
    ({"lang": "klingon"}, "valid choices: est (estonian), fao (faroese)"),
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
    assert load_params("tiny", {"lang": "Each"}).lang == "each"  # 03_cpt: every target language in turn
    with pytest.raises(ParamError, match="source language"):
        load_params("tiny", {"lang": "english"})
    with pytest.raises(ParamError, match=r"unknown lang 'klingon'; valid choices: .*multilingual, each$"):
        load_params("tiny", {"lang": "klingon"})


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
    from hyperllama_lib.models import cloning, modeling
    from hyperllama_lib.pipeline import upscale
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


def test_paper_params_pin_each_number_of_the_facts():
    """Every number of ../shared/paper/FACTS.md that a parameter carries, against params/paper.yaml as loaded."""
    from hyperllama_lib.pipeline import cpt, layout, upscale
    p = load_params("paper", need_data=False)
    # models: the 180M shape, GeGLU, Llama-3 vocabulary, init std 1/sqrt(576), context 2048, cloned x2
    config = upscale.model_config(p, vocab_size=128_256, bos=128_000, eos=128_001)
    assert (p.hidden_size, p.num_layers, p.num_heads, p.num_kv_heads, p.head_dim, p.intermediate_size) == \
        (576, 30, 9, 3, 64, 1536)
    assert (p.hidden_act, p.rms_norm_eps, p.rope_theta, p.seq_len) == ("gelu", 1e-5, 10_000.0, 2048)
    assert config.max_position_embeddings == 2048 and config.initializer_range == 1 / 576 ** 0.5
    assert (p.tokenizer, p.clone_factor) == ("llama3", 2)
    # data: 80/20 English split, UniMax over 617.5B characters with at most 6 epochs, replay for Swedish
    assert (p.english_seed_fraction, p.char_budget, p.max_epochs) == (0.8, 617.5e9, 6.0)
    assert (p.replay_english_fraction, p.replay_code_fraction, p.replay_reference_lang) == (0.01, 0.05, "swe")
    assert (p.data_source, p.code_source, p.seed_code_epochs) == ("hub", "python-edu", 2.0)
    # optimiser and schedule
    assert (p.lr, p.adam_beta1, p.adam_beta2, p.adam_eps, p.weight_decay, p.grad_clip) == \
        (3e-3, 0.9, 0.95, 1e-8, 0.01, 1.0)
    assert p.precision == "bf16" and 10 <= p.warmup_steps <= 45 and p.decay_fraction == 0.2
    # 5,120 x 2,048 tokens per step, made up of micro-batches
    assert (p.global_batch_size, p.seq_len, p.tokens_per_step) == (5120, 2048, 10_485_760)
    assert p.global_batch_size % p.micro_batch_size == 0
    # steps: seed, bases (cloning after ~81% of the English steps), per language
    assert (p.seed_steps, p.base_steps) == (15_244, 3_572)
    assert round(p.seed_steps / (p.seed_steps + p.base_steps), 2) == 0.81
    assert p.cpt_steps == {"swe": 6279, "fas": 5928, "est": 7087, "isl": 2514, "fao": 144, "multilingual": 21940}
    # checkpoints every 250 steps, every epoch for Faroese (144 steps, 6 epochs)
    assert p.checkpoint_every_tokens == 250 * p.tokens_per_step
    assert cpt.stage_params(p, "swe") is p
    assert cpt.stage_params(p, "fao").checkpoint_every_tokens == 144 // 6 * p.tokens_per_step
    # merging: the five methods over 26 subsets and 3 setups (390 merges), weight 1, density 0.5, normalized, fp16
    assert sorted(p.merge_methods) == ["dare_ties", "linear", "multislerp", "task_arithmetic", "ties"]
    assert (p.merge_weight, p.merge_density, p.merge_normalize, p.merge_dtype) == (1.0, 0.5, True, "float16")
    paper_setups = [s for s in p.setups if s in FULL_SETUPS]  # the LoRA setups are ours
    assert len(p.merge_methods) * len(layout.merge_subsets(p)) * len(paper_setups) == 390


def test_small_t4_is_the_small_scale_in_fp16_and_builds_its_models(data_dir):
    import torch

    from hyperllama_lib.models import cloning, modeling
    from hyperllama_lib.pipeline import upscale
    small, t4 = load_params("small"), load_params("small_t4")
    assert (t4.precision, t4.micro_batch_size, t4.seq_len) == ("fp16", 1, 1024)
    same = ["tokenizer", "char_budget", "code_max_bytes", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
            "intermediate_size", "seq_len", "global_batch_size", "lr", "checkpoint_every_tokens",
            "train_eval_every_tokens"]
    assert t4.subset(same) == small.subset(same)  # the same budgets and steps, only fitted to a T4
    with torch.device("meta"):
        one_x = modeling.model_class(config := upscale.model_config(t4, 128_256, 128_000, 128_001))(config)
        two_x = modeling.model_class(big := cloning.clone_config(config, t4.clone_factor))(big)
    assert modeling.count_parameters(one_x)["total"] == 180_078_912
    assert modeling.count_parameters(two_x)["total"] == 572_494_464


@pytest.mark.parametrize("overrides, needle", [
    ({"precision": "fp8"}, "unknown precision 'fp8'; valid choices: auto, fp32, bf16, fp16"),
    ({"distributed": "zero3"}, "unknown distributed 'zero3'; valid choices: ddp, fsdp"),
    ({"compile": "maybe"}, "unknown compile 'maybe'; valid choices: auto, true, false"),
    ({"eval_jobs": "per_lang"}, "unknown eval_jobs 'per_lang'; valid choices: per_model, per_setup"),
])
def test_training_mode_choices_are_one_line_errors(overrides, needle):
    with pytest.raises(ParamError) as e:
        load_params("smoke", overrides, need_data=False)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_compile_accepts_booleans_from_yaml_and_set():
    assert load_params("smoke", {"compile": True}, need_data=False).compile == "true"
    assert load_params("smoke", {"compile": "False"}, need_data=False).compile == "false"


def test_a_gpu_that_is_not_here_stops_before_any_step(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ParamError, match="0 CUDA device"):
        load_params("smoke", {"device": "cuda"}, need_data=False)
    assert load_params("smoke", {"device": "cpu"}, need_data=False).device == "cpu"
