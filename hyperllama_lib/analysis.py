"""06_analysis: the paper's comparisons as figures (PNG + PDF) and tables (CSV + Markdown).

(a) data efficiency: held-out bits per byte of the target language against target tokens seen,
    1x vs 1x_cloned vs 2x, one panel per language;
(b) English forgetting: BLiMP accuracy of every adapted model next to its English base, per setup;
(c) merging: the merged models against the jointly trained multilingual model and the monolingual
    models, per setup and language;
and a table of MultiBLiMP agreement accuracy per model and language (its pairs' source noted).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import artifacts, cpt, data, eval_grid, languages  # noqa: E402
from .params import MissingInputError, Params  # noqa: E402

SETUP_ORDER = ["1x", "1x_cloned", "2x"]
PALETTE = dict(zip(SETUP_ORDER, sns.color_palette("colorblind", 3)))


def _dirs(p: Params) -> tuple[Path, Path]:
    figures, tables = p.publish_path / "figures", p.publish_path / "tables"
    figures.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    return figures, tables


def save_table(df: pd.DataFrame, tables: Path, name: str, floatfmt: str = ".4f") -> list[Path]:
    csv, md = tables / f"{name}.csv", tables / f"{name}.md"
    artifacts.atomic_write_text(csv, df.to_csv(index=False))
    text = df.astype(object).where(df.notna(), "").to_markdown(index=False, floatfmt=floatfmt)
    artifacts.atomic_write_text(md, text + "\n")
    return [csv, md]


def save_figure(fig, figures: Path, name: str) -> list[Path]:
    out = []
    for ext in ("png", "pdf"):
        path = figures / f"{name}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp.{ext}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(path)
        out.append(path)
    plt.close(fig)
    return out


def _lang_label(code: str) -> str:
    return languages.name(code).capitalize() if code in languages.LANGUAGES else code


def data_table(p: Params) -> pd.DataFrame:
    stats = pd.read_csv(data.paths(p).stats).convert_dtypes()
    cols = ["lang", "docs_raw", "duplicates_removed", "decontaminated", "heldout_overlap_removed", "train_docs", "heldout_docs",
            "train_chars", "train_tokens", "unimax_chars", "epochs", "target_tokens", "replay_tokens",
            "replay_share_samples", "stream_tokens", "steps"]
    return stats[[c for c in cols if c in stats]]


def target_share(p: Params) -> dict[str, float]:
    """Share of target-language tokens in each language's training stream (the rest is replay)."""
    stats = pd.read_csv(data.paths(p).stats).set_index("lang")
    return {lang: stats.loc[lang, "target_tokens"] / stats.loc[lang, "stream_tokens"] for lang in p.langs}


def curve_figure(curves: pd.DataFrame, langs: list[str], share: dict[str, float], english: bool = False):
    """bpb against target tokens seen; one panel per adapted language (target text, or English text)."""
    mono = curves[curves.trained_on.isin(langs)]
    mono = mono[mono.lang == languages.ENGLISH] if english else mono[mono.lang == mono.trained_on]
    mono = mono.assign(language=mono.trained_on.map(_lang_label),
                       target_tokens=mono.tokens * mono.trained_on.map(share))
    g = sns.relplot(data=mono, x="target_tokens", y="bpb", hue="setup", hue_order=SETUP_ORDER, palette=PALETTE,
                    style="setup", style_order=SETUP_ORDER, markers=True, dashes=True,
                    col="language", col_wrap=min(5, len(langs)), kind="line", alpha=0.85,
                    height=2.6, aspect=1.0, facet_kws={"sharey": False})
    g.set_axis_labels("target-language tokens seen", "English held-out bits/byte" if english
                      else "held-out bits/byte")
    g.set_titles("{col_name}")
    g.figure.suptitle("English forgetting during adaptation" if english
                      else "Data efficiency: held-out bits per byte vs target tokens", y=1.04)
    return g.figure


def flops_figure(curves: pd.DataFrame, langs: list[str]):
    """Target-language bpb against training FLOPs of the adaptation stage, in both conventions
    (6 x all parameters x tokens, and 6 x non-embedding parameters x tokens)."""
    mono = curves[curves.trained_on.isin(langs) & (curves.lang == curves.trained_on)]
    long = pd.concat([mono.assign(flops=mono.flops_total, convention="all parameters"),
                      mono.assign(flops=mono.flops_non_embedding, convention="non-embedding parameters")])
    exponent = int(np.floor(np.log10(max(long.flops.max(), 1))))
    long = long.assign(language=long.trained_on.map(_lang_label), flops=long.flops / 10.0 ** exponent)
    g = sns.relplot(data=long, x="flops", y="bpb", hue="setup", hue_order=SETUP_ORDER, palette=PALETTE,
                    style="setup", style_order=SETUP_ORDER, markers=True, dashes=True, row="convention",
                    col="language", kind="line", height=2.4, aspect=1.0,
                    facet_kws={"sharey": False, "sharex": False})
    g.set_axis_labels(f"FLOPs (x 1e{exponent})", "held-out bits/byte")
    g.set_titles("{col_name}, {row_name}", size=8)
    g.figure.suptitle("Compute efficiency: held-out bits per byte vs training FLOPs (6 x N x tokens; "
                      "N = all parameters, top; non-embedding parameters, bottom)", y=1.02)
    return g.figure


def final_bpb_table(results: pd.DataFrame, langs: list[str]) -> pd.DataFrame:
    """Final held-out bpb of each monolingual model on its own language: languages x setups."""
    own = results[(results.kind == "cpt") & (results.benchmark == "heldout") & (results.metric == "bpb")
                  & (results.lang == results.trained_on)]
    table = own.pivot_table(index="lang", columns="setup", values="value").reindex(langs)
    return table.reindex(columns=[s for s in SETUP_ORDER if s in table]).reset_index()


def blimp_table(results: pd.DataFrame) -> pd.DataFrame:
    """English BLiMP accuracy per setup: the English base, then each adapted model."""
    blimp = results[(results.benchmark == "blimp") & (results.metric == "accuracy")]
    table = blimp[blimp.kind.isin(["base", "cpt", "multilingual"])].pivot_table(
        index="setup", columns="trained_on", values="value")
    first = [c for c in [languages.ENGLISH] if c in table]
    table = table[first + [c for c in table if c not in first]].rename(columns={languages.ENGLISH: "base (before)"})
    adapted = [c for c in table if c != "base (before)"]
    table["mean change"] = table[adapted].mean(axis=1) - table["base (before)"]
    return table.reindex([s for s in SETUP_ORDER if s in table.index]).reset_index()


def blimp_figure(results: pd.DataFrame):
    blimp = results[(results.benchmark == "blimp") & (results.metric == "accuracy")
                    & results.kind.isin(["base", "cpt", "multilingual"])]
    blimp = blimp.assign(model=blimp.trained_on.map(lambda c: "English base" if c == languages.ENGLISH
                                                    else _lang_label(c)))
    order = ["English base"] + sorted(m for m in blimp.model.unique() if m != "English base")
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.barplot(data=blimp, x="model", y="value", hue="setup", hue_order=SETUP_ORDER, palette=PALETTE,
                order=order, ax=ax)
    ax.set(xlabel="", ylabel="English BLiMP accuracy", title="English grammar before and after adaptation")
    lo = max(0.0, blimp.value.min() - 0.05)
    ax.set_ylim(lo, min(1.0, blimp.value.max() + 0.05))
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(title="setup", fontsize=8)
    return fig


def blimp_curve_figure(results: pd.DataFrame, langs: list[str], share: dict[str, float]):
    """English BLiMP accuracy of every CPT checkpoint against target tokens seen (the base at 0)."""
    blimp = results[(results.benchmark == "blimp") & (results.metric == "accuracy")]
    runs = blimp[blimp.kind == "cpt"]
    bases = blimp[blimp.kind == "base"]
    start = pd.concat([bases.assign(trained_on=lang) for lang in langs])
    curve = pd.concat([start, runs]).assign(language=lambda d: d.trained_on.map(_lang_label),
                                            target_tokens=lambda d: d.tokens * d.trained_on.map(share))
    g = sns.relplot(data=curve, x="target_tokens", y="value", hue="setup", hue_order=SETUP_ORDER,
                    palette=PALETTE, style="setup", style_order=SETUP_ORDER, markers=True, dashes=True,
                    col="language", col_wrap=min(5, len(langs)), kind="line", height=2.6, aspect=1.0)
    g.set_axis_labels("target-language tokens seen", "English BLiMP accuracy")
    g.set_titles("{col_name}")
    g.figure.suptitle("English grammar during adaptation (every checkpoint)", y=1.04)
    return g.figure


def merge_table(results: pd.DataFrame, langs: list[str]) -> pd.DataFrame:
    """Held-out bpb per target language: monolingual models, the multilingual model, each merge."""
    held = results[(results.benchmark == "heldout") & (results.metric == "bpb") & results.lang.isin(langs)]
    mono = held[(held.kind == "cpt") & (held.lang == held.trained_on)].assign(model="monolingual")
    joint = held[held.kind == "multilingual"].assign(model="multilingual (joint)")
    merged = held[held.kind == "merged"].assign(model=lambda d: "merge: " + d.trained_on)
    both = pd.concat([mono, joint, merged])
    table = both.pivot_table(index=["setup", "model"], columns="lang", values="value")
    table = table[[c for c in langs if c in table]]
    table["mean"] = table.mean(axis=1)
    return table.reset_index()


def merge_figure(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data=table, x="model", y="mean", hue="setup", hue_order=SETUP_ORDER, palette=PALETTE, ax=ax)
    ax.set(xlabel="", ylabel="mean target held-out bits/byte (lower is better)",
           title="Merged vs jointly trained multilingual vs monolingual")
    ax.tick_params(axis="x", labelrotation=15)
    ax.legend(title="setup", fontsize=8)
    return fig


def multiblimp_table(results: pd.DataFrame) -> pd.DataFrame:
    """MultiBLiMP accuracy of the final models: one row per setup and model, one column per language,
    named with the pairs' source ("est (built)": from UD by 01_data; "(released)": MultiBLiMP 1.0)."""
    mb = results[(results.benchmark == "multiblimp") & (results.metric == "accuracy")]
    if mb.empty:
        return pd.DataFrame()
    source = mb["source"].fillna("?") if "source" in mb else "?"
    mb = mb.assign(language=mb.lang + " (" + source + ")")
    table = mb.pivot_table(index=["setup", "kind", "trained_on"], columns="language", values="value")
    table = table.reindex([s for s in SETUP_ORDER if s in table.index.get_level_values(0)], level=0)
    return table.reset_index()


def run(p: Params, log=print) -> dict[str, pd.DataFrame]:
    everything = eval_grid.load_results(p)
    results = everything[everything["final"].astype(bool)]
    curves = cpt.curves(p)
    if curves.empty:
        raise MissingInputError(f"no training curves in {p.run_path}; run notebooks/03_cpt.ipynb first")
    figures, tables = _dirs(p)
    langs = list(p.langs)
    out = {
        "data_stats": data_table(p),
        "heldout_bpb_final": final_bpb_table(results, langs),
        "english_blimp": blimp_table(results),
        "merging": merge_table(results, langs),
        "multiblimp": multiblimp_table(results),
    }
    written = []
    for name, df in out.items():
        written += save_table(df, tables, name, floatfmt=".3f" if name == "data_stats" else ".4f")
    written += save_table(everything, tables, "results_tidy")
    share = target_share(p)
    written += save_figure(curve_figure(curves, langs, share), figures, "bpb_vs_target_tokens")
    written += save_figure(curve_figure(curves, langs, share, english=True), figures, "english_bpb_during_cpt")
    written += save_figure(flops_figure(curves, langs), figures, "bpb_vs_training_flops")
    written += save_figure(blimp_figure(results), figures, "english_blimp_before_after")
    if (~everything["final"].astype(bool)).any():
        written += save_figure(blimp_curve_figure(everything, langs, share), figures, "english_blimp_during_cpt")
    written += save_figure(merge_figure(out["merging"]), figures, "merged_vs_multilingual")
    for path in written:
        log(f"  wrote {path}")
    return out
