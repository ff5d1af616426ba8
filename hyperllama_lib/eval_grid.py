"""05_eval: every model of the run (English bases, adapted models, the multilingual models, merges)
on English BLiMP (summed log-probability conditioned on BOS) and held-out bits per byte in every
language (the run's held-out split and the parallel UDHR text). Results are tidy rows, one per
(model, benchmark, language, metric); a model already evaluated with the same settings is skipped."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import artifacts, cpt, data, evaluation, languages, merge_grid, modeling, training, upscale
from . import tokenizer as tok_lib
from .params import MissingInputError, Params

EVAL_KEYS = ["blimp_pairs_per_paradigm", "eval_max_bytes", "seed"]
RESULT_COLUMNS = ["model", "kind", "setup", "trained_on", "step", "tokens", "flops_total",
                  "flops_non_embedding", "benchmark", "lang", "metric", "value"]


@dataclass
class ModelEntry:
    model: str  # unique id, also the results file name
    kind: str  # base | cpt | multilingual | merged
    setup: str
    trained_on: str  # a language, "multilingual", a merge method, or "eng" for the bases
    path: Path
    step: str  # manifest step that produced it


def models(p: Params) -> list[ModelEntry]:
    """Every model the run has produced so far (missing ones are not listed)."""
    out = []
    for setup in p.setups:
        base = upscale.BASE_FOR_SETUP[setup]
        out.append(ModelEntry(f"{base}", "base", setup, languages.ENGLISH, upscale.base_model(p, setup),
                              f"english/{base}"))
        for lang in [*p.langs, languages.MULTILINGUAL]:
            kind = "multilingual" if lang == languages.MULTILINGUAL else "cpt"
            out.append(ModelEntry(f"cpt-{setup}-{lang}", kind, setup, lang, cpt.final_model(p, setup, lang),
                                  cpt.step_name(setup, lang)))
        for method in p.merge_methods:
            out.append(ModelEntry(f"merged-{setup}-{method}", "merged", setup, method,
                                  merge_grid.merged_model(p, setup, method), merge_grid.step_name(setup, method)))
    manifest = artifacts.Manifest(p.run_path)
    return [m for m in out if manifest.entry(m.step) is not None]


def results_path(p: Params) -> Path:
    return p.run_path / "results" / "results.csv"


def evaluate_model(p: Params, entry: ModelEntry, pairs: pd.DataFrame, tok, log=print) -> pd.DataFrame:
    device = training.resolve_device(p)
    model = modeling.load_model(entry.path).to(device).eval()
    info = artifacts.Manifest(p.run_path).entry(entry.step) or {}
    common = {"model": entry.model, "kind": entry.kind, "setup": entry.setup, "trained_on": entry.trained_on,
              "step": info.get("steps", 0), "tokens": info.get("tokens", 0),
              "flops_total": info.get("flops_total", 0), "flops_non_embedding": info.get("flops_non_embedding", 0)}
    rows = []
    with training.autocast(p, device):
        _, summary = evaluation.score_pairs(model, tok, pairs, batch_size=p.eval_batch_size, device=device,
                                            progress=False)
        rows.append({**common, "benchmark": "blimp", "lang": languages.ENGLISH, "metric": "accuracy",
                     "value": summary["accuracy"]})
        dp = data.paths(p)
        for lang in [languages.ENGLISH, *p.langs]:
            for bench, path in (("heldout", dp.heldout(lang)), ("udhr", dp.udhr(lang))):
                if not path.exists():
                    continue
                texts = data.read_texts(path, p.eval_max_bytes)
                res = evaluation.bits_per_byte(model, tok, texts, context_len=p.seq_len,
                                               batch_size=p.eval_batch_size, device=device, progress=False)
                rows.append({**common, "benchmark": bench, "lang": lang, "metric": "bpb", "value": res["bpb"]})
    log(f"  {entry.model}: BLiMP {summary['accuracy']:.3f}")
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def blimp_pairs(p: Params) -> pd.DataFrame:
    """BLiMP from the local data folder, or from the Hub (`nyu-mll/blimp`) for hub runs without one."""
    if (p.data_path / "blimp").is_dir() or p.data_source == "local":
        return evaluation.load_blimp_local(p.data_path, max_pairs_per_paradigm=p.blimp_pairs_per_paradigm,
                                           seed=p.seed)
    return evaluation.load_blimp_hub(max_pairs_per_paradigm=p.blimp_pairs_per_paradigm, seed=p.seed)


def run(p: Params, log=print) -> pd.DataFrame:
    upscale.require_step(p, data.STEP, "01_data")
    entries = models(p)
    if not entries:
        raise MissingInputError(f"no models in {p.run_path}; run notebooks/02_upscale.ipynb and 03_cpt.ipynb first")
    tok = tok_lib.load_tokenizer(data.paths(p).tokenizer)
    pairs = blimp_pairs(p)
    manifest = artifacts.Manifest(p.run_path)
    out_dir = p.run_path / "results" / "models"
    for entry in entries:
        upstream = [manifest.entry(entry.step)["fingerprint"]]
        with artifacts.Step(p.run_path, f"eval/{entry.model}", p.subset(EVAL_KEYS), upstream, log=log) as s:
            if s.todo:
                rows = evaluate_model(p, entry, pairs, tok, log=log)
                artifacts.atomic_write_text(out_dir / f"{entry.model}.csv", rows.to_csv(index=False))
                s.outputs = [out_dir / f"{entry.model}.csv"]
    frames = [pd.read_csv(out_dir / f"{e.model}.csv") for e in entries]
    results = pd.concat(frames, ignore_index=True)
    artifacts.atomic_write_text(results_path(p), results.to_csv(index=False))
    return results


def load_results(p: Params) -> pd.DataFrame:
    path = results_path(p)
    if not path.exists():
        raise MissingInputError(f"no results in {path}; run notebooks/05_eval.ipynb first")
    return pd.read_csv(path)
