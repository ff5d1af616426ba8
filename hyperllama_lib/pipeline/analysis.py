"""06_analysis: the paper's comparisons, from the run's rows to figures, tables and REPORT.md.

`collect(p)` gathers the rows (evaluation results, training curves, data statistics, run info) and
writes them as CSV to <publish>/tables/. `render(rows, publish_dir)` is a pure function of those rows:
it writes every figure (PNG + PDF, figures/), every derived table (CSV + Markdown + LaTeX, tables/) and
REPORT.md, so the published outputs can be re-rendered from the committed rows alone
(`render(load_rows(tables_dir), publish_dir)`). Sections, after the paper:
(1) data budgets; (2) data efficiency: target bits per byte and MultiBLiMP against target tokens;
(3) compute: the same against training FLOPs and FLOP-matched comparisons; (4) English forgetting;
(5) merging; (6) LoRA adapters against full CPT (beyond the paper: equal data, equal FLOPs, learning against
forgetting, adapter merges); (7) the paper's four claims, and two of our own on LoRA, checked against the run
(report.py).

A run whose models were fetched from the Hub (`models_from: hub`) has no training curves and usually no
intermediate checkpoints: it gets every table and figure that needs neither, the FLOP-matched comparison
from the authors' `-matching-1x` checkpoints (`flop_matched_released`) where they were evaluated, and
REPORT.md says in one sentence each what is left out and why.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402

from .. import artifacts, languages
from ..params import MissingInputError, Params, lora_twins  # noqa: E402
from . import cpt, evaluate, layout, report  # noqa: E402

SETUP_ORDER = ["1x", "1x_cloned", "2x", "1x_lora", "2x_lora", "1x_cloned_lora"]
PALETTE = dict(zip(SETUP_ORDER, sns.color_palette("colorblind", len(SETUP_ORDER))))
ROW_FILES = {"results": "results_tidy.csv", "curves": "curves.csv", "data_stats": "data_stats.csv",
             "run_info": "run_info.csv"}
CONVENTIONS = {"flops_total": "all parameters", "flops_non_embedding": "non-embedding parameters"}
# the columns of cpt.curves(p): curves.csv keeps them when a run has no curves (models fetched from the Hub)
CURVE_COLUMNS = ["stage", "step", "tokens", "flops_total", "flops_non_embedding", "lang", "bpb", "setup",
                 "trained_on"]
KIND_ORDER = ["base", "cpt", "matching", "multilingual", "merged"]
TABULATED_PAIRS = ("blimp", "multiblimp")  # pair benchmarks with tables of their own (english_blimp, multiblimp)
DPI = 150


# -- rows: collect, write, read back ----------------------------------------------------------------

def data_table(p: Params) -> pd.DataFrame:
    stats = pd.read_csv(layout.of(p).data.stats).convert_dtypes()
    cols = ["lang", "docs_raw", "duplicates_removed", "decontaminated", "heldout_overlap_removed", "train_docs",
            "heldout_docs", "train_chars", "train_tokens", "unimax_chars", "epochs", "target_tokens",
            "replay_tokens", "replay_share_samples", "stream_tokens", "steps"]
    return stats[[c for c in cols if c in stats]]


def shares(data_stats: pd.DataFrame, langs: list[str]) -> dict[str, float]:
    """Share of target-language tokens in each language's training stream (the rest is replay)."""
    stats = data_stats.set_index("lang")
    return {lang: float(stats.loc[lang, "target_tokens"] / stats.loc[lang, "stream_tokens"]) for lang in langs}


def run_info(p: Params) -> pd.DataFrame:
    info = {"scale": p.scale, "langs": ",".join(p.langs), "setups": ",".join(p.setups),
            "merge_methods": ",".join(p.merge_methods), "merge_subsets": p.merge_subsets,
            "models_from": p.models_from}
    return pd.DataFrame({"key": list(info), "value": list(info.values())})


def collect(p: Params, log=print) -> dict[str, pd.DataFrame]:
    """Gather the rows render() needs, write them to <publish>/tables/ and return them as read back."""
    curves = cpt.curves(p)
    if curves.empty and p.models_from != "hub":
        raise MissingInputError(f"no training curves in {p.run_path}; run notebooks/03_cpt.ipynb first")
    if curves.empty:  # fetched models were not trained here: the report leaves out what needs curves
        curves = pd.DataFrame(columns=CURVE_COLUMNS)
    rows = {"results": evaluate.load_results(p), "curves": curves, "data_stats": data_table(p),
            "run_info": run_info(p)}
    tables = p.publish_path / "tables"
    for key, df in rows.items():
        artifacts.atomic.write_text(tables / ROW_FILES[key], df.to_csv(index=False))
        log(f"  wrote {tables / ROW_FILES[key]}")
    # render from what was written, so a later render(load_rows(...)) reproduces the same outputs
    return load_rows(tables)


def load_rows(tables_dir: Path) -> dict[str, pd.DataFrame]:
    tables_dir = Path(tables_dir)
    missing = [name for name in ROW_FILES.values() if not (tables_dir / name).exists()]
    if missing:
        raise MissingInputError(f"no {', '.join(missing)} in {tables_dir}; run notebooks/06_analysis.ipynb")
    rows = {key: pd.read_csv(tables_dir / name) for key, name in ROW_FILES.items() if key != "run_info"}
    rows["results"]["final"] = rows["results"]["final"].astype(str).str.lower().eq("true")
    rows["run_info"] = pd.read_csv(tables_dir / ROW_FILES["run_info"], dtype=str, keep_default_na=False)
    return rows


def info(rows: dict[str, pd.DataFrame]) -> dict[str, object]:
    kv = dict(zip(rows["run_info"].key, rows["run_info"].value))
    split = {k: [x for x in kv.get(k, "").split(",") if x] for k in ("langs", "setups", "merge_methods")}
    results, present = rows["results"], set(rows["results"].setup)
    return {**kv, **split, "setups": [s for s in SETUP_ORDER if s in present and s in split["setups"]],
            "models_from": kv.get("models_from", "train"), "has_curves": not rows["curves"].empty,
            "has_checkpoints": bool((~results["final"].astype(bool)).any())}


# -- writing ----------------------------------------------------------------------------------------

def _markdown(df: pd.DataFrame, floatfmt: str) -> str:
    return df.astype(object).where(df.notna(), "").to_markdown(index=False, floatfmt=floatfmt)


def save_table(df: pd.DataFrame, tables: Path, name: str, floatfmt: str = ".4f") -> list[Path]:
    """CSV (6 significant digits), Markdown and LaTeX of one derived table."""
    paths = [tables / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    artifacts.atomic.write_text(paths[0], df.to_csv(index=False, float_format="%.6g"))
    artifacts.atomic.write_text(paths[1], _markdown(df, floatfmt) + "\n")
    tex = df.to_latex(index=False, na_rep="", escape=True, float_format=lambda x: f"{x:{floatfmt}}")
    artifacts.atomic.write_text(paths[2], tex)
    return paths


def save_figure(fig, figures: Path, name: str, formats=("png", "pdf")) -> list[Path]:
    """PNG and PDF without dates or version strings, so the same rows give the same files."""
    meta = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}
    out = []
    for ext in formats:
        path = figures / f"{name}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp.{ext}")
        fig.savefig(tmp, dpi=DPI, metadata=meta[ext])
        tmp.replace(path)
        out.append(path)
    plt.close(fig)
    return out


# -- helpers ----------------------------------------------------------------------------------------

def _lang_label(code: str) -> str:
    return languages.name(code).capitalize() if code in languages.LANGUAGES else code


def _finals(results: pd.DataFrame, benchmark: str, metric: str) -> pd.DataFrame:
    r = results
    return r[r["final"] & (r.benchmark == benchmark) & (r.metric == metric)]


def _sort(df: pd.DataFrame, orders: dict[str, list]) -> pd.DataFrame:
    """Rows in the run's order (setups, languages, ...); values not listed go last, stably."""
    ranks = {f"_r{i}": df[c].map({v: j for j, v in enumerate(order)}).fillna(len(order))
             for i, (c, order) in enumerate(orders.items())}
    return df.assign(**ranks).sort_values(list(ranks), kind="stable").drop(columns=list(ranks)).reset_index(drop=True)


def interpolate(x: float, xs, ys) -> float:
    """ys at x, linear between the points around x; NaN when x lies outside the points (beyond the run)."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(xs) == 0 or x > xs.max() * (1 + 1e-9) or x < xs.min():
        return float("nan")
    order = np.argsort(xs, kind="stable")
    return float(np.interp(x, xs[order], ys[order]))


def first_crossing(xs, ys, level: float) -> float:
    """The first x at which ys falls to `level` (linear between points); NaN if it never does."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    for i in range(len(xs)):
        if ys[i] <= level:
            if i == 0:
                return float(xs[0])
            frac = (ys[i - 1] - level) / (ys[i - 1] - ys[i])
            return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))
    return float("nan")


# -- (1) data -----------------------------------------------------------------------------------------

def data_budget_table(data_stats: pd.DataFrame, langs: list[str]) -> pd.DataFrame:
    """The paper's budget table: available characters, UniMax allocation, epochs, tokens, replay, steps."""
    cols = ["lang", "train_chars", "unimax_chars", "epochs", "target_tokens", "replay_tokens",
            "replay_share_samples", "steps"]
    order = [*langs, languages.MULTILINGUAL]
    t = _sort(data_stats[data_stats.lang.isin(order)], {"lang": order})
    t = t[[c for c in cols if c in t]].copy()
    for c in ["train_chars", "unimax_chars", "target_tokens", "replay_tokens", "steps"]:
        if c in t:
            t[c] = pd.to_numeric(t[c]).round().astype("Int64")
    return t


# -- (2) data efficiency ------------------------------------------------------------------------------

def target_curves(curves: pd.DataFrame, langs: list[str], share: dict[str, float],
                  english: bool = False) -> pd.DataFrame:
    """Monolingual CPT curves: bpb on the trained language (or on English) with target tokens seen."""
    mono = curves[curves.trained_on.isin(langs)]
    mono = mono[mono.lang == languages.ENGLISH] if english else mono[mono.lang == mono.trained_on]
    return mono.assign(target_tokens=mono.tokens * mono.trained_on.map(share)).sort_values(
        ["setup", "trained_on", "step"], kind="stable")


def multiblimp_points(results: pd.DataFrame, langs: list[str], share: dict[str, float]) -> pd.DataFrame:
    """MultiBLiMP accuracy on the trained language along each monolingual run: the setup's English base
    (step 0), every evaluated checkpoint, the final model."""
    r = results
    mb = r[(r.benchmark == "multiblimp") & (r.metric == "accuracy") & r.lang.isin(langs)]
    points = pd.concat([mb[mb.kind == "base"].assign(trained_on=lambda d: d.lang),
                        mb[(mb.kind == "cpt") & (mb.lang == mb.trained_on)]])
    return points.assign(target_tokens=points.tokens * points.trained_on.map(share)).sort_values(
        ["setup", "trained_on", "step"], kind="stable")


def final_bpb_table(results: pd.DataFrame, langs: list[str], setups: list[str]) -> pd.DataFrame:
    """Final held-out bpb of each monolingual model on its own language: languages x setups."""
    own = _finals(results, "heldout", "bpb")
    own = own[(own.kind == "cpt") & (own.lang == own.trained_on)]
    table = own.pivot_table(index="lang", columns="setup", values="value").reindex(langs)
    table = table.reindex(columns=[s for s in setups if s in table]).reset_index()
    table.columns.name = None
    return table


def equal_data_table(results: pd.DataFrame, langs: list[str], setups: list[str],
                     share: dict[str, float]) -> pd.DataFrame:
    """Equal data (the final models): target bpb and MultiBLiMP per language and setup, and each minus 1x."""
    keys = ["setup", "trained_on"]
    bpb = _finals(results, "heldout", "bpb")
    bpb = bpb[(bpb.kind == "cpt") & (bpb.lang == bpb.trained_on)][[*keys, "tokens", "value"]]
    mb = _finals(results, "multiblimp", "accuracy")
    mb = mb[(mb.kind == "cpt") & (mb.lang == mb.trained_on)][[*keys, "value"]]
    t = bpb.rename(columns={"value": "bpb"}).merge(mb.rename(columns={"value": "multiblimp"}), on=keys, how="left")
    t = t.rename(columns={"trained_on": "lang"})
    t["target_tokens"] = (t.tokens * t.lang.map(share)).round().astype("Int64")
    ref = t[t.setup == "1x"].set_index("lang")
    t["bpb_minus_1x"] = t.bpb - t.lang.map(ref.bpb)
    t["multiblimp_minus_1x"] = t.multiblimp - t.lang.map(ref.multiblimp)
    cols = ["lang", "setup", "target_tokens", "bpb", "bpb_minus_1x", "multiblimp", "multiblimp_minus_1x"]
    return _sort(t[cols], {"lang": langs, "setup": setups})


def efficiency_table(results: pd.DataFrame, curves: pd.DataFrame, langs: list[str], setups: list[str],
                     share: dict[str, float]) -> pd.DataFrame:
    """The equal-data table and the target tokens after which an upscaled setup's curve first reaches the
    1x final bpb."""
    t = equal_data_table(results, langs, setups, share)
    ref = t[t.setup == "1x"].set_index("lang")
    tc = target_curves(curves, langs, share)
    reach = []
    for setup, lang, level in zip(t.setup, t.lang, t.lang.map(ref.bpb)):
        c = tc[(tc.setup == setup) & (tc.trained_on == lang)]
        reach.append(float("nan") if setup == "1x" else first_crossing(c.target_tokens, c.bpb, level))
    t["target_tokens_to_reach_1x"] = pd.Series(reach, index=t.index).round().astype("Int64")
    t["share_of_data_to_reach_1x"] = pd.Series(reach, index=t.index) / t.target_tokens.astype(float)
    return t


def multiblimp_table(results: pd.DataFrame, setups: list[str]) -> pd.DataFrame:
    """MultiBLiMP accuracy of the final models: one row per setup and model, one column per language,
    named with the pairs' source ("built": from UD by 01_data; "released": MultiBLiMP 1.0)."""
    mb = _finals(results, "multiblimp", "accuracy")
    if mb.empty:
        return pd.DataFrame()
    mb = mb.assign(language=mb.lang + " (" + mb["source"].fillna("?").astype(str) + ")")
    table = mb.pivot_table(index=["setup", "kind", "trained_on"], columns="language", values="value").reset_index()
    table.columns.name = None
    return _sort(table, {"setup": setups, "kind": KIND_ORDER})


def pair_tables(results: pd.DataFrame, langs: list[str], setups: list[str]) -> dict[str, pd.DataFrame]:
    """Accuracy of every final model (subset merges aside) on each pair benchmark without a table of its own
    (e.g. blimp-single-error, mpararel): `pairs_<benchmark>`, one row per model, one column per language
    after the benchmark's name."""
    acc = results[results["final"] & (results.metric == "accuracy") & (results.kind != "merged_subset")
                  & ~results.benchmark.isin(TABULATED_PAIRS)]
    out = {}
    for bench in dict.fromkeys(acc.benchmark):
        table = acc[acc.benchmark == bench].pivot_table(index=["setup", "kind", "trained_on"], columns="lang",
                                                         values="value")
        order = [languages.ENGLISH, *langs]
        table = table[[c for c in order if c in table] + sorted(c for c in table if c not in order)].reset_index()
        table.columns.name = None
        table = _sort(table, {"setup": setups, "kind": KIND_ORDER})
        table.insert(0, "benchmark", bench)
        out[f"pairs_{bench.replace('-', '_')}"] = table
    return out


# -- (3) compute ----------------------------------------------------------------------------------------

def flop_matched_table(curves: pd.DataFrame, results: pd.DataFrame, langs: list[str], setups: list[str],
                       share: dict[str, float]) -> pd.DataFrame:
    """For each language and FLOP convention: the 1x final model's FLOPs F, and every setup's tokens, target
    bpb (training curve) and MultiBLiMP (checkpoints) at F, linear in FLOPs between the points around F."""
    keys = ["setup", "trained_on"]
    tc = dict(tuple(target_curves(curves, langs, share).groupby(keys)))
    mb = dict(tuple(multiblimp_points(results, langs, share).groupby(keys)))
    none = pd.DataFrame(columns=["tokens", "bpb", "value", *CONVENTIONS])
    rows = []
    for lang in langs:
        ref = tc.get(("1x", lang), none)
        if ref.empty:
            continue
        for col, convention in CONVENTIONS.items():
            flops = float(ref[col].max())
            for setup in setups:
                c, m = tc.get((setup, lang), none), mb.get((setup, lang), none)
                bpb = interpolate(flops, c[col], c.bpb)
                note = "1x final model" if setup == "1x" else "beyond the run" if np.isnan(bpb) else "interpolated"
                rows.append({"lang": lang, "convention": convention, "setup": setup, "flops": round(flops),
                             "tokens": interpolate(flops, c[col], c.tokens), "bpb": bpb,
                             "multiblimp": interpolate(flops, m[col], m.value), "note": note})
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows)
    group = t.groupby(["lang", "convention"], sort=False)
    t["bpb_minus_1x"] = t.bpb - group.bpb.transform("first")
    t["multiblimp_minus_1x"] = t.multiblimp - group.multiblimp.transform("first")
    t["target_tokens"] = (t.tokens * t.lang.map(share)).round().astype("Int64")
    t["tokens"] = t.tokens.round().astype("Int64")
    return t[["lang", "convention", "setup", "flops", "tokens", "target_tokens", "bpb", "bpb_minus_1x",
              "multiblimp", "multiblimp_minus_1x", "note"]]


def released_flop_matched_table(results: pd.DataFrame, langs: list[str], setups: list[str]) -> pd.DataFrame:
    """Without training curves: per language, the 1x final model beside the authors' released -matching-1x
    checkpoints of the upscaled setups (our reading: the checkpoint at the 1x final model's training FLOPs),
    with their steps, tokens, FLOPs and target bpb, English bpb, MultiBLiMP and BLiMP, each minus 1x; a
    setup without such a checkpoint for a language is a row saying so. Empty when no checkpoint was evaluated."""
    finals = results[results["final"]]
    if not (finals.kind == "matching").any():
        return pd.DataFrame()
    scored = finals[((finals.kind == "cpt") & (finals.setup == "1x")) | (finals.kind == "matching")]
    models = scored.drop_duplicates("model").set_index(["setup", "trained_on"])
    # (benchmark, metric, evaluated on the trained language?) per column; English otherwise
    measures = {"bpb": ("heldout", "bpb", True), "eng_bpb": ("heldout", "bpb", False),
                "multiblimp": ("multiblimp", "accuracy", True), "blimp": ("blimp", "accuracy", False)}
    values = {}
    for col, (bench, metric, own) in measures.items():
        s = scored[(scored.benchmark == bench) & (scored.metric == metric)]
        s = s[s.lang == s.trained_on] if own else s[s.lang == languages.ENGLISH]
        values[col] = s.drop_duplicates("model").set_index("model").value
    rows = []
    for lang in langs:
        for setup in setups:
            if (setup, lang) not in models.index:
                rows.append({"lang": lang, "setup": setup, "checkpoint": "not released" if setup != "1x"
                             else "no 1x final model"})
                continue
            m = models.loc[(setup, lang)]
            rows.append({"lang": lang, "setup": setup, "checkpoint": "1x final model" if setup == "1x"
                         else "-matching-1x", "step": m.step, "tokens": m.tokens, "flops_total": m.flops_total,
                         "flops_non_embedding": m.flops_non_embedding,
                         **{col: v.get(m.model, np.nan) for col, v in values.items()}})
    t = pd.DataFrame(rows).reindex(columns=["lang", "setup", "checkpoint", "step", "tokens", "flops_total",
                                            "flops_non_embedding", *measures])
    ref = t[t.setup == "1x"].set_index("lang")
    t.insert(6, "flops_total_vs_1x", t.flops_total.astype(float) / t.lang.map(ref.flops_total).astype(float))
    for col in measures:
        t.insert(t.columns.get_loc(col) + 1, f"{col}_minus_1x", t[col] - t.lang.map(ref[col]))
    for col in ["step", "tokens", "flops_total", "flops_non_embedding"]:
        t[col] = pd.to_numeric(t[col]).round().astype("Int64")
    return t


# -- (4) English forgetting ---------------------------------------------------------------------------

def blimp_table(results: pd.DataFrame, setups: list[str]) -> pd.DataFrame:
    """English BLiMP accuracy per setup: the English base, then each adapted model."""
    blimp = _finals(results, "blimp", "accuracy")
    table = blimp[blimp.kind.isin(["base", "cpt", "multilingual"])].pivot_table(
        index="setup", columns="trained_on", values="value")
    first = [c for c in [languages.ENGLISH] if c in table]
    table = table[first + [c for c in table if c not in first]].rename(columns={languages.ENGLISH: "base (before)"})
    adapted = [c for c in table if c != "base (before)"]
    table["mean change"] = table[adapted].mean(axis=1) - table["base (before)"]
    table = table.reindex([s for s in setups if s in table.index]).reset_index()
    table.columns.name = None
    return table


def forgetting_table(results: pd.DataFrame, langs: list[str], setups: list[str]) -> pd.DataFrame:
    """Every adapted model against its setup's English base: BLiMP accuracy and English held-out bpb,
    change = adapted - base (BLiMP < 0 and bpb > 0 mean forgetting)."""
    keys = ["setup", "kind", "trained_on"]
    blimp = _finals(results, "blimp", "accuracy")[[*keys, "value"]].rename(columns={"value": "blimp"})
    eng = _finals(results, "heldout", "bpb")
    eng = eng[eng.lang == languages.ENGLISH][[*keys, "value"]].rename(columns={"value": "eng_bpb"})
    both = blimp.merge(eng, on=keys, how="outer")
    base = both[both.kind == "base"].drop(columns=["kind", "trained_on"]).add_suffix("_base")
    t = both[both.kind.isin(["cpt", "multilingual"])].merge(base.rename(columns={"setup_base": "setup"}), on="setup")
    t["blimp_change"] = t.blimp - t.blimp_base
    t["eng_bpb_change"] = t.eng_bpb - t.eng_bpb_base
    cols = ["setup", "trained_on", "blimp_base", "blimp", "blimp_change", "eng_bpb_base", "eng_bpb", "eng_bpb_change"]
    return _sort(t[cols], {"setup": setups, "trained_on": [*langs, languages.MULTILINGUAL]})


# -- (5) merging ----------------------------------------------------------------------------------------

def merge_table(results: pd.DataFrame, langs: list[str]) -> pd.DataFrame:
    """Held-out bpb per target language: monolingual models, the multilingual model, each full merge."""
    held = _finals(results, "heldout", "bpb")
    held = held[held.lang.isin(langs)]
    mono = held[(held.kind == "cpt") & (held.lang == held.trained_on)].assign(model="monolingual")
    joint = held[held.kind == "multilingual"].assign(model="multilingual (joint)")
    merged = held[held.kind == "merged"].assign(model=lambda d: "merge: " + d.trained_on)
    table = pd.concat([mono, joint, merged]).pivot_table(index=["setup", "model"], columns="lang", values="value")
    table = table[[c for c in langs if c in table]]
    table["mean"] = table.mean(axis=1)
    table = table.reset_index()
    table.columns.name = None
    return table


def merge_methods_table(merging: pd.DataFrame, setups: list[str]) -> pd.DataFrame:
    """Mean target bpb of the full merge: methods x setups (lower is better)."""
    m = merging[merging.model.str.startswith("merge: ")]
    if m.empty:
        return pd.DataFrame()
    t = m.assign(method=m.model.str.removeprefix("merge: ")).pivot_table(index="method", columns="setup",
                                                                          values="mean")
    t = t[[s for s in setups if s in t]].reset_index()
    t.columns.name = None
    return t


def merge_summary_table(merging: pd.DataFrame, setups: list[str]) -> pd.DataFrame:
    """Per setup: monolingual and jointly trained means, the best and worst merge method, their gaps."""
    rows = []
    for setup in setups:
        g = merging[merging.setup == setup].set_index("model")["mean"]
        merges = g[g.index.str.startswith("merge: ")]
        if merges.empty:
            continue
        rows.append({"setup": setup, "monolingual": g.get("monolingual", np.nan),
                     "multilingual": g.get("multilingual (joint)", np.nan),
                     "best_method": merges.idxmin().removeprefix("merge: "), "best_merge": merges.min(),
                     "worst_method": merges.idxmax().removeprefix("merge: "), "worst_merge": merges.max()})
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    t["method_range"] = t.worst_merge - t.best_merge
    t["best_minus_multilingual"] = t.best_merge - t.multilingual
    t["best_minus_monolingual"] = t.best_merge - t.monolingual
    return t


def merge_multiblimp_table(results: pd.DataFrame, langs: list[str], setups: list[str]) -> pd.DataFrame:
    """Mean MultiBLiMP accuracy over the target languages: monolingual (own language), joint, each merge."""
    mb = _finals(results, "multiblimp", "accuracy")
    mb = mb[mb.lang.isin(langs)]
    mono = mb[(mb.kind == "cpt") & (mb.lang == mb.trained_on)].assign(model="monolingual")
    joint = mb[mb.kind == "multilingual"].assign(model="multilingual (joint)")
    merged = mb[mb.kind == "merged"].assign(model=lambda d: "merge: " + d.trained_on)
    if merged.empty:
        return pd.DataFrame()
    t = pd.concat([mono, joint, merged]).pivot_table(index="model", columns="setup", values="value")
    t = t[[s for s in setups if s in t]].reset_index()
    t.columns.name = None
    return t


def _subset_langs(kind: str, model: str, langs: list[str]) -> str:
    # subset merges are named merged-<setup>-<method>-<lang>+<lang>...; the full merge covers all langs
    return ",".join(langs) if kind == "merged" else model.rsplit("-", 1)[1].replace("+", ",")


def merge_subsets_table(results: pd.DataFrame, langs: list[str], setups: list[str]) -> pd.DataFrame:
    """Mean bpb of each merge on its own languages against the number of languages merged (all subsets),
    beside the monolingual and the jointly trained models on the same languages."""
    held = _finals(results, "heldout", "bpb")
    merged = held[held.kind.isin(["merged", "merged_subset"])]
    if not (merged.kind == "merged_subset").any():
        return pd.DataFrame()
    merged = merged.assign(subset=[_subset_langs(k, m, langs) for k, m in zip(merged.kind, merged.model)])
    own = merged[[lang in s.split(",") for lang, s in zip(merged.lang, merged.subset)]]
    per = own.groupby(["setup", "trained_on", "subset"], as_index=False).value.mean()
    held = held[held.lang.isin(langs)]
    refs = {"monolingual (same languages)": held[(held.kind == "cpt") & (held.lang == held.trained_on)],
            "multilingual (joint, same languages)": held[held.kind == "multilingual"]}
    for name, ref in refs.items():
        value = ref.set_index(["setup", "lang"]).value
        pairs = per[["setup", "subset"]].drop_duplicates()
        means = [np.mean([value.get((s, lang), np.nan) for lang in sub.split(",")])
                 for s, sub in zip(pairs.setup, pairs.subset)]
        per = pd.concat([per, pairs.assign(trained_on=name, value=means)])
    per["n_langs"] = per.subset.str.count(",") + 1
    t = per.groupby(["setup", "trained_on", "n_langs"], as_index=False).agg(
        mean_bpb=("value", "mean"), subsets=("subset", "nunique")).rename(columns={"trained_on": "method"})
    return _sort(t.sort_values(["method", "n_langs"], kind="stable"), {"setup": setups})


def pair_counts_table(results: pd.DataFrame) -> pd.DataFrame:
    """Pairs behind each accuracy of every pair benchmark (05_eval's n_pairs rows of the final models; the
    smallest count where models saw different numbers)."""
    n = results[(results.metric == "n_pairs") & results["final"].astype(bool)]
    rows = [{"benchmark": b, "lang": lang, "pairs": int(g.value.min())}
            for (b, lang), g in n.groupby(["benchmark", "lang"], sort=True)]
    return pd.DataFrame(rows, columns=["benchmark", "lang", "pairs"])


# -- (6) parameter-efficient adaptation (LoRA; beyond the paper) --------------------------------------------

def learning_forgetting_table(results: pd.DataFrame, forgetting: pd.DataFrame, langs: list[str],
                              setups: list[str]) -> pd.DataFrame:
    """One row per adapted model: target bpb (its own language; the multilingual model: the mean over the
    languages), the gain over its English base on the same text (learning) and its English changes
    (forgetting), with its training FLOPs."""
    held = _finals(results, "heldout", "bpb")
    held = held[held.lang.isin(langs)]
    base = held[held.kind == "base"].set_index(["setup", "lang"]).value
    rows = []
    for (setup, kind, trained_on), g in held[held.kind.isin(["cpt", "multilingual"])].groupby(
            ["setup", "kind", "trained_on"], sort=False):
        own = g if kind == "multilingual" else g[g.lang == trained_on]
        before = [base.get((setup, lang), np.nan) for lang in own.lang]
        rows.append({"setup": setup, "adaptation": "LoRA" if setup.endswith("_lora") else "full",
                     "base": setup.removesuffix("_lora"), "trained_on": trained_on,
                     "target_bpb": own.value.mean(), "target_gain": float(np.mean(before)) - own.value.mean(),
                     "flops_total": int(own.flops_total.iloc[0])})
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    t = t.merge(forgetting[["setup", "trained_on", "eng_bpb_change", "blimp_change"]], on=["setup", "trained_on"],
                how="left")
    return _sort(t, {"setup": setups, "trained_on": [*langs, languages.MULTILINGUAL]})


def lora_vs_full_table(points: pd.DataFrame, setups: list[str]) -> pd.DataFrame:
    """Equal data: each LoRA model beside the full CPT model of the same base and data."""
    if points.empty:
        return pd.DataFrame()
    cols = ["target_bpb", "target_gain", "eng_bpb_change", "blimp_change", "flops_total"]
    rows = []
    for full, lora in lora_twins(setups):
        a = points[points.setup == full].set_index("trained_on")[cols]
        b = points[points.setup == lora].set_index("trained_on")[cols]
        both = a.merge(b, left_index=True, right_index=True, suffixes=("_full", "_lora"))
        if both.empty:
            continue
        both["target_bpb_lora_minus_full"] = both.target_bpb_lora - both.target_bpb_full
        both["eng_bpb_change_lora_minus_full"] = both.eng_bpb_change_lora - both.eng_bpb_change_full
        both["flops_lora_over_full"] = both.flops_total_lora / both.flops_total_full
        rows.append(both.drop(columns=["flops_total_full", "flops_total_lora"]).reset_index().assign(base=full))
    if not rows:
        return pd.DataFrame()
    t = pd.concat(rows, ignore_index=True)
    first = ["base", "trained_on", "target_bpb_full", "target_bpb_lora", "target_bpb_lora_minus_full",
             "eng_bpb_change_full", "eng_bpb_change_lora", "eng_bpb_change_lora_minus_full", "blimp_change_full",
             "blimp_change_lora"]
    return t[first + [c for c in t if c not in first]]


def _curve_means(curves: pd.DataFrame, setup: str, trained_on: str, langs: list[str]) -> pd.DataFrame:
    """A training curve of one run: per step its FLOPs, the target bpb (mean over the trained languages) and
    the English bpb."""
    c = curves[(curves.setup == setup) & (curves.trained_on == trained_on)]
    targets = langs if trained_on == languages.MULTILINGUAL else [trained_on]
    target = c[c.lang.isin(targets)].groupby("step")[["bpb", *CONVENTIONS]].mean()
    english = c[c.lang == languages.ENGLISH].groupby("step").bpb.mean().rename("eng_bpb")
    return target.join(english, how="inner").reset_index()


def lora_equal_flops_table(curves: pd.DataFrame, langs: list[str], setups: list[str]) -> pd.DataFrame:
    """Equal FLOPs: each LoRA run's final point against its full-CPT twin's training curve at the same FLOPs
    (linear between the points around it), for both FLOP conventions. A LoRA step costs less (no weight
    gradients for frozen weights), so the full run is read part-way, with fewer tokens seen."""
    rows = []
    for full, lora in lora_twins(setups):
        for trained_on in [*langs, languages.MULTILINGUAL]:
            a, b = _curve_means(curves, full, trained_on, langs), _curve_means(curves, lora, trained_on, langs)
            if a.empty or b.empty:
                continue
            end = b.iloc[-1]
            for conv, label in CONVENTIONS.items():
                target = interpolate(end[conv], a[conv], a.bpb)
                english = interpolate(end[conv], a[conv], a.eng_bpb)
                rows.append({"base": full, "trained_on": trained_on, "convention": label, "flops": end[conv],
                             "full_share_of_its_steps": interpolate(end[conv], a[conv], a.step) / a.step.max(),
                             "target_bpb_full": target, "target_bpb_lora": end.bpb,
                             "target_bpb_lora_minus_full": end.bpb - target, "eng_bpb_full": english,
                             "eng_bpb_lora": end.eng_bpb, "eng_bpb_lora_minus_full": end.eng_bpb - english})
    t = pd.DataFrame(rows)
    return t.astype({"flops": "int64"}) if not t.empty else t


def lora_merging_table(summary: pd.DataFrame, setups: list[str]) -> pd.DataFrame:
    """Per base: the adapters' merges against the full models' merges and the jointly trained models (mean
    target bpb of the merge of all languages; the best method of each)."""
    if summary.empty:
        return pd.DataFrame()
    s = summary.set_index("setup")
    rows = []
    for full, lora in lora_twins(setups):
        if full not in s.index or lora not in s.index:
            continue
        f, a = s.loc[full], s.loc[lora]
        rows.append({"base": full, "joint_full": f.multilingual, "joint_lora": a.multilingual,
                     "best_merge_full": f.best_merge, "best_method_full": f.best_method,
                     "best_merge_lora": a.best_merge, "best_method_lora": a.best_method,
                     "merge_lora_minus_full": a.best_merge - f.best_merge,
                     "merge_minus_joint_full": f.best_minus_multilingual,
                     "merge_minus_joint_lora": a.best_minus_multilingual})
    return pd.DataFrame(rows)


def lora_upscaling_table(results: pd.DataFrame, langs: list[str], setups: list[str]) -> pd.DataFrame:
    """Does upscaling help LoRA as it helps full CPT: per language, 2x - 1x of the final monolingual models'
    target bpb and MultiBLiMP accuracy, for LoRA and for full CPT (equal data)."""
    if not {"1x_lora", "2x_lora"} <= set(setups):
        return pd.DataFrame()
    own = {}
    for bench, metric in (("heldout", "bpb"), ("multiblimp", "accuracy")):
        f = _finals(results, bench, metric)
        f = f[(f.kind == "cpt") & (f.lang == f.trained_on)]
        own[bench] = f.pivot_table(index="lang", columns="setup", values="value")
    bpb, mb = own["heldout"], own["multiblimp"]
    t = pd.DataFrame({"lang": [lang for lang in langs if lang in bpb.index]})
    for name, table in (("bpb", bpb), ("multiblimp", mb)):
        for setup in ("1x_lora", "2x_lora", "1x", "2x"):
            t[f"{name}_{setup}"] = t.lang.map(table[setup]) if setup in table else np.nan
        t[f"{name}_lora_2x_minus_1x"] = t[f"{name}_2x_lora"] - t[f"{name}_1x_lora"]
        t[f"{name}_full_2x_minus_1x"] = t[f"{name}_2x"] - t[f"{name}_1x"]
    return t


# -- figures --------------------------------------------------------------------------------------------

MARKERS, LINESTYLES = ["o", "X", "s", "^", "D", "v", "P", "*"], ["-", "--", ":", "-.", "-", "--", ":", "-."]


def _panels(df: pd.DataFrame, x: str, y: str, langs: list[str], setups: list[str], ylabel: str, xlabel: str,
            title: str, row: str | None = None):
    """One panel per language (and per `row` value), one line per setup through the measured points."""
    cols = [lang for lang in langs if lang in set(df.trained_on)]
    row_values = list(dict.fromkeys(df[row])) if row else [None]
    width, height = 2.7 * len(cols) + 1.5, 2.5 * len(row_values) + 0.4 + 0.3 * bool(row)
    fig, axes = plt.subplots(len(row_values), len(cols), figsize=(width, height), squeeze=False)
    # fixed margins in inches: a layout engine would cost most of the drawing time here
    top = 1 - (0.85 if row else 0.6) / height
    fig.subplots_adjust(left=0.7 / width, right=1 - 1.5 / width, bottom=0.55 / height, top=top,
                        wspace=0.32, hspace=0.55)
    for i, value in enumerate(row_values):
        for j, lang in enumerate(cols):
            ax, sub = axes[i][j], df[df.trained_on == lang]
            sub = sub[sub[row] == value] if row else sub
            for k, setup in enumerate(setups):
                s = sub[sub.setup == setup].sort_values(x, kind="stable")
                ax.plot(s[x], s[y], marker=MARKERS[k], ls=LINESTYLES[k], color=PALETTE[setup], label=setup,
                        ms=4, lw=1.3, alpha=0.9)
            ax.set_title(_lang_label(lang) + (f"\n{value}" if row else ""), fontsize=9)
            ax.set_xlabel(xlabel if i == len(row_values) - 1 else "", fontsize=8)
            ax.set_ylabel(ylabel if j == 0 else "", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))  # 20k tokens, 200G FLOPs
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="setup", loc="center left", bbox_to_anchor=(1 - 1.35 / width, 0.5), fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / height)
    sns.despine(fig)
    return fig, axes


def data_budget_figure(budget: pd.DataFrame):
    t = budget[budget.lang != languages.MULTILINGUAL]
    long = pd.concat([t.assign(chars=t.train_chars, what="available (training split)"),
                      t.assign(chars=t.unimax_chars, what="UniMax allocation")])
    long = long.assign(language=long.lang.map(_lang_label), chars=long.chars.astype(float))
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    sns.barplot(data=long, x="language", y="chars", hue="what", palette="colorblind", errorbar=None, ax=ax)
    top = float(long.chars.max())
    ax.set_yscale("log")
    ax.set_ylim(float(long.chars.min()) / 3, top * 3)
    ax.set(xlabel="", ylabel="characters (log scale)", title="Data per language and UniMax allocation")
    for i, epochs in enumerate(t.epochs):
        ax.annotate(f"{float(epochs):.2f} epochs", (i, top * 1.3), ha="center", fontsize=8)
    ax.legend(title="", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def bpb_figure(tc: pd.DataFrame, langs, setups, english: bool = False):
    title = ("English forgetting during adaptation: English bits per byte (higher = more forgetting)" if english
             else "Data efficiency: target-language bits per byte (lower is better)")
    ylabel = "English held-out bits/byte" if english else "target held-out bits/byte"
    return _panels(tc, "target_tokens", "bpb", langs, setups, ylabel, "target-language tokens seen", title)[0]


def multiblimp_figure(points: pd.DataFrame, langs, setups):
    fig, axes = _panels(points, "target_tokens", "value", langs, setups, "MultiBLiMP accuracy",
                        "target-language tokens seen", "Data efficiency: target-language grammar "
                        "(MultiBLiMP; dotted: chance; 0 tokens = English base)")
    for ax in axes.flat:
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    return fig


def flops_figure(df: pd.DataFrame, y: str, ylabel: str, langs, setups):
    """y against the adaptation stage's training FLOPs, 6 x N x tokens with N = all parameters (top) or
    non-embedding parameters (bottom)."""
    long = pd.concat([df.assign(flops=df[col], convention=name) for col, name in CONVENTIONS.items()])
    return _panels(long, "flops", y, langs, setups, ylabel, "training FLOPs",
                   f"Compute efficiency: {ylabel} vs training FLOPs, 6 x N x tokens "
                   "(N = all parameters, top row; non-embedding parameters, bottom row)", row="convention")[0]


def blimp_figure(results: pd.DataFrame, setups):
    blimp = _finals(results, "blimp", "accuracy")
    blimp = blimp[blimp.kind.isin(["base", "cpt", "multilingual"])]
    blimp = blimp.assign(model=blimp.trained_on.map(lambda c: "English base" if c == languages.ENGLISH
                                                    else _lang_label(c)))
    order = ["English base"] + sorted(m for m in blimp.model.unique() if m != "English base")
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    sns.barplot(data=blimp, x="model", y="value", hue="setup", hue_order=setups, palette=PALETTE,
                order=order, errorbar=None, ax=ax)
    ax.set(xlabel="", ylabel="English BLiMP accuracy", title="English grammar before and after adaptation")
    ax.set_ylim(max(0.0, blimp.value.min() - 0.05), min(1.0, blimp.value.max() + 0.05))
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(title="setup", fontsize=8)
    return fig


def blimp_curve_figure(results: pd.DataFrame, langs, setups, share):
    """English BLiMP accuracy of every CPT checkpoint against target tokens seen (the base at 0)."""
    r = results
    blimp = r[(r.benchmark == "blimp") & (r.metric == "accuracy")]
    start = pd.concat([blimp[blimp.kind == "base"].assign(trained_on=lang) for lang in langs])
    curve = pd.concat([start, blimp[blimp.kind == "cpt"]])
    curve = curve.assign(target_tokens=curve.tokens * curve.trained_on.map(share))
    return _panels(curve, "target_tokens", "value", langs, setups, "English BLiMP accuracy",
                   "target-language tokens seen", "English grammar during adaptation (every checkpoint)")[0]


def _heatmap(ax, grid: pd.DataFrame, cmap: str, vmin: float, vmax: float, fmt: str, colorbar: str | None = None):
    """Annotated heatmap of a table (rows x columns); NaN cells stay blank."""
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    colours = image.cmap(image.norm(values))
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            dark = colours[i, j, :3] @ np.array([0.299, 0.587, 0.114]) < 0.5  # white text on dark cells
            ax.text(j, i, f"{v:{fmt}}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(values.shape[1]), list(grid.columns), rotation=90, fontsize=8)
    ax.set_yticks(range(values.shape[0]), list(grid.index), fontsize=8)
    if colorbar is not None:
        ax.figure.colorbar(image, ax=ax, label=colorbar, shrink=0.85)


def forgetting_figure(forgetting: pd.DataFrame, langs, setups):
    cols = [c for c in [*langs, languages.MULTILINGUAL] if c in set(forgetting.trained_on)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(setups) + 2.2), layout="constrained")
    panels = [("blimp_change", "RdBu", "English BLiMP accuracy change\n(adapted - base; < 0 = forgetting)"),
              ("eng_bpb_change", "RdBu_r", "English bits/byte change\n(adapted - base; > 0 = forgetting)")]
    for ax, (value, cmap, title) in zip(axes, panels):
        grid = forgetting.pivot_table(index="setup", columns="trained_on", values=value).reindex(
            index=setups, columns=cols).rename(columns=_lang_label)
        # one symmetric range, so that colour intensity reads the same on both sides of zero
        vmax = max(float(np.nanmax(np.abs(grid.to_numpy()))), 1e-6)
        _heatmap(ax, grid, cmap, -vmax, vmax, "+.3f", colorbar="")
        ax.set(xlabel="adapted to", ylabel="setup", title=title)
    fig.suptitle("English forgetting: every adapted model minus its English base (red = forgetting)")
    return fig


def merge_figure(merging: pd.DataFrame, setups):
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    sns.barplot(data=merging, x="model", y="mean", hue="setup", hue_order=setups, palette=PALETTE,
                errorbar=None, ax=ax)
    ax.set(xlabel="", ylabel="mean target bits/byte\n(lower is better)",
           title="Merged vs jointly trained multilingual vs monolingual (all target languages)")
    ax.set_ylim(max(0.0, merging["mean"].min() - 0.3), merging["mean"].max() + 0.1)
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(title="setup", fontsize=8)
    return fig


def merge_methods_figure(merging: pd.DataFrame, langs, setups):
    cols = [c for c in langs if c in merging] + ["mean"]
    fig, axes = plt.subplots(1, len(setups), figsize=(4.3 * len(setups), 0.35 * merging.model.nunique() + 2.2),
                             sharey=True, squeeze=False, layout="constrained")
    lo, hi = float(merging[cols].min().min()), float(merging[cols].max().max())
    for i, (ax, setup) in enumerate(zip(axes[0], setups)):
        grid = merging[merging.setup == setup].set_index("model")[cols].rename(columns=_lang_label)
        _heatmap(ax, grid, "viridis", lo, hi, ".2f",
                 colorbar="bits/byte (lower is better)" if i == len(setups) - 1 else None)
        ax.set(title=setup, xlabel="evaluated language", ylabel="" if i else "model")
    fig.suptitle("Merge methods x setups: held-out bits per byte per target language")
    return fig


def subset_figure(subsets: pd.DataFrame, setups):
    methods = list(dict.fromkeys(subsets.method))
    colours = sns.color_palette("colorblind", len(methods))
    fig, axes = plt.subplots(1, len(setups), figsize=(3.2 * len(setups) + 2.5, 3.0), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, setup in zip(axes[0], setups):
        for k, method in enumerate(methods):
            s = subsets[(subsets.setup == setup) & (subsets.method == method)].sort_values("n_langs")
            ax.plot(s.n_langs, s.mean_bpb, marker=MARKERS[k % 8], ls=LINESTYLES[k % 8], color=colours[k],
                    label=method, ms=4, lw=1.3)
        ax.set(title=setup, xlabel="languages merged", xticks=sorted(subsets.n_langs.unique()))
    axes[0][0].set_ylabel("mean bits/byte on\nthe merged languages")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="method", loc="outside right center", fontsize=8)
    fig.suptitle("Merge quality against subset size (mean over all subsets of that size)")
    sns.despine(fig)
    return fig


def learning_forgetting_figure(points: pd.DataFrame, setups):
    """One point per adapted model: English forgetting (x) against target-language learning (y)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    shown = [s for s in setups if s in set(points.setup)]
    for ax, (x, xlabel) in zip(axes, [("eng_bpb_change", "English bits/byte change (> 0 = forgetting)"),
                                      ("blimp_change", "English BLiMP accuracy change (< 0 = forgetting)")]):
        sns.scatterplot(data=points, x=x, y="target_gain", hue="base", style="adaptation",
                        hue_order=[s for s in SETUP_ORDER if s in set(points.base)], markers={"full": "o", "LoRA": "X"},
                        palette=PALETTE, s=60, ax=ax, legend=ax is axes[-1])
        ax.axvline(0, color="0.6", lw=0.8, zorder=0)
        ax.set(xlabel=xlabel, ylabel="target bits/byte gained over the base (learning)")
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(f"Learning against forgetting, one point per adapted model ({', '.join(shown)})")
    sns.despine(fig)
    return fig


def figures(rows: dict[str, pd.DataFrame], tables: dict[str, pd.DataFrame]) -> dict:
    """name -> function drawing the figure, for every figure the rows allow."""
    inf = info(rows)
    langs, setups = inf["langs"], inf["setups"]
    results, share = rows["results"], shares(rows["data_stats"], langs)
    mb = multiblimp_points(results, langs, share)
    out = {"data_budget": lambda: data_budget_figure(tables["data_budget"])}
    if inf["has_curves"]:
        tc = target_curves(rows["curves"], langs, share)
        out["bpb_vs_target_tokens"] = lambda: bpb_figure(tc, langs, setups)
        out["bpb_vs_training_flops"] = lambda: flops_figure(tc, "bpb", "target bits/byte", langs, setups)
    # without curves, only checkpoints make these learning curves (a base and a final point are no curve)
    if not mb.empty and (inf["has_curves"] or (~mb["final"].astype(bool)).any()):
        out["multiblimp_vs_target_tokens"] = lambda: multiblimp_figure(mb, langs, setups)
        out["multiblimp_vs_training_flops"] = lambda: flops_figure(mb, "value", "MultiBLiMP accuracy", langs, setups)
    if "forgetting" in tables:
        out["english_forgetting"] = lambda: forgetting_figure(tables["forgetting"], langs, setups)
        out["english_blimp_before_after"] = lambda: blimp_figure(results, setups)
    english = target_curves(rows["curves"], langs, share, english=True) if inf["has_curves"] else pd.DataFrame()
    if not english.empty:
        out["english_bpb_during_cpt"] = lambda: bpb_figure(english, langs, setups, english=True)
    if (~results["final"]).any():
        out["english_blimp_during_cpt"] = lambda: blimp_curve_figure(results, langs, setups, share)
    if "merge_methods" in tables:
        out["merge_methods"] = lambda: merge_methods_figure(tables["merging"], langs, setups)
    if "merging" in tables:
        out["merged_vs_multilingual"] = lambda: merge_figure(tables["merging"], setups)
    if "merge_subsets" in tables:
        out["merge_subset_size"] = lambda: subset_figure(tables["merge_subsets"], setups)
    if "lora_vs_full" in tables:
        out["lora_learning_vs_forgetting"] = lambda: learning_forgetting_figure(tables["learning_forgetting"], setups)
    return out


# -- render and run ---------------------------------------------------------------------------------------

def derive(rows: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every derived table (empty ones left out), the findings check last."""
    inf = info(rows)
    langs, setups = inf["langs"], inf["setups"]
    results, curves = rows["results"], rows["curves"]
    share = shares(rows["data_stats"], langs)
    merging = merge_table(results, langs)
    curved = inf["has_curves"]
    tables = {
        "data_budget": data_budget_table(rows["data_stats"], langs),
        "heldout_bpb_final": final_bpb_table(results, langs, setups),
        "data_efficiency": efficiency_table(results, curves, langs, setups, share) if curved else pd.DataFrame(),
        "multiblimp": multiblimp_table(results, setups),
        **pair_tables(results, langs, setups),
        "flop_matched": flop_matched_table(curves, results, langs, setups, share) if curved else pd.DataFrame(),
        "flop_matched_released": released_flop_matched_table(results, langs, setups),
        "english_blimp": blimp_table(results, setups),
        "forgetting": forgetting_table(results, langs, setups),
        "merging": merging,
        "merge_methods": merge_methods_table(merging, setups),
        "merge_summary": merge_summary_table(merging, setups),
        "merge_multiblimp": merge_multiblimp_table(results, langs, setups),
        "merge_subsets": merge_subsets_table(results, langs, setups),
        "pair_counts": pair_counts_table(results),
    }
    forgetting = tables["forgetting"]
    tables["learning_forgetting"] = (learning_forgetting_table(results, forgetting, langs, setups)
                                     if lora_twins(setups) else pd.DataFrame())
    tables["lora_vs_full"] = lora_vs_full_table(tables["learning_forgetting"], setups)
    tables["lora_equal_flops"] = lora_equal_flops_table(curves, langs, setups) if curved else pd.DataFrame()
    tables["lora_merging"] = lora_merging_table(tables["merge_summary"], setups)
    tables["lora_upscaling"] = lora_upscaling_table(results, langs, setups)
    tables = {name: t for name, t in tables.items() if not t.empty}
    # without curves claim 1 still compares the final models at equal data (data_efficiency less the curves)
    equal_data = None if curved else equal_data_table(results, langs, setups, share)
    tables["findings"] = report.findings(tables, setups, equal_data=equal_data)
    lora = report.lora_findings(tables, setups)
    if not lora.empty:
        tables["lora_findings"] = lora
    return tables


TABLE_FLOATFMT = {"data_budget": ".3f", "flop_matched": ".3f", "flop_matched_released": ".3f"}


def render(rows: dict[str, pd.DataFrame], publish_dir: Path, log=print, formats=("png", "pdf")) -> dict:
    """Write every figure (in `formats`; none if empty), derived table and REPORT.md; a pure function of
    the rows."""
    publish_dir = Path(publish_dir)
    fig_dir, table_dir = publish_dir / "figures", publish_dir / "tables"
    fig_dir.mkdir(parents=True, exist_ok=True)
    tables = derive(rows)
    written, markdown = [], {}
    for name, df in tables.items():
        written += save_table(df, table_dir, name, TABLE_FLOATFMT.get(name, ".4f"))
        markdown[name] = _markdown(df, TABLE_FLOATFMT.get(name, ".4f"))
    drawn = figures(rows, tables)
    for name, draw in drawn.items() if formats else []:
        written += save_figure(draw(), fig_dir, name, formats)
    written.append(report.write(publish_dir, {**info(rows), **report.model_counts(rows["results"])},
                                tables, markdown, list(drawn)))
    for path in written:
        log(f"  wrote {path}")
    return {"tables": tables, "figures": {name: fig_dir / f"{name}.png" for name in drawn},
            "report": publish_dir / "REPORT.md"}


def run(p: Params, log=print) -> dict:
    """collect + render: the rows to <publish>/tables/, then every output rendered from them."""
    return render(collect(p, log=log), p.publish_path, log=log)
