"""04_merge: merge the language models of each setup with each method, over the five-language set
(default) or every subset of at least two languages (`merge_subsets: all`, the paper's 26).

Paper settings: weight 1.0 per model, density 0.5, normalize true; task vectors are taken against
that setup's English base (`merge_base: setup`) or the base_model the authors' files name
(`merge_base: authors`, see `base_step`). With `merge_store: recipe` a merge is checked and kept as its
recipe, and 05_eval builds it only while scoring it (merging/recipe.py). Methods that weight parameters by importance (fisher, fisher_ties) use
each model's diagonal Fisher, estimated once per model on its own CPT stream
(`fisher/<setup>/<lang>.safetensors`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from .. import artifacts, fingerprints, languages, merging
from ..errors import DiskSpaceError
from ..merging import adapters, fisher_information, recipe
from ..models import modeling
from ..params import LORA_SETUPS, MissingInputError, Params
from . import layout


def _inputs(p: Params, setup: str) -> dict[str, tuple[Path, str]]:
    """lang -> (final CPT model, its step fingerprint)."""
    manifest, where = artifacts.Manifest(p.run_path), layout.of(p)
    out = {}
    for lang in p.langs:
        entry = manifest.entry(where.cpt_step(setup, lang))
        if entry is None:
            raise MissingInputError(f"no {setup} model for {lang} in {p.run_path}; run "
                                    f"`papermill notebooks/03_cpt.ipynb out.ipynb -p lang {lang} -p scale {p.scale}` first")
        out[lang] = (where.cpt_model(setup, lang), entry["fingerprint"])
    return out


def estimate_fisher(p: Params, setup: str, lang: str, model_dir: Path, model_fp: str, log=print) -> str:
    """The diagonal Fisher of one CPT model on its own training stream (a step; returns its fingerprint)."""
    params = {**p.subset(fingerprints.keys("fisher")), "setup": setup, "lang": lang}
    where = layout.of(p)
    out = where.fisher_file(setup, lang)
    with artifacts.Step(p.run_path, where.fisher_step(setup, lang), params, [model_fp], log=log) as s:
        if s.todo:
            fisher_information.estimate_to_file(model_dir, where.data.train(lang), out, p.seq_len, p.fisher_tokens,
                                    p.fisher_normalize)
            s.outputs = [out]
    return artifacts.Manifest(p.run_path).entry(where.fisher_step(setup, lang))["fingerprint"]


def base_step(p: Params, setup: str, method: str, langs: tuple[str, ...]) -> str:
    """The English model whose task vectors a merge takes (its manifest step).

    merge_base setup: the setup's own base, the model its language models were adapted from. authors: the
    base_model of the authors' mergekit files (FACTS.md): the trained 572M English base
    (`hyperllama-572m-english-1x-cloned`, our base_2x) for every 1x_cloned and 2x merge, so 1x_cloned task
    vectors also hold the English training the clone never had; except the five-language 2x TIES and
    DARE-TIES merges, against `hyperllama-572m-english-2x` (fetched in hub runs; a trained run has no such
    model and takes base_2x there too)."""
    where = layout.of(p)
    if p.merge_base == "setup" or setup == "1x":
        return where.base_step(setup)
    five = sorted(langs) == sorted(languages.TARGET_LANGUAGES)
    if setup == "2x" and five and method in ("ties", "dare_ties") and p.models_from == "hub":
        return where.english_step(layout.AUTHORS_BASE_2X)
    return where.base_step("2x")


def _base_model(p: Params, step: str) -> Path:
    return layout.of(p).english_model(step.removeprefix("english/"))


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def check_disk(p: Params) -> None:
    """Stop before merging when the free disk cannot hold the merged models not written yet (the paper's
    grid of 26 subsets x 7 methods x 3 setups is about 480 GB in float16; `merge_store: recipe` avoids it)."""
    where, need, count = layout.of(p), 0, 0
    for setup in p.setups if p.merge_store == "weights" else []:  # a recipe is a few hundred bytes
        base = where.base_model(setup)
        if not base.is_dir():
            continue
        size = modeling.count_parameters(base)["total"] * DTYPE_BYTES[p.merge_dtype]
        for method in p.merge_methods:
            missing = [s for s in layout.merge_subsets(p) if not where.merged_model(setup, method, s).is_dir()]
            need, count = need + size * len(missing), count + len(missing)
    free = shutil.disk_usage(p.run_path).free
    if need * 1.05 > free:
        raise DiskSpaceError(f"04_merge would write {count} merged models, about {need / 1e9:,.1f} GB in "
                             f"{p.merge_dtype}, but only {free / 1e9:,.1f} GB are free on {p.run_path}: free space, "
                             "choose another run_dir, or merge fewer (merge_subsets: full, merge_methods, setups)")


def _peft_merges(p: Params, setup: str, method: str, inputs: dict, log) -> list[dict]:
    """peft's own merge of a LoRA setup's adapters (`add_weighted_adapter`, merging/adapters.py), for the
    combinations that are functions of the dense deltas: cat (their weighted sum) and svd (truncated)."""
    rows, where = [], layout.of(p)
    base_name = where.base_step(setup)
    for langs in layout.merge_subsets(p):
        params = {**p.subset(fingerprints.keys("merge")), "method": method, "langs": list(langs)}
        fps = [layout.require(p, base_name)] + [inputs[lang][1] for lang in langs]
        out = where.merged_model(setup, method, langs)
        with artifacts.Step(p.run_path, where.merge_step(setup, method, langs), params, fps, log=log) as s:
            if s.todo:
                adapters.peft_merge(where.base_model(setup), [where.cpt_adapter(setup, lang) for lang in langs], out,
                                    # normalize: cat with weights w_i / sum(w) is our linear merge
                                    weights=[1 / len(langs) if p.merge_normalize else p.merge_weight] * len(langs),
                                    combination_type=method.removeprefix("peft_"), overwrite=True)
                s.outputs = [out]
        rows.append({"setup": setup, "method": method, "langs": layout.subset_label(langs), "models": len(langs),
                     "base": base_name.removeprefix("english/"), "path": str(out)})
    return rows


def run(p: Params, log=print) -> pd.DataFrame:
    rows, where = [], layout.of(p)
    check_disk(p)
    for setup in p.setups:
        inputs = _inputs(p, setup)
        fisher_fps: dict[str, str] = {}
        for method in p.merge_methods:
            if method in adapters.PEFT_METHODS:
                rows += _peft_merges(p, setup, method, inputs, log) if setup in LORA_SETUPS else []
                continue
            needs_fisher = merging.get_method(method).needs_importance
            if needs_fisher and not fisher_fps:
                fisher_fps = {lang: estimate_fisher(p, setup, lang, *inputs[lang], log=log) for lang in p.langs}
            for langs in layout.merge_subsets(p):
                base_name = base_step(p, setup, method, langs)
                base, base_fp = _base_model(p, base_name), layout.require(p, base_name)
                models = [inputs[lang][0] for lang in langs]
                fps = [base_fp] + [inputs[lang][1] for lang in langs] \
                    + ([fisher_fps[lang] for lang in langs] if needs_fisher else [])
                params = {**p.subset(fingerprints.keys("merge")), "method": method, "langs": list(langs)}
                out = where.merged_model(setup, method, langs)
                with artifacts.Step(p.run_path, where.merge_step(setup, method, langs), params, fps, log=log) as s:
                    if s.todo:
                        write = merging.merge_models if p.merge_store == "weights" else recipe.write
                        write(method, models, out, base, [p.merge_weight] * len(models),
                              importances=[where.fisher_file(setup, lang) for lang in langs] if needs_fisher else None,
                              density=p.merge_density, normalize=p.merge_normalize, seed=p.seed,
                              fisher_floor=p.fisher_floor, dtype=p.merge_dtype, overwrite=True)
                        s.outputs = [out]
                rows.append({"setup": setup, "method": method, "langs": layout.subset_label(langs),
                             "models": len(models), "base": base_name.removeprefix("english/"), "path": str(out)})
    return pd.DataFrame(rows)
