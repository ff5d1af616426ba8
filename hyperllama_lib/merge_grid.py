"""04_merge: merge the five language models of each setup with each method; task vectors are taken
against that setup's English base (paper settings: weight 1.0 per model, density 0.5, normalize true)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import artifacts, cpt, merging, upscale
from .params import MissingInputError, Params

MERGE_KEYS = ["merge_density", "merge_weight", "merge_normalize", "merge_dtype", "seed"]


def merged_model(p: Params, setup: str, method: str) -> Path:
    return p.run_path / "models" / "merged" / setup / method


def step_name(setup: str, method: str) -> str:
    return f"merge/{setup}/{method}"


def _inputs(p: Params, setup: str) -> tuple[list[Path], list[str]]:
    manifest = artifacts.Manifest(p.run_path)
    models, fps = [], []
    for lang in p.langs:
        entry = manifest.entry(cpt.step_name(setup, lang))
        if entry is None:
            raise MissingInputError(f"no {setup} model for {lang} in {p.run_path}; run "
                                    f"`papermill notebooks/03_cpt.ipynb out.ipynb -p lang {lang} -p scale {p.scale}` first")
        models.append(cpt.final_model(p, setup, lang))
        fps.append(entry["fingerprint"])
    return models, fps


def run(p: Params, log=print) -> pd.DataFrame:
    rows = []
    for setup in p.setups:
        models, fps = _inputs(p, setup)
        base = upscale.base_model(p, setup)
        for method in p.merge_methods:
            params = {**p.subset(MERGE_KEYS), "method": method, "langs": list(p.langs)}
            out = merged_model(p, setup, method)
            with artifacts.Step(p.run_path, step_name(setup, method), params, fps, log=log) as s:
                if s.todo:
                    merging.merge_models(method, models, out, base_dir=base,
                                         weights=[p.merge_weight] * len(models), density=p.merge_density,
                                         normalize=p.merge_normalize, seed=p.seed, dtype=p.merge_dtype,
                                         overwrite=True)
                    s.outputs = [out]
            rows.append({"setup": setup, "method": method, "models": len(models), "path": str(out)})
    return pd.DataFrame(rows)
