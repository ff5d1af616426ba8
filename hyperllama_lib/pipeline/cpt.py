"""03_cpt: continued pretraining of each setup's English base on one target language (or on all five
at once, the jointly trained multilingual model). All setups of a language see identical data, steps
and schedule (data-matched); each stage starts a fresh optimiser and schedule. With `models_from: hub`
the authors' adapted models are fetched instead (fetch.py)."""
from __future__ import annotations

import dataclasses
import functools

import pandas as pd

from .. import artifacts, corpus, fingerprints, languages, training
from ..corpus import tokenizer as tok_lib
from ..models import modeling, released
from ..params import LORA_SETUPS, MissingInputError, Params
from ..training import adapters
from . import data, fetch, layout


def eval_texts(p: Params, lang: str) -> dict[str, list[str]]:
    """Held-out text watched during training: the target language(s) and English (forgetting)."""
    dp = layout.of(p).data
    langs = list(p.langs) if lang == languages.MULTILINGUAL else [lang]
    per_lang = p.train_eval_max_bytes // len(langs)
    texts = {code: corpus.read_texts(dp.heldout(code), per_lang) for code in langs}
    texts[languages.ENGLISH] = corpus.read_texts(dp.heldout(languages.ENGLISH), p.train_eval_max_bytes)
    return texts


def stage_params(p: Params, lang: str) -> Params:
    """p with the language's own checkpoint interval, if it has one (the paper: Faroese every epoch)."""
    if lang not in p.cpt_checkpoint_every_tokens:
        return p
    return dataclasses.replace(p, checkpoint_every_tokens=p.cpt_checkpoint_every_tokens[lang])


def _train(p: Params, setup: str, lang: str, steps: int, data_fp: str, log) -> None:
    where = layout.of(p)
    base_fp = layout.require(p, where.base_step(setup))
    lora = setup in LORA_SETUPS
    params = {**p.subset(fingerprints.keys("cpt")), **(p.subset(fingerprints.keys("lora")) if lora else {}),
              "lang": lang, "setup": setup, "steps": steps}
    with artifacts.Step(p.run_path, where.cpt_step(setup, lang), params, [data_fp, base_fp], log=log) as s:
        if s.todo:
            model = modeling.load_model(where.base_model(setup))
            if lora:
                model = adapters.wrap(model, p, where.data.train(lang))
            tok = tok_lib.load_tokenizer(where.data.tokenizer)
            stage = training.Stage(name=f"{setup}-{lang}", tokens=where.data.train(lang),
                                   out_dir=where.cpt_dir(setup, lang), steps=steps, eval_texts=eval_texts(p, lang),
                                   lr=p.lora_lr if lora else None)
            s.extra = training.train(model, tok, stage, p, log=log)
            checkpoints = where.cpt_checkpoints(setup, lang)  # 05_eval scores them: hash them too
            s.outputs = [where.cpt_model(setup, lang), where.cpt_curve(setup, lang),
                         *([where.cpt_adapter(setup, lang)] if lora else []),
                         *([checkpoints] if checkpoints.is_dir() else [])]


def _fetch(p: Params, setup: str, lang: str, steps: int, vocab_size: int, data_fp: str, log) -> None:
    """The released adapted model, with the training record of the paper's recipe (`steps` of
    tokens_per_step), and for a 572M setup its "-matching-1x" checkpoint where one is released."""
    where = layout.of(p)
    record = functools.partial(released.training_record, steps=steps, tokens_per_step=p.tokens_per_step)
    fetch.step(p, where.cpt_step(setup, lang), *released.repo_for(p, setup, lang), where.cpt_model(setup, lang),
               vocab_size, record, upstream=[data_fp], log=log, setup=setup, lang=lang, steps=steps)
    if p.released_matching and setup in released.MATCHING_SETUPS:
        fetch.step(p, where.matching_step(setup, lang), *released.matching_repo_for(p, setup, lang),
                   where.cpt_matching(setup, lang), vocab_size, functools.partial(_matching_record, p, steps),
                   upstream=[data_fp], optional=True, log=log, setup=setup, lang=lang, steps_1x=steps)


def _matching_record(p: Params, steps_1x: int, model_dir) -> dict:
    """The training record of a -matching-1x checkpoint: the step at which its run's FLOPs equal the final
    1x run's, the 1x model being its HyperCloning source (half the width): an inference, see released.py."""
    counts = modeling.count_parameters(model_dir)
    one_x = released.clone_source_parameters(model_dir)
    step = released.matching_steps(steps_1x, one_x["total"], counts["total"])
    return {**released.training_record(model_dir, step, p.tokens_per_step), "matching_1x_steps": steps_1x}


def run(p: Params, lang: str | None = None, setups: list[str] | None = None, log=print) -> pd.DataFrame:
    """Adapt each setup to `lang` (p.lang unless given): a target language, "multilingual", or "each" (every
    target language of the run, one after another)."""
    lang = lang or p.lang
    if lang is None:
        raise MissingInputError(f"03_cpt needs a language: -p lang persian (or {languages.MULTILINGUAL}, "
                                f"or {languages.EACH} for every target language)")
    targets = list(p.langs) if lang == languages.EACH else [lang]
    return pd.concat([_run_language(p, target, setups or p.setups, log) for target in targets], ignore_index=True)


def _run_language(p: Params, lang: str, setups: list[str], log) -> pd.DataFrame:
    data_fp = layout.require(p, layout.DATA_STEP)
    where = layout.of(p)
    plan = data.load_plan(p)
    if lang not in plan["cpt_steps"]:
        raise MissingInputError(f"01_data in {p.run_path} made no training stream for {lang} (only for "
                                f"{', '.join(plan['cpt_steps'])}); run notebooks/01_data.ipynb with {lang} in langs")
    steps = plan["cpt_steps"][lang]
    rows = []
    p = stage_params(p, lang)
    for setup in setups:
        if p.models_from == "hub" and setup not in LORA_SETUPS:  # adapters are trained on the fetched bases
            _fetch(p, setup, lang, steps, plan["vocab_size"], data_fp, log)
        else:
            _train(p, setup, lang, steps, data_fp, log)
        training.remove_resume_states(where.cpt_dir(setup, lang))
        entry = artifacts.Manifest(p.run_path).entry(where.cpt_step(setup, lang))
        rows.append({"setup": setup, "lang": lang, "steps": entry["steps"], "tokens": entry["tokens"],
                     "flops_total": entry["flops_total"], "seconds": entry["seconds"],
                     **{f"bpb_{k}": v for k, v in entry["final_bpb"].items()}})
    return pd.DataFrame(rows)


def curves(p: Params) -> pd.DataFrame:
    """All checkpoint curves of all CPT runs: one row per (setup, lang, step, evaluated language)."""
    frames, where = [], layout.of(p)
    for setup in p.setups:
        for lang in [*p.langs, languages.MULTILINGUAL]:
            f = where.cpt_curve(setup, lang)
            if f.exists():
                frames.append(pd.read_csv(f).assign(setup=setup, trained_on=lang))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
