"""The evaluation benchmarks as data: one `Benchmark` per benchmark, in `BENCHMARKS`, in row order.

Each entry says what 05_eval needs to run it: its kind ("pairs": minimal pairs scored with
`score_pairs`, every language of a model in one call; "text": `bits_per_byte`, one call per
language), its loader, its metrics, the languages it covers for a final model and for a
checkpoint (None: not run on checkpoints), and whether the loaded data itself decides if a model's
rows are current (`fingerprint_data`: data from outside the run, such as released files or the Hub).

Loaders take a `Context` (the run's 01_data paths, the params, a log), never the pipeline's layout,
and return lang -> (data, source): a pairs table (pair_sources' columns) or a list of texts, and
the value of the `source` column of its rows (None: no source). A language the loader returns no
data for gets no rows.

The paper's own evaluation sets come from the Hub only with `eval_source: hub`: `blimp-single-error`
(liu-nlp/blimp-single-error, English), `mpararel` (liu-nlp/minimal_pair_mpararel, the run's languages it
has) and MultiBLiMP's released files (jumelet/multiblimp), all with source "released" and their data in
the fingerprint. A set that cannot be fetched or read then stops 05_eval with one line (DataError,
PairsFormatError); there is no silent fallback. With `eval_source: local` nothing is fetched: the two
paper sets give no rows and MultiBLiMP comes from multiblimp_dir or 01_data's pairs built from UD. The
layouts assumed for the two paper sets are in pair_sources' and hub_tables' docstrings.

Rows come as pair benchmarks in table order, then text benchmarks language by language (a model's
languages in order, each with every text benchmark in table order).

To add a benchmark, write its loader and add one entry, as `blimp-single-error` is added:

    def load_blimp_single_error(ctx):
        ...  # lang -> (pairs, "released")

    Benchmark("blimp-single-error", "pairs", load_blimp_single_error, PAIR_SET_METRICS,
              langs="english", checkpoint_langs="english", fingerprint_data=True,
              data="the Hub's liu-nlp/blimp-single-error (eval_source: hub)"),

Nothing else: the table's names and metrics enter every model's eval fingerprint (pipeline/evaluate.py),
so models evaluated before get the new rows on the next run.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..corpus.local import read_texts
from ..languages import ENGLISH
from ..params import Params
from . import pair_sources
from .scoring import VARIANTS

if TYPE_CHECKING:
    from ..pipeline.layout import DataPaths

KINDS = ("pairs", "text")
PER_PARADIGM = "accuracy:<paradigm>"  # a metric that expands to one row per paradigm (phenomenon)
BLIMP_METRICS = ("accuracy", "accuracy_token_mean", "accuracy_byte_norm", "n_pairs")
MULTIBLIMP_METRICS = ("accuracy", "n_pairs", PER_PARADIGM)
PAIR_SET_METRICS = (*BLIMP_METRICS, PER_PARADIGM)  # the paper's sets: per paradigm (relation) where they have one
RELEASED = "released"  # the source of rows scored on files the authors (or MultiBLiMP's) released
TEXT_METRICS = ("bpb", "token_perplexity")  # token_perplexity: comparable only between models sharing a tokenizer

# The languages a benchmark covers, from a model's languages (English first, then its target languages).
LANG_SCOPES: dict[str, Callable[[Sequence[str]], list[str]]] = {
    "english": lambda langs: [ENGLISH],
    "model": lambda langs: list(langs),
    # the model's languages but English: for a checkpoint, the ones its training run adapts to
    "target": lambda langs: [lang for lang in langs if lang != ENGLISH],
}

Loaded = dict[str, tuple[Any, "str | None"]]  # lang -> (pairs table or texts, source)


@dataclass(frozen=True)
class Context:
    """What loaders may use, built by pipeline/evaluate.py."""
    data: DataPaths  # the run's 01_data outputs
    params: Params
    log: Callable[[str], None] = print

    @property
    def langs(self) -> list[str]:
        """Every language a model of the run can have: English and the target languages."""
        return [ENGLISH, *self.params.langs]


@dataclass(frozen=True)
class Benchmark:
    name: str  # the `benchmark` column
    kind: str  # one of KINDS
    load: Callable[[Context], Loaded]
    metrics: tuple[str, ...]  # pairs: VARIANTS' accuracies, n_pairs, PER_PARADIGM; text: bits_per_byte's keys
    langs: str  # a LANG_SCOPES key: the languages of a final model it covers
    checkpoint_langs: str | None  # the same for checkpoints; None: checkpoints do not get it
    data: str  # where its data comes from
    fingerprint_data: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"benchmark {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for scope in (self.langs, self.checkpoint_langs):
            if scope is not None and scope not in LANG_SCOPES:
                raise ValueError(f"benchmark {self.name}: languages {scope!r} are not one of "
                                 f"{', '.join(LANG_SCOPES)}")

    @property
    def on_checkpoints(self) -> bool:
        return self.checkpoint_langs is not None

    def langs_for(self, model_langs: Sequence[str], final: bool) -> list[str]:
        """The languages of a model (final or a checkpoint) this benchmark scores, before data is checked."""
        scope = self.langs if final else self.checkpoint_langs
        return LANG_SCOPES[scope](model_langs) if scope is not None else []


# ---------------------------------------------------------------- loaders

def load_blimp(ctx: Context) -> Loaded:
    """BLiMP from the local data folder, or from the Hub (`nyu-mll/blimp`) for hub runs without one."""
    p = ctx.params
    kwargs = {"max_pairs_per_paradigm": p.blimp_pairs_per_paradigm, "seed": p.seed}
    if (p.data_path / "blimp").is_dir() or p.data_source == "local":
        return {ENGLISH: (pair_sources.load_blimp_local(p.data_path, **kwargs), None)}
    return {ENGLISH: (pair_sources.load_blimp_hub(**kwargs), None)}


def load_blimp_single_error(ctx: Context) -> Loaded:
    """The paper's filtered BLiMP from the Hub (eval_source: hub), blimp_pairs_per_paradigm per paradigm."""
    p = ctx.params
    if p.eval_source != "hub":
        return {}
    pairs = pair_sources.load_blimp_single_error_hub(max_pairs_per_paradigm=p.blimp_pairs_per_paradigm,
                                                     seed=p.seed)
    ctx.log(f"blimp-single-error: {len(pairs)} pairs, {pairs['paradigm'].nunique()} paradigms")
    return {ENGLISH: (pairs.drop(columns="lang"), RELEASED)} if len(pairs) else {}


def load_mpararel(ctx: Context) -> Loaded:
    """mParaRel minimal pairs from the Hub (eval_source: hub) in the run's languages that it has,
    mpararel_pairs_per_relation per language and relation."""
    p = ctx.params
    if p.eval_source != "hub":
        return {}
    pairs = pair_sources.load_mpararel_hub(langs=ctx.langs, max_pairs_per_relation=p.mpararel_pairs_per_relation,
                                           seed=p.seed)
    out = {lang: (group.drop(columns="lang").reset_index(drop=True), RELEASED)
           for lang in ctx.langs if len(group := pairs[pairs["lang"] == lang])}
    ctx.log("mParaRel: " + (", ".join(f"{lang} {len(df)} pairs" for lang, (df, _) in out.items())
                            or f"none of the run's languages ({', '.join(ctx.langs)})"))
    return out


def load_multiblimp(ctx: Context) -> Loaded:
    """English and the target languages: the released files in multiblimp_dir, else (eval_source: hub) the
    Hub's, both with source "released", else the pairs 01_data built from UD ("built"). Subsampled to
    multiblimp_pairs_per_phenomenon per language and phenomenon. With eval_source: hub, a language the Hub
    does not give stops here (one line), rather than silently falling back to the built pairs."""
    p = ctx.params
    out = {}
    for lang in ctx.langs:
        kwargs = {"max_pairs_per_paradigm": p.multiblimp_pairs_per_phenomenon, "seed": p.seed}
        released = p.multiblimp_path / lang / "data.tsv" if p.multiblimp_path else None
        if released is not None and released.is_file():
            out[lang] = (pair_sources.load_multiblimp_local(released, lang=lang, **kwargs), RELEASED)
        elif p.eval_source == "hub":
            out[lang] = (pair_sources.load_multiblimp_hub(lang, **kwargs), RELEASED)
        elif (built := ctx.data.multiblimp(lang)).is_file():
            out[lang] = (pair_sources.load_multiblimp_local(built, lang=lang, **kwargs), "built")
        if lang in out and out[lang][0].empty:
            del out[lang]
    ctx.log("MultiBLiMP: " + (", ".join(f"{lang} {len(df)} pairs ({source})" for lang, (df, source) in out.items())
                              or "no pairs"))
    return out


def _texts(ctx: Context, path_of: Callable[[str], Path]) -> Loaded:
    """One 01_data text file per language, cut to eval_max_bytes; languages without a file are left out."""
    paths = {lang: path_of(lang) for lang in ctx.langs}
    return {lang: (read_texts(path, ctx.params.eval_max_bytes), None) for lang, path in paths.items()
            if path.exists()}


def load_heldout(ctx: Context) -> Loaded:
    return _texts(ctx, ctx.data.heldout)


def load_udhr(ctx: Context) -> Loaded:
    return _texts(ctx, ctx.data.udhr)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("blimp", "pairs", load_blimp, BLIMP_METRICS, langs="english", checkpoint_langs="english",
              data="data_dir/blimp (*.jsonl), else the Hub's nyu-mll/blimp"),
    Benchmark("blimp-single-error", "pairs", load_blimp_single_error, PAIR_SET_METRICS, langs="english",
              checkpoint_langs="english", fingerprint_data=True,
              data="the Hub's liu-nlp/blimp-single-error (eval_source: hub; layout assumed, pair_sources)"),
    Benchmark("multiblimp", "pairs", load_multiblimp, MULTIBLIMP_METRICS, langs="model",
              checkpoint_langs="target", fingerprint_data=True,
              data="multiblimp_dir/<iso>/data.tsv, else the Hub's jumelet/multiblimp (eval_source: hub), else "
                   "01_data's pairs built from UD (data/multiblimp/<iso>/data.tsv)"),
    # Checkpoints get it in the language they learn only, as MultiBLiMP: the learning curves need the
    # target language, and English knowledge is measured on the final models (forgetting).
    Benchmark("mpararel", "pairs", load_mpararel, PAIR_SET_METRICS, langs="model", checkpoint_langs="target",
              fingerprint_data=True,
              data="the Hub's liu-nlp/minimal_pair_mpararel (eval_source: hub; layout assumed, pair_sources)"),
    # Checkpoints get no bits per byte: training measured the same held-out split at every
    # `train_eval_every_tokens` (curve.csv), which is what the learning-curve figures draw.
    Benchmark("heldout", "text", load_heldout, TEXT_METRICS, langs="model",
              checkpoint_langs=None, data="01_data's held-out split (data/heldout/<iso>.txt)"),
    Benchmark("udhr", "text", load_udhr, TEXT_METRICS, langs="model",
              checkpoint_langs=None, data="the UDHR, never trained on (data/udhr/<iso>.txt)"),
)


# ---------------------------------------------------------------- rows from scores

def data_fingerprint_input(bench: Benchmark, loaded: Loaded) -> dict:
    """What decides whether rows of a `fingerprint_data` benchmark are current: each language's source
    and data (pairs: their good and bad sentences)."""
    if bench.kind == "pairs":
        return {lang: [source, *df["good"], *df["bad"]] for lang, (df, source) in loaded.items()}
    return {lang: [source, *texts] for lang, (texts, source) in loaded.items()}


def pair_rows(bench: Benchmark, scored: pd.DataFrame, loaded: Loaded) -> list[dict]:
    """Rows of a pairs benchmark from `score_pairs`' table of all its languages (column lang)."""
    rows = []
    for lang, group in scored.groupby("lang", sort=False):
        source = loaded[lang][1]
        base = {"benchmark": bench.name, "lang": lang, **({"source": source} if source is not None else {})}
        for metric in bench.metrics:
            if metric == PER_PARADIGM:
                rows += [{**base, "metric": f"accuracy:{paradigm}", "value": float(g["correct"].mean())}
                         for paradigm, g in group.groupby("paradigm", sort=True)]
            elif metric == "n_pairs":
                rows.append({**base, "metric": metric, "value": len(group)})
            else:
                rows.append({**base, "metric": metric, "value": float(group[VARIANTS[metric]].mean())})
    return rows


def text_rows(bench: Benchmark, lang: str, result: dict, loaded: Loaded) -> list[dict]:
    """Rows of a text benchmark in one language from `bits_per_byte`'s result."""
    source = loaded[lang][1]
    base = {"benchmark": bench.name, "lang": lang, **({"source": source} if source is not None else {})}
    return [{**base, "metric": metric, "value": result[metric]} for metric in bench.metrics]
