"""02_upscale: the English seed, HyperCloning x2 after ~80% of the English steps, the 1x and 2x bases.

seed (1x, random init) --train on code, then 80% English + code-->  seed/final
seed --HyperClone x2--> seed_x2 --train on the other 20% English--> base_2x/final
seed --train on the other 20% English-----------------------------> base_1x/final
base_1x --HyperClone x2 (no training)------------------------------> base_1x_cloned/final
With `models_from: hub` the authors' released 1x and 2x bases are fetched instead (fetch.py) and
base_1x_cloned is cloned from the fetched 1x base.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import artifacts, corpus, fingerprints, languages, training
from ..corpus import tokenizer as tok_lib
from ..models import cloning, modeling, released
from ..params import Params
from ..training import distributed
from . import data, fetch, layout


def model_config(p: Params, vocab_size: int, bos: int, eos: int):
    return modeling.smollm2_config(
        vocab_size=vocab_size, hidden_size=p.hidden_size, num_layers=p.num_layers, num_heads=p.num_heads,
        num_kv_heads=p.num_kv_heads, head_dim=p.head_dim, intermediate_size=p.intermediate_size,
        hidden_act=p.hidden_act, rms_norm_eps=p.rms_norm_eps, rope_theta=p.rope_theta,
        max_position_embeddings=max(p.seq_len, 2048), bos_token_id=bos, eos_token_id=eos)


def _english_eval(p: Params) -> dict[str, list[str]]:
    dp = layout.of(p).data
    return {languages.ENGLISH: corpus.read_texts(dp.heldout(languages.ENGLISH), p.train_eval_max_bytes)}


def _train_from(p: Params, src: Path | None, name: str, stream: str, steps: int, log) -> dict:
    where = layout.of(p)
    dp = where.data
    tok = tok_lib.load_tokenizer(dp.tokenizer)
    if src is None:
        plan = data.load_plan(p)
        model = modeling.new_model(model_config(p, plan["vocab_size"], plan["bos_token_id"],
                                                plan["eos_token_id"]), seed=p.seed)
    else:
        model = modeling.load_model(src)
    stage = training.Stage(name=name, tokens=dp.train(stream), out_dir=where.english_dir(name), steps=steps,
                           eval_texts=_english_eval(p))
    return training.train(model, tok, stage, p, log=log)


def _fetch_bases(p: Params, vocab_size: int, data_fp: str, log) -> str | None:
    """The released English models the run's setups (and `merge_base: authors`) need; returns the 1x
    base's fingerprint (None when it is not needed)."""
    where, fps = layout.of(p), {}
    for r in released.releases(p):
        if r.kind == "english":
            fps[r.setup] = fetch.step(p, where.base_step(r.setup), r.repo, r.revision, where.base_model(r.setup),
                                      vocab_size, upstream=[data_fp], log=log, setup=r.setup, lang=r.lang)
        elif r.kind == "authors_base":
            fetch.step(p, where.english_step(layout.AUTHORS_BASE_2X), r.repo, r.revision,
                       where.english_model(layout.AUTHORS_BASE_2X), vocab_size, upstream=[data_fp], log=log,
                       setup=r.setup, lang=r.lang)
    return fps.get("1x")


def run(p: Params, log=print) -> pd.DataFrame:
    """Run 02_upscale; finished parts are skipped."""
    where = layout.of(p)
    data_fp = layout.require(p, layout.DATA_STEP)
    plan = data.load_plan(p)
    clone_params = p.subset(fingerprints.keys("clone"))

    def stage(name: str, upstream: list[str], params: dict, work) -> str:
        with artifacts.Step(p.run_path, where.english_step(name), params, upstream, log=log) as s:
            if s.todo:
                s.extra = work() or {}
                s.outputs = [where.english_model(name)]
        training.remove_resume_states(where.english_dir(name))
        return s.fp

    def clone(src: str, dst: str):
        if not distributed.is_main():  # under torchrun one process writes the clone (Step waits for it)
            return {}
        cloning.clone_folder(where.english_model(src), where.english_model(dst), factor=p.clone_factor, overwrite=True)
        return {"max_logit_difference": cloning.max_logit_difference(where.english_model(src), where.english_model(dst))}

    if p.models_from == "hub":
        b1_fp = _fetch_bases(p, plan["vocab_size"], data_fp, log)
        if b1_fp is None or not {"1x_cloned", "1x_cloned_lora"} & set(p.setups):  # no setup needs the clone
            return summary(p)
    else:
        seed_fp = stage("seed", [data_fp], {**p.subset(fingerprints.keys("seed")), "steps": plan["seed_steps"]},
                        lambda: _train_from(p, None, "seed", "seed", plan["seed_steps"], log))
        x2_fp = stage("seed_x2", [seed_fp], clone_params, lambda: clone("seed", "seed_x2"))
        b1_fp = stage("base_1x", [seed_fp], {**p.subset(fingerprints.keys("english")), "steps": plan["base_steps"]},
                      lambda: _train_from(p, where.english_model("seed"), "base_1x", "base", plan["base_steps"], log))
        stage("base_2x", [x2_fp], {**p.subset(fingerprints.keys("english")), "steps": plan["base_steps"]},
              lambda: _train_from(p, where.english_model("seed_x2"), "base_2x", "base", plan["base_steps"], log))
    stage("base_1x_cloned", [b1_fp], clone_params,
          lambda: clone("base_1x", "base_1x_cloned"))
    return summary(p)


def summary(p: Params) -> pd.DataFrame:
    manifest, where = artifacts.Manifest(p.run_path), layout.of(p)
    rows = []
    for name in layout.ENGLISH_MODELS:
        entry = manifest.entry(where.english_step(name))
        if entry is None:  # models_from: hub fetches the bases, so there is no seed
            continue
        counts = modeling.count_parameters(modeling.load_model(where.english_model(name)).config)
        rows.append({"model": name, "params_total": counts["total"],
                     "params_non_embedding": counts["non_embedding"], "steps": entry.get("steps", 0),
                     "tokens": entry.get("tokens", 0), "seconds": entry.get("seconds", 0.0),
                     "english_bpb": (entry.get("final_bpb") or {}).get(languages.ENGLISH),
                     "clone_max_logit_difference": entry.get("max_logit_difference"),
                     "hub_repo": entry.get("repo_id")})
    return pd.DataFrame(rows)
