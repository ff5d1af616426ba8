"""05_eval: every model of the run (English bases, adapted models and every checkpoint saved during
their training, the multilingual models, merges) on English BLiMP (summed log-probability conditioned
on BOS), MultiBLiMP agreement pairs per language (same scoring) and held-out bits per byte (the run's
held-out split and the parallel UDHR text).

Results are tidy rows (model, kind, setup, trained_on, step, tokens, flops_*, final, benchmark, lang,
metric, value, source). step/tokens/flops count the adaptation stage: 0 for the English bases and for
merges (they add no training). Final models get every benchmark in every language. Checkpoints get
English BLiMP and MultiBLiMP in the language(s) they are trained on, which is what the learning curves
need; their bits per byte come from training itself, which measured the same held-out split at every
`train_eval_every_tokens` (`cpt.curves`, each stage's curve.csv). MultiBLiMP rows have benchmark "multiblimp", metrics "accuracy" and "accuracy:<phenomenon>", and
(like BLiMP) "n_pairs", the number of pairs scored, and
source "released" (multiblimp_dir or the Hub) or "built" (01_data's pairs from UD). Each (model, step)
is its own step of the manifest, so re-running evaluates only what is missing or changed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .. import artifacts, evaluation, languages, training
from .. import fingerprints
from . import data, layout
from ..models import modeling
from ..evaluation import pair_sources
from ..corpus import tokenizer as tok_lib
from ..params import MissingInputError, Params

# source: where MultiBLiMP pairs came from ("released": files or the Hub; "built": 01_data, from UD); else empty
RESULT_COLUMNS = ["model", "kind", "setup", "trained_on", "step", "tokens", "flops_total",
                  "flops_non_embedding", "final", "benchmark", "lang", "metric", "value", "source"]
BLIMP_METRICS = ("accuracy", "accuracy_token_mean", "accuracy_byte_norm")
RESULTS_SCHEMA = 5  # bump when rows change shape, so older result files are recomputed, not mixed in


@dataclass
class ModelEntry:
    model: str  # run id: base_1x, cpt-2x-fas, merged-1x-ties, ...
    kind: str  # base | cpt | multilingual | merged
    setup: str
    trained_on: str  # a language, "multilingual", a merge method, or "eng" for the bases
    path: Path
    producer: str  # manifest step that produced it
    step: int = 0
    tokens: int = 0
    flops_total: int = 0
    flops_non_embedding: int = 0
    final: bool = True
    langs: list[str] = field(default_factory=list)  # languages for bits per byte

    @property
    def key(self) -> str:
        return self.model if self.final else f"{self.model}@{self.step:06d}"


def _checkpoints(p: Params, entry: ModelEntry, info: dict) -> list[ModelEntry]:
    """The intermediate checkpoints of a CPT run, with their own step, tokens and FLOPs."""
    out = []
    folder = layout.of(p).cpt_checkpoints(entry.setup, entry.trained_on)
    for ckpt in sorted(folder.glob("step_*")) if folder.is_dir() else []:
        step = int(re.sub(r"\D", "", ckpt.name))
        frac = step / info["steps"]
        trained = list(p.langs) if entry.trained_on == languages.MULTILINGUAL else [entry.trained_on]
        out.append(ModelEntry(entry.model, entry.kind, entry.setup, entry.trained_on, ckpt, entry.producer,
                              step, round(info["tokens"] * frac), round(info["flops_total"] * frac),
                              round(info["flops_non_embedding"] * frac), final=False,
                              langs=[languages.ENGLISH, *trained]))
    return out


def models(p: Params, checkpoints: bool = True) -> list[ModelEntry]:
    """Every model the run has produced so far (missing ones are not listed), checkpoints included."""
    manifest, where = artifacts.Manifest(p.run_path), layout.of(p)
    all_langs = [languages.ENGLISH, *p.langs]
    out = []
    for setup in p.setups:
        base = layout.BASE_FOR_SETUP[setup]
        out.append(ModelEntry(base, "base", setup, languages.ENGLISH, where.base_model(setup),
                              where.base_step(setup), langs=all_langs))
        for lang in [*p.langs, languages.MULTILINGUAL]:
            info = manifest.entry(where.cpt_step(setup, lang))
            if info is None:
                continue
            kind = "multilingual" if lang == languages.MULTILINGUAL else "cpt"
            entry = ModelEntry(f"cpt-{setup}-{lang}", kind, setup, lang, where.cpt_model(setup, lang),
                               where.cpt_step(setup, lang), info["steps"], info["tokens"], info["flops_total"],
                               info["flops_non_embedding"], langs=all_langs)
            out += (_checkpoints(p, entry, info) if checkpoints else []) + [entry]
        for method in p.merge_methods:
            for langs in layout.merge_subsets(p):
                full = where.is_full(langs)
                name = f"merged-{setup}-{method}" + ("" if full else f"-{layout.subset_label(langs)}")
                # kind "merged": the merge of all languages; "merged_subset": the paper's smaller subsets
                out.append(ModelEntry(name, "merged" if full else "merged_subset", setup, method,
                                      where.merged_model(setup, method, langs),
                                      where.merge_step(setup, method, langs),
                                      langs=[languages.ENGLISH, *langs]))
    return [m for m in out if manifest.entry(m.producer) is not None]


def multiblimp_rows(model, tok, entry: ModelEntry, multiblimp: dict, common: dict, p: Params,
                    device) -> list[dict]:
    """MultiBLiMP accuracy per language of the entry (checkpoints: only the languages they are trained
    on), overall and per phenomenon (metric "accuracy:<phenomenon>"), scored in one call."""
    langs = [lang for lang in entry.langs if lang in multiblimp and (entry.final or lang != languages.ENGLISH)]
    if not langs:
        return []
    pairs = pd.concat([multiblimp[lang][0].assign(lang=lang) for lang in langs], ignore_index=True)
    scored, _ = evaluation.score_pairs(model, tok, pairs, batch_size=p.eval_batch_size, device=device,
                                       progress=False)
    rows = []
    for lang, group in scored.groupby("lang", sort=False):
        base = {**common, "benchmark": "multiblimp", "lang": lang, "source": multiblimp[lang][1]}
        rows.append({**base, "metric": "accuracy", "value": float(group["correct"].mean())})
        rows.append({**base, "metric": "n_pairs", "value": len(group)})
        rows += [{**base, "metric": f"accuracy:{phenomenon}", "value": float(g["correct"].mean())}
                 for phenomenon, g in group.groupby("paradigm", sort=True)]
    return rows


def evaluate_model(p: Params, entry: ModelEntry, pairs: pd.DataFrame, tok,
                   multiblimp: dict | None = None) -> pd.DataFrame:
    """BLiMP, MultiBLiMP (multiblimp: lang -> (pairs, source)) and bits per byte rows of one model."""
    device = training.resolve_device(p)
    model = modeling.load_model(entry.path).to(device).eval()
    common = {"model": entry.model, "kind": entry.kind, "setup": entry.setup, "trained_on": entry.trained_on,
              "step": entry.step, "tokens": entry.tokens, "flops_total": entry.flops_total,
              "flops_non_embedding": entry.flops_non_embedding, "final": entry.final}
    rows = []
    dp = layout.of(p).data
    with training.autocast(p, device):
        _, summary = evaluation.score_pairs(model, tok, pairs, batch_size=p.eval_batch_size, device=device,
                                            progress=False)
        rows += [{**common, "benchmark": "blimp", "lang": languages.ENGLISH, "metric": metric,
                  "value": summary[metric]} for metric in (*BLIMP_METRICS, "n_pairs") if metric in summary]
        rows += multiblimp_rows(model, tok, entry, multiblimp or {}, common, p, device)
        # Checkpoints get no bits per byte here: training measured the same held-out split at every
        # `train_eval_every_tokens` (curve.csv), which is what the learning-curve figures draw.
        benches = [("heldout", dp.heldout), ("udhr", dp.udhr)] if entry.final else []
        for lang in entry.langs:
            for bench, path_of in benches:
                path = path_of(lang)
                if not path.exists():
                    continue
                res = evaluation.bits_per_byte(model, tok, data.read_texts(path, p.eval_max_bytes),
                                               context_len=p.seq_len, batch_size=p.eval_batch_size,
                                               device=device, progress=False)
                rows.append({**common, "benchmark": bench, "lang": lang, "metric": "bpb", "value": res["bpb"]})
                # per token of this model's tokenizer: comparable only between models sharing it
                rows.append({**common, "benchmark": bench, "lang": lang, "metric": "token_perplexity",
                             "value": res["token_perplexity"]})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def blimp_pairs(p: Params) -> pd.DataFrame:
    """BLiMP from the local data folder, or from the Hub (`nyu-mll/blimp`) for hub runs without one."""
    if (p.data_path / "blimp").is_dir() or p.data_source == "local":
        return pair_sources.load_blimp_local(p.data_path, max_pairs_per_paradigm=p.blimp_pairs_per_paradigm,
                                           seed=p.seed)
    return pair_sources.load_blimp_hub(max_pairs_per_paradigm=p.blimp_pairs_per_paradigm, seed=p.seed)


def multiblimp_pairs(p: Params, log=print) -> dict[str, tuple[pd.DataFrame, str]]:
    """lang -> (pairs, source) for English and the target languages: the released files in
    multiblimp_dir, else (hub runs without multiblimp_dir) the Hub's, else the pairs 01_data built
    ("built"). Subsampled to multiblimp_pairs_per_phenomenon per language and phenomenon."""
    out = {}
    for lang in [languages.ENGLISH, *p.langs]:
        kwargs = {"max_pairs_per_paradigm": p.multiblimp_pairs_per_phenomenon, "seed": p.seed}
        released = p.multiblimp_path / lang / "data.tsv" if p.multiblimp_path else None
        if released is not None and released.is_file():
            out[lang] = (pair_sources.load_multiblimp_local(released, lang=lang, **kwargs), "released")
        elif released is None and p.data_source == "hub":
            try:
                out[lang] = (pair_sources.load_multiblimp_hub(lang, **kwargs), "released")
            except Exception as e:  # offline, or no such language on the Hub: fall back to the built pairs
                log(f"MultiBLiMP {lang}: not from the Hub ({type(e).__name__}), using the built pairs")
        built = layout.of(p).data.multiblimp(lang)
        if lang not in out and built.is_file():
            out[lang] = (pair_sources.load_multiblimp_local(built, lang=lang, **kwargs), "built")
        if lang in out and out[lang][0].empty:
            del out[lang]
    log("MultiBLiMP: " + (", ".join(f"{lang} {len(df)} pairs ({source})" for lang, (df, source) in out.items())
                          or "no pairs"))
    return out


def selected(entry: ModelEntry, which: str | None) -> bool:
    """Whether `eval_models` (None: all; base | merged | a language | multilingual) covers the entry."""
    if which is None:
        return True
    if which == "base":
        return entry.kind == "base"
    if which == "merged":
        return entry.kind in ("merged", "merged_subset")
    return entry.kind in ("cpt", "multilingual") and entry.trained_on == which


def run(p: Params, log=print) -> pd.DataFrame:
    """Evaluate the models `eval_models` selects (all by default) that are not evaluated yet; return
    their rows (`load_results` gathers every model's)."""
    layout.require(p, layout.DATA_STEP)
    entries = [e for e in models(p, checkpoints=p.eval_checkpoints) if selected(e, p.eval_models)]
    if not entries:
        which = "" if p.eval_models is None else f" ({p.eval_models}, setups {', '.join(p.setups)})"
        raise MissingInputError(f"no models to evaluate{which} in {p.run_path}; run notebooks/02_upscale.ipynb, "
                                "03_cpt.ipynb and 04_merge.ipynb first")
    tok = tok_lib.load_tokenizer(layout.of(p).data.tokenizer)
    pairs = blimp_pairs(p)
    multiblimp = multiblimp_pairs(p, log)
    # the pairs themselves (source and sentences) decide whether a model's MultiBLiMP rows are current
    multiblimp_id = artifacts.fingerprint({lang: [source, *df["good"], *df["bad"]]
                                           for lang, (df, source) in multiblimp.items()})
    manifest = artifacts.Manifest(p.run_path)
    todo = []
    for entry in entries:
        step = artifacts.Step(p.run_path, layout.RunLayout.eval_step(entry.key), {**p.subset(fingerprints.keys("eval")), "schema": RESULTS_SCHEMA,
                                                                "multiblimp": multiblimp_id},
                              [manifest.entry(entry.producer)["fingerprint"]], log=lambda m: None)
        (todo if step.todo else []).append((entry, step))
    log(f"{len(entries)} models and checkpoints, {len(entries) - len(todo)} already evaluated")
    for entry, step in tqdm(todo, desc="evaluating", unit="model", mininterval=2.0):
        with step:
            rows = evaluate_model(p, entry, pairs, tok, multiblimp)
            target = layout.of(p).model_results(entry.key)
            artifacts.atomic_write_text(target, rows.to_csv(index=False))
            step.outputs = [target]
    return pd.concat([pd.read_csv(layout.of(p).model_results(e.key)) for e in entries], ignore_index=True)


def load_results(p: Params, log=print) -> pd.DataFrame:
    """The rows of every model of the run evaluated so far (05_eval may have run per model group);
    also written to results/results.csv."""
    entries = models(p, checkpoints=p.eval_checkpoints)
    found = [f for f in (layout.of(p).model_results(e.key) for e in entries) if f.is_file()]
    if not found:
        raise MissingInputError(f"no evaluation results in {p.run_path}; run notebooks/05_eval.ipynb first")
    if len(found) < len(entries):
        log(f"{len(entries) - len(found)} of {len(entries)} models and checkpoints are not evaluated yet; "
            "run notebooks/05_eval.ipynb to include them")
    results = pd.concat([pd.read_csv(f) for f in found], ignore_index=True)
    artifacts.atomic_write_text(layout.of(p).results, results.to_csv(index=False))
    return results
