"""LoRA setups (training/adapters.py): peft adapters on the English bases, saved in peft's format and folded.

Tiny models of both released formats (llama 1x; hyperllama 2x with the tied head divided by 2)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from test_resume import tiny_model, tiny_params, tiny_stage, toy_tokenizer

import hyperllama_lib  # noqa: F401  (registers hyperllama for AutoModel)
from hyperllama_lib import fingerprints, training
from hyperllama_lib.models import cloning, modeling
from hyperllama_lib.params import ParamError, load_params
from hyperllama_lib.training import adapters

IDS = torch.randint(3, 64, (2, 11), generator=torch.Generator().manual_seed(0))


def both_formats():
    return {"1x": tiny_model(), "2x": cloning.hyperclone(tiny_model(), 2)}


def tied(model) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


@pytest.mark.parametrize("kind", ["1x", "2x"])
def test_a_fresh_adapter_computes_the_base_and_keeps_the_head_tied(tmp_path, kind):
    base = both_formats()[kind]
    with torch.no_grad():
        ref = base(IDS).logits
        wrapped = adapters.wrap(copy.deepcopy(base), tiny_params(tmp_path))  # peft: B = 0
        assert torch.equal(wrapped(IDS).logits, ref)
        assert tied(wrapped.get_base_model()) and not wrapped.get_base_model().lm_head.weight.requires_grad
        folded = adapters.folded(wrapped)
        assert type(folded) is type(base) and tied(folded) and torch.equal(folded(IDS).logits, ref)
    assert modeling.lm_head_factor(folded) == (2 if kind == "2x" else 1)


def train_lora(tmp_path, kind: str, steps: int = 8, **overrides):
    p = tiny_params(tmp_path, **overrides)
    base = both_formats()[kind]
    base.save_pretrained(tmp_path / "base")
    toy_tokenizer().save_pretrained(tmp_path / "base")
    stage = tiny_stage(tmp_path, tmp_path / "stage", steps=steps)
    stage.lr = p.lora_lr
    model = adapters.wrap(modeling.load_model(tmp_path / "base"), p, stage.tokens)
    summary = training.train(model, toy_tokenizer(), stage, p, log=lambda m: None)
    return p, base, summary, training.StageFolder(tmp_path / "stage")


@pytest.mark.parametrize("kind", ["1x", "2x"])
def test_a_trained_adapter_loads_with_peft_and_its_folded_model_gives_the_same_logits(tmp_path, kind):
    p, base, summary, folder = train_lora(tmp_path, kind)
    config = json.loads((folder.adapter / "adapter_config.json").read_text())
    assert config["r"] == p.lora_rank and (folder.adapter / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(modeling.load_model(tmp_path / "base"), str(folder.adapter)).eval()
    final = modeling.load_model(folder.final)
    with torch.no_grad():
        assert (loaded(IDS).logits - final(IDS).logits).abs().max() < 1e-5
        assert not torch.equal(final(IDS).logits, base(IDS).logits)  # it learned something
    assert tied(final) and type(final) is type(base)
    # frozen: the embedding (and the tied head) and every norm are the base's; the adapted layers changed
    ours, theirs = load_file(folder.final / "model.safetensors"), base.state_dict()
    changed = {k for k in ours if not torch.equal(ours[k], theirs[k])}
    assert changed and all(k.endswith(("_proj.weight",)) for k in changed)
    n = modeling.count_parameters(base)
    assert summary["params_trainable"] == adapters.trainable_count(adapters.wrap(copy.deepcopy(base), p)) > 0
    assert summary["flops_total"] == (4 * n["total"] + 6 * summary["params_trainable"]) * summary["tokens"]
    assert summary["flops_non_embedding"] == (4 * n["non_embedding"] + 6 * summary["params_trainable"]) \
        * summary["tokens"]
    checkpoint = folder.checkpoint(4)
    assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "adapter_config.json").exists()


def test_trainable_tokens_train_only_the_most_frequent_rows_and_the_head_stays_tied(tmp_path):
    p, base, summary, folder = train_lora(tmp_path, "2x", lora_embeddings="trainable_tokens",
                                          lora_trainable_tokens=5)
    rows = adapters.most_frequent_tokens(tmp_path / "s.bin", 5)
    final = modeling.load_model(folder.final)
    moved = (final.model.embed_tokens.weight != base.model.embed_tokens.weight).any(dim=1).nonzero().flatten()
    assert tied(final) and set(moved.tolist()) <= set(rows) and len(moved) > 0


def test_lora_parameters_enter_only_lora_steps_and_are_checked_in_one_line():
    assert "lora_rank" in fingerprints.keys("lora") and "lora_rank" not in fingerprints.keys("cpt")
    assert "lora_lr" in fingerprints.keys("resume")
    p = load_params("smoke", {"setups": ["1x", "2x_lora"], "lora_target_modules": ["q_proj", "v_proj"]},
                    need_data=False)
    assert p.setups == ["1x", "2x_lora"] and p.lora_target_modules == ["q_proj", "v_proj"]
    for overrides, needle in [({"lora_rank": 0}, "lora_rank 0 (>= 1)"),
                              ({"lora_embeddings": "all"}, "unknown lora_embeddings 'all'; valid choices: frozen, "
                                                           "trainable_tokens"),
                              ({"lora_target_modules": ["lm_head"]}, "unknown lora_target_modules entry 'lm_head'"),
                              ({"setups": ["3x_lora"]}, "unknown setup '3x_lora'")]:
        with pytest.raises(ParamError) as err:
            load_params("smoke", overrides, need_data=False)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_lora_setups_run_through_the_pipeline_on_fetched_bases(tmp_path, monkeypatch):
    """models_from hub: the English bases are fetched, the adapters trained here on 01_data's streams,
    then merged with the registry (on the folded models) and with peft's cat, which agree."""
    import numpy as np
    from released_hub import FakeHub, published, stand_ins
    from test_merging import load_tensors

    from hyperllama_lib import artifacts
    from hyperllama_lib.corpus import packing
    from hyperllama_lib.pipeline import cpt, evaluate, layout, merge, upscale

    p = load_params("smoke", {"run_dir": str(tmp_path / "run"), "models_from": "hub", "langs": ["est", "fao"],
                              "setups": ["1x_lora", "2x_lora"], "merge_methods": ["linear", "ties", "peft_cat"],
                              "lora_rank": 4, "seq_len": 16, "global_batch_size": 4, "micro_batch_size": 4,
                              "checkpoint_every_tokens": 128}, need_data=False)
    dp = layout.of(p).data
    vocab = 97
    tok = toy_tokenizer_of(vocab)
    tok.save_pretrained(dp.tokenizer)
    rng = np.random.default_rng(0)
    for lang in ("est", "fao", "multilingual"):
        packing.write_tokens(dp.train(lang), [rng.integers(3, vocab, size=4 * 16 * 4).tolist()], vocab)
    for lang in ("eng", "est", "fao"):
        dp.heldout(lang).parent.mkdir(parents=True, exist_ok=True)
        dp.heldout(lang).write_text("t3 t4 t5 t6 t7\n")
    artifacts.atomic.write_json(dp.plan, {"vocab_size": vocab, "cpt_steps": {"est": 4, "fao": 4, "multilingual": 4}})
    with artifacts.Step(p.run_path, layout.DATA_STEP, {"fake": True}) as s:
        s.outputs = [dp.root]
    hub = FakeHub(tmp_path / "cache", stand_ins(tmp_path / "hub", {
        r: k for r, k in published(["est"], matching=()).items() if "english" in r}, tokenizer=tok))
    monkeypatch.setattr("huggingface_hub.snapshot_download", hub)

    upscale.run(p, log=lambda m: None)
    for lang in ("est", "fao"):
        cpt.run(p, lang, log=lambda m: None)
    assert hub.asked == ["liu-nlp/hyperllama-180m-english-1x", "liu-nlp/hyperllama-572m-english-1x-cloned"]
    where, manifest = layout.of(p), artifacts.Manifest(p.run_path)
    entry = manifest.entry("cpt/2x_lora/est")
    assert entry["params"]["lora_rank"] == 4 and "lora_rank" not in manifest.entry("english/base_2x")["params"]
    assert (where.cpt_adapter("2x_lora", "est") / "adapter_config.json").is_file()
    merges = merge.run(p, log=lambda m: None)
    assert list(merges.method) == ["linear", "ties", "peft_cat"] * 2
    for setup in ("1x_lora", "2x_lora"):
        ours, theirs = (load_tensors(where.merged_model(setup, m)) for m in ("linear", "peft_cat"))
        assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-5
    kinds = {(e.kind, e.setup) for e in evaluate.models(p)}
    assert ("merged", "2x_lora") in kinds and ("cpt", "1x_lora") in kinds


def toy_tokenizer_of(vocab: int):
    from tokenizers import Tokenizer
    from tokenizers import models as tm
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tm.WordLevel(words, unk_token="t0")),
                                   bos_token="t1", eos_token="t2")
