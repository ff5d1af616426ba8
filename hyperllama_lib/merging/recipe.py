"""A merge kept as its recipe (`merge_store: recipe`): what to merge how, built only while it is used.

The paper's grid is 26 language subsets x 7 methods x 3 setups; stored in float16 the merged models take
about 480 GB, more than one GPU machine or Colab has. As a recipe, 04_merge checks each merge (the
models fit together, the method takes its parameters) and writes `recipe.json` alone; 05_eval builds the
merged model in a hidden folder beside it, loads it, and deletes the folder, so one merged model is on
disk at a time. The merge is the same computation either way (seeded as the engine seeds it), so a
recipe built twice gives the same tensors.

Paths in the recipe are relative to its own folder: a run directory can move.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..artifacts import atomic
from . import engine

RECIPE = "recipe.json"


def _rel(path: str | Path, folder: Path) -> str:
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def write(method: str, model_dirs: Sequence[str | Path], out_dir: str | Path, base_dir: str | Path | None,
          weights: Sequence[float], *, importances: Sequence[str | Path] | None, dtype: str, overwrite: bool = False,
          **params: Any) -> Path:
    """Write the recipe of a merge to out_dir; merge_models' arguments."""
    if Path(out_dir).exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True to replace it)")
    # checked as merge_models checks a merge before it reads any tensor
    m = engine.get_method(method)
    out = Path(out_dir)
    models = [Path(d) for d in model_dirs]
    if m.needs_base and base_dir is None:
        raise engine.MergeError(f"merge method {method!r} needs a base model (base_dir)")
    if dtype not in engine.DTYPES:
        raise engine.MergeError(f"unknown dtype {dtype!r}; valid choices: {', '.join(engine.DTYPES)}")
    engine.resolve_params(m, params, len(models))
    engine.check_compatible(models + ([Path(base_dir)] if base_dir is not None else []))
    recipe = {"method": method, "models": [_rel(d, out) for d in models],
              "base": None if base_dir is None else _rel(base_dir, out), "weights": list(weights),
              "importances": None if importances is None else [_rel(f, out) for f in importances],
              "dtype": dtype, "params": params}
    with atomic.replace_dir(out) as tmp:
        atomic.write_json(tmp / RECIPE, recipe)
    return out


def is_recipe(folder: str | Path) -> bool:
    return (Path(folder) / RECIPE).is_file() and not (Path(folder) / "config.json").exists()


@contextlib.contextmanager
def built(folder: str | Path) -> Iterator[Path]:
    """The merged model of a recipe folder, built in a hidden sibling folder that is removed afterwards."""
    folder = Path(folder)
    r = json.loads((folder / RECIPE).read_text())
    where = folder.parent / f".{folder.name}.built"
    try:
        engine.merge_models(r["method"], [folder / d for d in r["models"]], where,
                            base_dir=None if r["base"] is None else folder / r["base"], weights=r["weights"],
                            importances=None if r["importances"] is None else [folder / f for f in r["importances"]],
                            dtype=r["dtype"], overwrite=True, **r["params"])
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
