"""05_eval: every model of the run (English bases, adapted models and every checkpoint saved during
their training, the multilingual models, merges) on every benchmark of `evaluation.benchmarks`
(`BENCHMARKS`): English BLiMP (summed log-probability conditioned on BOS), MultiBLiMP agreement pairs
per language (same scoring) and held-out bits per byte (the run's held-out split and the parallel UDHR
text); with `eval_source: hub` also the paper's own sets from the Hub, `blimp-single-error` (English)
and `mpararel` (factual knowledge as minimal pairs, the run's languages it has), and MultiBLiMP's
released files. That table says what each benchmark loads, which languages it covers and its metrics;
this module lists the models, loads every benchmark once, scores each model and keeps the manifest.
The two paper sets' layouts could not be checked offline: their loaders accept the plausible ones
(evaluation/pair_sources.py, evaluation/hub_tables.py) and stop with one line naming the file and the
columns found otherwise.

Results are tidy rows (model, kind, setup, trained_on, step, tokens, flops_*, final, benchmark, lang,
metric, value, source). step/tokens/flops count the adaptation stage: 0 for the English bases and for
merges (they add no training). Final models get every benchmark in every language. Checkpoints get
English BLiMP (and blimp-single-error), MultiBLiMP and mParaRel in the language(s) they are trained on,
which is what the learning curves need; their bits per byte come from training itself, which measured
the same held-out split at every `train_eval_every_tokens` (`cpt.curves`, each stage's curve.csv).
MultiBLiMP rows have benchmark "multiblimp", metrics "accuracy" and "accuracy:<phenomenon>", and (like
BLiMP) "n_pairs", the number of pairs scored, and source "released" (multiblimp_dir or the Hub) or
"built" (01_data's pairs from UD). blimp-single-error and mpararel rows have BLiMP's metrics, plus
"accuracy:<paradigm>" (BLiMP's UID; mParaRel's relation) where the data names one, and source
"released". Each (model, step) is its own step of the manifest, so re-running evaluates only what is
missing or changed; data from the Hub enters the fingerprint, so changed data is evaluated again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import artifacts, evaluation, fingerprints, languages
from ..corpus import tokenizer as tok_lib
from ..device import resolve as resolve_placement
from ..evaluation import benchmarks
from ..merging import recipe
from ..models import modeling
from ..params import MissingInputError, Params
from ..progress import tqdm
from ..training.stage_folder import step_folders, step_of
from . import layout

# source: where pairs came from ("released": files the authors or MultiBLiMP released, local or from the Hub;
# "built": 01_data's MultiBLiMP-style pairs from UD); empty for the local BLiMP and the texts
RESULT_COLUMNS = ["model", "kind", "setup", "trained_on", "step", "tokens", "flops_total",
                  "flops_non_embedding", "final", "benchmark", "lang", "metric", "value", "source"]
RESULTS_SCHEMA = 5  # bump when rows change shape, so older result files are recomputed, not mixed in


@dataclass
class ModelEntry:
    model: str  # run id: base_1x, cpt-2x-fas, merged-1x-ties, ...
    kind: str  # base | cpt | multilingual | matching (hub runs: a released -matching-1x checkpoint) | merged
    #          | merged_subset
    setup: str
    trained_on: str  # a language, "multilingual", a merge method, or "eng" for the bases
    path: Path
    producer: str  # manifest step that produced it
    step: int = 0
    tokens: int = 0
    flops_total: int = 0
    flops_non_embedding: int = 0
    final: bool = True
    langs: list[str] = field(default_factory=list)  # English first, then its target languages

    @property
    def key(self) -> str:
        return self.model if self.final else f"{self.model}@{self.step:06d}"


def _checkpoints(p: Params, entry: ModelEntry, info: dict) -> list[ModelEntry]:
    """The intermediate checkpoints of a CPT run, with their own step, tokens and FLOPs."""
    out = []
    folder = layout.of(p).cpt_checkpoints(entry.setup, entry.trained_on)
    for ckpt in step_folders(folder):
        step = step_of(ckpt)
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
            matching = manifest.entry(where.matching_step(setup, lang))
            if matching is not None and not matching.get("absent"):
                out.append(ModelEntry(f"matching-{setup}-{lang}", "matching", setup, lang,
                                      where.cpt_matching(setup, lang), where.matching_step(setup, lang),
                                      matching["steps"], matching["tokens"], matching["flops_total"],
                                      matching["flops_non_embedding"], langs=all_langs))
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


def load_benchmarks(p: Params, log=print) -> dict[str, benchmarks.Loaded]:
    """Every benchmark's data (benchmark -> lang -> (data, source)), loaded once for all models."""
    ctx = benchmarks.Context(layout.of(p).data, p, log)
    return {bench.name: bench.load(ctx) for bench in benchmarks.BENCHMARKS}


def evaluate_model(p: Params, entry: ModelEntry, tok, loaded: dict[str, benchmarks.Loaded]) -> pd.DataFrame:
    """The rows of one model on every benchmark of `benchmarks.BENCHMARKS` that covers it, in the
    languages the benchmark covers for it (a final model or a checkpoint) and has data for (`loaded`)."""
    # the run's precision, explicitly: scoring's own "auto" would choose bf16 on any GPU
    placement = resolve_placement(p.device, p.precision)
    device, dtype = placement.device, placement.precision
    if recipe.is_recipe(entry.path):  # merge_store: recipe: build the merge just for this
        with recipe.built(entry.path) as folder:
            model = modeling.load_model(folder)
    else:
        model = modeling.load_model(entry.path)
    model = model.to(device).eval()
    common = {"model": entry.model, "kind": entry.kind, "setup": entry.setup, "trained_on": entry.trained_on,
              "step": entry.step, "tokens": entry.tokens, "flops_total": entry.flops_total,
              "flops_non_embedding": entry.flops_non_embedding, "final": entry.final}
    langs = {bench.name: [lang for lang in bench.langs_for(entry.langs, entry.final) if lang in loaded[bench.name]]
             for bench in benchmarks.BENCHMARKS}
    rows = []
    for bench in (b for b in benchmarks.BENCHMARKS if b.kind == "pairs" and langs[b.name]):
        data = loaded[bench.name]
        # every language in one call: scoring batches across them
        pairs = pd.concat([data[lang][0].assign(lang=lang) for lang in langs[bench.name]], ignore_index=True)
        scored, _ = evaluation.score_pairs(model, tok, pairs, batch_size=p.eval_batch_size, device=device,
                                           progress=False, dtype=dtype)
        rows += benchmarks.pair_rows(bench, scored, data)
    text_benches = [b for b in benchmarks.BENCHMARKS if b.kind == "text"]
    for lang in entry.langs:
        for bench in (b for b in text_benches if lang in langs[b.name]):
            data = loaded[bench.name]
            res = evaluation.bits_per_byte(model, tok, data[lang][0], context_len=p.seq_len,
                                           batch_size=p.eval_batch_size, device=device, progress=False,
                                           dtype=dtype)
            rows += benchmarks.text_rows(bench, lang, res, data)
    return pd.DataFrame([{**common, **row} for row in rows], columns=RESULT_COLUMNS)


def selected(entry: ModelEntry, which: str | None) -> bool:
    """Whether `eval_models` (None: all; base | merged | a language | multilingual) covers the entry."""
    if which is None:
        return True
    if which == "base":
        return entry.kind == "base"
    if which == "merged":
        return entry.kind in ("merged", "merged_subset")
    return entry.kind in ("cpt", "multilingual", "matching") and entry.trained_on == which


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
    loaded = load_benchmarks(p, log)
    # the table's benchmarks, and the data itself (e.g. MultiBLiMP's source and sentences), decide whether a
    # model's rows are current: a benchmark added to the table is run on every model evaluated before
    data_ids = {"benchmarks": [(bench.name, bench.metrics) for bench in benchmarks.BENCHMARKS]}
    data_ids |= {bench.name: artifacts.fingerprint(benchmarks.data_fingerprint_input(bench, loaded[bench.name]))
                for bench in benchmarks.BENCHMARKS if bench.fingerprint_data}
    manifest = artifacts.Manifest(p.run_path)
    todo = []
    for entry in entries:
        params = {**p.subset(fingerprints.keys("eval")), "schema": RESULTS_SCHEMA, **data_ids}
        step = artifacts.Step(p.run_path, layout.RunLayout.eval_step(entry.key), params,
                              [manifest.entry(entry.producer)["fingerprint"]], log=lambda m: None)
        (todo if step.todo else []).append((entry, step))
    log(f"{len(entries)} models and checkpoints, {len(entries) - len(todo)} already evaluated")
    for entry, step in tqdm(todo, desc="evaluating", unit="model", mininterval=2.0):
        with step:
            rows = evaluate_model(p, entry, tok, loaded)
            target = layout.of(p).model_results(entry.key)
            artifacts.atomic.write_text(target, rows.to_csv(index=False))
            step.outputs = [target]
    return pd.concat([_rows_of(p, e) for e in entries], ignore_index=True)


def _rows_of(p: Params, entry: ModelEntry) -> pd.DataFrame:
    """A model's saved rows, labelled with the entry's setup: an English base is scored once and serves
    every setup built on it (base_1x: 1x and 1x_lora)."""
    return pd.read_csv(layout.of(p).model_results(entry.key)).assign(setup=entry.setup)


def load_results(p: Params, log=print) -> pd.DataFrame:
    """The rows of every model of the run evaluated so far (05_eval may have run per model group);
    also written to results/results.csv."""
    entries = models(p, checkpoints=p.eval_checkpoints)
    found = [e for e in entries if layout.of(p).model_results(e.key).is_file()]
    if not found:
        raise MissingInputError(f"no evaluation results in {p.run_path}; run notebooks/05_eval.ipynb first")
    if len(found) < len(entries):
        log(f"{len(entries) - len(found)} of {len(entries)} models and checkpoints are not evaluated yet; "
            "run notebooks/05_eval.ipynb to include them")
    results = pd.concat([_rows_of(p, e) for e in found], ignore_index=True)
    artifacts.atomic.write_text(layout.of(p).results, results.to_csv(index=False))
    return results
