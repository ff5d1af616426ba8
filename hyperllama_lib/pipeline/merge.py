"""04_merge: merge the language models of each setup with each method, over the five-language set
(default) or every subset of at least two languages (`merge_subsets: all`, the paper's 26).

Paper settings: weight 1.0 per model, density 0.5, normalize true; task vectors are taken against
that setup's English base. Methods that weight parameters by importance (fisher, fisher_ties) use
each model's diagonal Fisher, estimated once per model on its own CPT stream
(`fisher/<setup>/<lang>.safetensors`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import artifacts, fingerprints, merging
from ..merging import fisher_information
from ..params import MissingInputError, Params
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


def run(p: Params, log=print) -> pd.DataFrame:
    rows, where = [], layout.of(p)
    for setup in p.setups:
        inputs = _inputs(p, setup)
        base = where.base_model(setup)
        base_fp = layout.require(p, where.base_step(setup))  # task vectors are taken against it
        fisher_fps: dict[str, str] = {}
        for method in p.merge_methods:
            needs_fisher = merging.get_method(method).needs_importance
            if needs_fisher and not fisher_fps:
                fisher_fps = {lang: estimate_fisher(p, setup, lang, *inputs[lang], log=log) for lang in p.langs}
            for langs in layout.merge_subsets(p):
                models = [inputs[lang][0] for lang in langs]
                fps = [base_fp] + [inputs[lang][1] for lang in langs] \
                    + ([fisher_fps[lang] for lang in langs] if needs_fisher else [])
                params = {**p.subset(fingerprints.keys("merge")), "method": method, "langs": list(langs)}
                out = where.merged_model(setup, method, langs)
                with artifacts.Step(p.run_path, where.merge_step(setup, method, langs), params, fps, log=log) as s:
                    if s.todo:
                        merging.merge_models(
                            method, models, out, base_dir=base, weights=[p.merge_weight] * len(models),
                            importances=[where.fisher_file(setup, lang) for lang in langs] if needs_fisher else None,
                            density=p.merge_density, normalize=p.merge_normalize, seed=p.seed,
                            fisher_floor=p.fisher_floor, dtype=p.merge_dtype, overwrite=True)
                        s.outputs = [out]
                rows.append({"setup": setup, "method": method, "langs": layout.subset_label(langs),
                             "models": len(models), "path": str(out)})
    return pd.DataFrame(rows)
