"""02_upscale: the English seed, HyperCloning x2 after ~80% of the English steps, the 1x and 2x bases.

seed (1x, random init) --train on code, then 80% English + code-->  seed/final
seed --HyperClone x2--> seed_x2 --train on the other 20% English--> base_2x/final
seed --train on the other 20% English-----------------------------> base_1x/final
base_1x --HyperClone x2 (no training)------------------------------> base_1x_cloned/final
With `models_from: hub` the authors' released 1x and 2x bases are fetched instead (released.py) and
base_1x_cloned is cloned from the fetched 1x base.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from .. import artifacts, languages, training
from ..models import cloning, modeling, released
from . import data
from ..training import distributed
from ..corpus import tokenizer as tok_lib
from ..params import MissingInputError, Params

MODEL_KEYS = ["seed", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
              "intermediate_size", "hidden_act", "rms_norm_eps", "rope_theta", "seq_len"]
TRAIN_KEYS = ["seed", "seq_len", "micro_batch_size", "global_batch_size", "lr", "adam_beta1", "adam_beta2",
              "adam_eps", "weight_decay", "grad_clip", "warmup_steps", "decay_fraction",
              "checkpoint_every_tokens", "train_eval_every_tokens", "train_eval_max_bytes", "precision"]
BASE_FOR_SETUP = {"1x": "base_1x", "1x_cloned": "base_1x_cloned", "2x": "base_2x"}


def english_dir(p: Params, name: str) -> Path:
    return p.run_path / "models" / "english" / name


def english_model(p: Params, name: str) -> Path:
    return english_dir(p, name) / "final"


def base_model(p: Params, setup: str) -> Path:
    return english_model(p, BASE_FOR_SETUP[setup])


def require_step(p: Params, step: str, notebook: str) -> str:
    fp = artifacts.step_fingerprint(p.run_path, step)
    if fp is None:
        raise MissingInputError(f"step {step!r} has no outputs in {p.run_path}; "
                                f"run notebooks/{notebook}.ipynb first (same scale and run_dir)")
    return fp


def model_config(p: Params, vocab_size: int, bos: int, eos: int):
    return modeling.smollm2_config(
        vocab_size=vocab_size, hidden_size=p.hidden_size, num_layers=p.num_layers, num_heads=p.num_heads,
        num_kv_heads=p.num_kv_heads, head_dim=p.head_dim, intermediate_size=p.intermediate_size,
        hidden_act=p.hidden_act, rms_norm_eps=p.rms_norm_eps, rope_theta=p.rope_theta,
        max_position_embeddings=max(p.seq_len, 2048), bos_token_id=bos, eos_token_id=eos)


def _english_eval(p: Params) -> dict[str, list[str]]:
    dp = data.paths(p)
    return {languages.ENGLISH: data.read_texts(dp.heldout(languages.ENGLISH), p.train_eval_max_bytes)}


def _train_from(p: Params, src: Path | None, name: str, stream: str, steps: int, log) -> dict:
    dp = data.paths(p)
    tok = tok_lib.load_tokenizer(dp.tokenizer)
    if src is None:
        plan = data.load_plan(p)
        model = modeling.new_model(model_config(p, plan["vocab_size"], plan["bos_token_id"],
                                                plan["eos_token_id"]), seed=p.seed)
    else:
        model = modeling.load_model(src)
    stage = training.Stage(name=name, tokens=dp.train(stream), out_dir=english_dir(p, name), steps=steps,
                           eval_texts=_english_eval(p))
    return training.train(model, tok, stage, p, log=log)


def run(p: Params, log=print) -> pd.DataFrame:
    """Run 02_upscale; finished parts are skipped."""
    data_fp = require_step(p, data.STEP, "01_data")
    plan = data.load_plan(p)
    model_params = {**p.subset(MODEL_KEYS), **p.subset(TRAIN_KEYS)}

    def stage(name: str, upstream: list[str], params: dict, work) -> str:
        with artifacts.Step(p.run_path, f"english/{name}", params, upstream, log=log) as s:
            if s.todo:
                s.extra = work() or {}
                s.outputs = [english_model(p, name)]
        training.remove_resume_states(english_dir(p, name))
        return s.fp

    def clone(src: str, dst: str):
        if not distributed.is_main():  # under torchrun one process writes the clone (Step waits for it)
            return {}
        cloning.clone_folder(english_model(p, src), english_model(p, dst), factor=p.clone_factor, overwrite=True)
        return {"max_logit_difference": cloning.max_logit_difference(english_model(p, src), english_model(p, dst))}

    if p.models_from == "hub":
        fetched = {s: released.fetch_step(p, f"english/{BASE_FOR_SETUP[s]}", s, languages.ENGLISH, base_model(p, s),
                                          plan["vocab_size"], log=log) for s in ("1x", "2x")}
        b1_fp = fetched["1x"]
    else:
        seed_fp = stage("seed", [data_fp], {**model_params, "steps": plan["seed_steps"]},
                        lambda: _train_from(p, None, "seed", "seed", plan["seed_steps"], log))
        x2_fp = stage("seed_x2", [seed_fp], {"clone_factor": p.clone_factor}, lambda: clone("seed", "seed_x2"))
        b1_fp = stage("base_1x", [seed_fp], {**p.subset(TRAIN_KEYS), "steps": plan["base_steps"]},
                      lambda: _train_from(p, english_model(p, "seed"), "base_1x", "base", plan["base_steps"], log))
        stage("base_2x", [x2_fp], {**p.subset(TRAIN_KEYS), "steps": plan["base_steps"]},
              lambda: _train_from(p, english_model(p, "seed_x2"), "base_2x", "base", plan["base_steps"], log))
    stage("base_1x_cloned", [b1_fp], {"clone_factor": p.clone_factor},
          lambda: clone("base_1x", "base_1x_cloned"))
    return summary(p)


def summary(p: Params) -> pd.DataFrame:
    manifest = artifacts.Manifest(p.run_path)
    rows = []
    for name in ["seed", "seed_x2", "base_1x", "base_2x", "base_1x_cloned"]:
        entry = manifest.entry(f"english/{name}")
        if entry is None:  # models_from: hub fetches the bases, so there is no seed
            continue
        counts = modeling.count_parameters(modeling.load_model(english_model(p, name)).config)
        rows.append({"model": name, "params_total": counts["total"],
                     "params_non_embedding": counts["non_embedding"], "steps": entry.get("steps", 0),
                     "tokens": entry.get("tokens", 0), "seconds": entry.get("seconds", 0.0),
                     "english_bpb": (entry.get("final_bpb") or {}).get(languages.ENGLISH),
                     "clone_max_logit_difference": entry.get("max_logit_difference"),
                     "hub_repo": entry.get("repo_id")})
    return pd.DataFrame(rows)
