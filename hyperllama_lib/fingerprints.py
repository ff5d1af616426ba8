"""Which parameters enter which step's fingerprint: one table covering every field of `params.Params`.

A manifest step is redone when its fingerprint changes (artifacts/manifest.py). The fingerprint hashes
the values of the parameters that `keys(step)` names, the step's own settings (language, setup, steps,
method...) and the fingerprints of the steps whose outputs it reads. A parameter that shapes a step's
outputs is therefore either in that step's keys or reaches it through an upstream step. Every other
parameter states here why it enters no step. tests/test_fingerprints.py fails when a field of Params
is in neither part of the table, or in both.

Step kinds (manifest step names: pipeline/layout.py):
    data     01_data: plan.json (the steps of every stage), token streams, tokenizer, held-out text, pairs
    seed     english/seed: a new model of the configured shape, trained on the seed stream
    english  english/base_1x, english/base_2x: trained on from the seed or its clone
    cpt      cpt/<setup>/<lang>: continued pretraining of a base
    lora     the same steps of the *_lora setups (a LoRA adapter on the base): their own keys on top of cpt's
    clone    english/seed_x2, english/base_1x_cloned (HyperCloning)
    fetch    a released model fetched in place of a trained one (`models_from: hub`, pipeline/fetch.py)
    fisher   fisher/<setup>/<lang>: a CPT model's diagonal Fisher
    merge    merge/<setup>/<method>[/<langs>]
    eval     eval/<model>[@<step>]: one model's (or checkpoint's) results rows
    resume   no manifest step: the key a training resume state must match (training's RESUME_KEYS)
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from . import languages
from .params import FIELDS, Params

STEPS = ("data", "seed", "english", "cpt", "lora", "clone", "fetch", "fisher", "merge", "eval", "resume")
TRAINING = ("seed", "english", "cpt", "resume")  # every training stage, and its resume states

# field -> the step kinds whose fingerprint it enters
STEPS_OF: dict[str, tuple[str, ...]] = {
    "seed": ("data", *TRAINING, "merge", "eval"),
    "langs": ("data",),  # every later step reads 01_data's outputs; merges also record their languages
    "data_source": ("data",),
    "max_docs_per_lang": ("data",),
    "heldout_fraction": ("data",),
    "heldout_max_docs": ("data",),
    "english_seed_fraction": ("data",),
    "code_source": ("data",),
    "code_max_bytes": ("data",),
    "code_chunk_chars": ("data",),
    "char_budget": ("data",),
    "max_epochs": ("data",),
    "replay_english_fraction": ("data",),
    "replay_code_fraction": ("data",),
    "replay_reference_lang": ("data",),
    "eval_pairs_files": ("data",),  # their contents too: `named_files`
    "tokenizer": ("data",),
    "bpe_vocab_size": ("data",),
    "hidden_size": ("seed",),
    "num_layers": ("seed",),
    "num_heads": ("seed",),
    "num_kv_heads": ("seed",),
    "head_dim": ("seed",),
    "intermediate_size": ("seed",),
    "hidden_act": ("seed",),
    "rms_norm_eps": ("seed",),
    "rope_theta": ("seed",),
    "clone_factor": ("clone",),
    "seq_len": ("data", *TRAINING, "fisher", "eval"),  # seed: the model's position limit; eval: bpb context
    "micro_batch_size": TRAINING,
    "global_batch_size": ("data", *TRAINING),  # data: steps per stream in plan.json
    "lr": TRAINING,
    "adam_beta1": TRAINING,
    "adam_beta2": TRAINING,
    "adam_eps": TRAINING,
    "weight_decay": TRAINING,
    "grad_clip": TRAINING,
    "warmup_steps": TRAINING,
    "decay_fraction": TRAINING,
    "seed_code_epochs": ("data",),
    "seed_english_phase_code_fraction": ("data",),
    "seed_steps": ("data",),  # plan.json's steps; training steps record the planned steps as "steps"
    "base_steps": ("data",),
    "cpt_steps": ("data",),
    "checkpoint_every_tokens": TRAINING,
    "keep_checkpoints": ("cpt",),  # a CPT step's checkpoints are outputs that 05_eval scores
    "train_eval_every_tokens": TRAINING,
    "train_eval_max_bytes": TRAINING,
    "lora_rank": ("lora", "resume"),
    "lora_alpha": ("lora", "resume"),
    "lora_rslora": ("lora", "resume"),
    "lora_dropout": ("lora", "resume"),
    "lora_target_modules": ("lora", "resume"),
    "lora_lr": ("lora", "resume"),
    "lora_embeddings": ("lora", "resume"),
    "lora_trainable_tokens": ("lora", "resume"),
    "models_from": ("fetch",),
    "precision": (*TRAINING, "eval"),
    "merge_density": ("merge",),
    "merge_weight": ("merge",),
    "merge_normalize": ("merge",),
    "merge_dtype": ("merge",),
    "merge_base": ("merge",),
    "merge_store": ("merge",),  # the merge step's outputs: a model folder or its recipe
    "fisher_tokens": ("fisher",),
    "fisher_floor": ("merge",),
    "fisher_normalize": ("fisher",),
    "blimp_pairs_per_paradigm": ("eval",),
    "multiblimp_dir": ("data",),  # eval: through the fingerprint of the pairs it scores
    "eval_max_bytes": ("eval",),
    "eval_source": ("eval",),
    # Training's held-out bpb also batches by it, but scores agree across batch sizes to float rounding
    # (evaluation/scoring.py) and the weights never see it: not worth retraining every model for.
    "eval_batch_size": ("eval", "resume"),
}

# field -> why it enters no step's fingerprint
NO_STEP: dict[str, str] = {
    "scale": "names the YAML file the values come from; the values enter themselves",
    "lang": "selects 03_cpt's language; each CPT step records its own language",
    "setups": "selects setups; each setup's models are steps of their own",
    "data_dir": "a path; the content 01_data reads there enters the data step as data_hash",
    "run_dir": "where the run and its manifest live",
    "publish_dir": "where 06_analysis writes figures and tables (no manifest step)",
    "data_workers": "processes of 01_data; results are gathered in order, the same for any number",
    "cpt_checkpoint_every_tokens": "enters each CPT step as its checkpoint_every_tokens (cpt.stage_params)",
    "keep_resume_states": "retention of resume states, which are no outputs (deleted when a stage is done)",
    "released_repo_pattern": "resolved to the repo id and revision that each fetched step records",
    "released_repos": "resolved to the repo id and revision that each fetched step records",
    "released_matching": "selects whether the -matching-1x checkpoints are fetched; each is a step of its own",
    "device": "the hardware; results agree across devices to float rounding (precision auto follows it)",
    "distributed": "how training is spread over processes: the same batches and steps",
    "compile": "torch.compile of the training forward: the same computation with other kernels",
    "merge_methods": "selects methods; each merge records its method",
    "merge_subsets": "selects language subsets; each merge records its languages",
    "cpt_jobs": "how the grid runner groups 03_cpt into notebook jobs",
    "eval_jobs": "how the grid runner groups 05_eval into notebook jobs",
    "multiblimp_pairs_per_phenomenon": "05_eval fingerprints the sampled MultiBLiMP pairs themselves",
    "mpararel_pairs_per_relation": "05_eval fingerprints the sampled mParaRel pairs themselves",
    "eval_models": "selects which models 05_eval scores; each model is a step of its own",
    "eval_checkpoints": "selects whether 05_eval scores checkpoints; each is a step of its own",
}


def keys(step: str) -> list[str]:
    """The parameters that enter the fingerprint of a step of this kind, in the order of Params."""
    if step not in STEPS:
        raise ValueError(f"unknown step kind {step!r}; valid kinds: {', '.join(STEPS)}")
    return [name for name in FIELDS if step in STEPS_OF.get(name, ())]


def named_files(p: Params) -> str:
    """Content hash of the files that 01_data's parameters name (eval_pairs_files and the released
    MultiBLiMP files of the run's languages): the keys hold their paths, this their contents."""
    files = [Path(f) for f in p.eval_pairs_files]
    if p.multiblimp_path is not None:
        files += [p.multiblimp_path / lang / "data.tsv" for lang in (languages.ENGLISH, *p.langs)]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f).encode())
        h.update(f.read_bytes() if f.is_file() else b"\0missing")
    return h.hexdigest()[:16]
