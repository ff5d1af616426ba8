"""The paper's four claims checked against a run's derived tables, and REPORT.md.

Every verdict follows from the tables by the stated rules below; nothing is decided by hand.
- Bits per byte: differences within BPB_TOL count as equal.
- Accuracies (BLiMP, MultiBLiMP): a difference counts when it exceeds Z binomial standard errors, with
  the number of pairs 05_eval scored (its n_pairs rows).
A run without training curves (models fetched from the Hub) judges claim 1 on the final models at equal data
and adds the -matching-1x checkpoints as FLOP-matched evidence; REPORT.md gives one sentence for each part
that needs curves or checkpoints and is left out (`LEFT_OUT`).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import artifacts
from ..params import lora_twins

BPB_TOL = 0.01
Z = 2.0
UPSCALED = ("2x", "1x_cloned")
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
CLAIMS = {
    1: "(1) Once they have seen enough target data, upscaled models match or beat the small model",
    2: "(2) Scaling reduces forgetting of English",
    3: "(3) Merging is worse than joint multilingual training, but upscaled merges beat small merges",
    4: "(4) Merge methods differ a lot",
}


def _row(claim: str, evidence: str, verdict: str, why: str) -> dict:
    return {"claim": claim, "evidence": evidence, "verdict": verdict, "why": why}


def _pairs(tables: dict, benchmark: str) -> dict[str, int]:
    pc = tables.get("pair_counts", pd.DataFrame(columns=["benchmark", "lang", "pairs"]))
    pc = pc[pc.benchmark == benchmark]
    return dict(zip(pc.lang, pc.pairs))


def _call(diff: float, threshold: float, up: str, down: str, same: str) -> str:
    if math.isnan(diff) or math.isnan(threshold):
        return "n/a"
    return up if diff > threshold else down if diff < -threshold else same


# -- claim 1: data efficiency -------------------------------------------------------------------------------

def _multiblimp_difference(rows: pd.DataFrame, pairs: dict[str, int]) -> tuple[float, float]:
    """Mean over languages of setup - 1x MultiBLiMP accuracy, and its standard error (the two accuracies
    of a language taken as independent binomials on that language's pairs)."""
    rows = rows.dropna(subset=["multiblimp_minus_1x"])
    rows = rows[rows.lang.isin(list(pairs))]
    if rows.empty:
        return float("nan"), float("nan")
    p = rows.multiblimp - rows.multiblimp_minus_1x / 2
    var = 2 * p * (1 - p) / rows.lang.map(pairs)
    return float(rows.multiblimp_minus_1x.mean()), math.sqrt(float(var.sum())) / len(rows)


def _released_flop_matched_evidence(tables: dict, setup: str) -> str:
    fm = tables.get("flop_matched_released")
    if fm is None:
        return ""
    rows = fm[fm.setup == setup]
    inside = rows[rows.checkpoint == "-matching-1x"].dropna(subset=["bpb_minus_1x"])
    if inside.empty:
        return f"; no -matching-1x checkpoint of {setup} was evaluated"
    ref = fm[fm.setup == "1x"].set_index("lang").tokens.astype(float)
    share = (inside.tokens.astype(float) / inside.lang.map(ref)).mean()
    return (f"; at the 1x final FLOPs (the released -matching-1x checkpoints, an inference from their name) "
            f"{setup} - 1x bpb is {inside.bpb_minus_1x.mean():+.3f} with {share:.0%} of the tokens "
            f"({len(inside)}/{len(rows)} languages released)")


def _flop_matched_evidence(tables: dict, setup: str) -> str:
    fm = tables.get("flop_matched")
    if fm is None:
        return _released_flop_matched_evidence(tables, setup)
    fm = fm[fm.convention == "non-embedding parameters"]
    ref = fm[fm.setup == "1x"].set_index("lang").tokens.astype(float)
    rows = fm[fm.setup == setup]
    inside = rows.dropna(subset=["bpb"])
    if inside.empty:
        return f"; at the 1x final FLOPs {setup} is beyond its run in every language"
    share = (inside.tokens.astype(float) / inside.lang.map(ref)).mean()
    return (f"; at the 1x final FLOPs (non-embedding) {setup} - 1x bpb is {inside.bpb_minus_1x.mean():+.3f} "
            f"with {share:.0%} of the tokens ({len(inside)}/{len(rows)} languages inside the run)")


def _reach(rows: pd.DataFrame, n: int) -> str:
    if "share_of_data_to_reach_1x" not in rows:
        return "how much data it needs to reach the 1x final bpb is unknown (no training curves)"
    reach = rows.share_of_data_to_reach_1x.dropna()
    return (f"reaches the 1x final bpb in {len(reach)}/{n} languages"
            + (f" (after {reach.mean():.0%} of the target tokens on average)" if len(reach) else ""))


def claim_data_efficiency(tables: dict, setup: str, equal_data: pd.DataFrame | None = None) -> dict:
    """From the data_efficiency table, or (a run without training curves) `equal_data`: its columns less the
    data needed to reach the 1x final bpb."""
    claim = f"{CLAIMS[1]}: {setup} vs 1x"
    eff = tables.get("data_efficiency", equal_data)
    rows = pd.DataFrame() if eff is None else eff[eff.setup == setup].dropna(subset=["bpb_minus_1x"])
    if rows.empty:
        return _row(claim, "no final models of both setups", INCONCLUSIVE, f"nothing to compare {setup} with")
    d = rows.bpb_minus_1x
    n, ok = len(d), int((d <= BPB_TOL).sum())
    bpb = "match" if 2 * ok > n else "worse" if 2 * ok < n else "split"
    mb_mean, mb_se = _multiblimp_difference(rows, _pairs(tables, "multiblimp"))
    mb = _call(mb_mean, Z * mb_se, "better", "worse", "tie")
    evidence = (f"final target bpb {setup} - 1x at equal data: mean {d.mean():+.3f}, within +{BPB_TOL} or lower "
                f"in {ok}/{n} languages; " + _reach(rows, n)
                + ("" if math.isnan(mb_mean) else
                   f"; MultiBLiMP {setup} - 1x: {mb_mean:+.3f} ({Z:g} SE = {Z * mb_se:.3f})")
                + _flop_matched_evidence(tables, setup))
    mb_text = "no MultiBLiMP" if mb == "n/a" else f"MultiBLiMP: {mb}"
    if bpb == "match" and mb != "worse":
        return _row(claim, evidence, SUPPORTED, f"bpb matches or beats 1x in a majority of languages; {mb_text}")
    if bpb == "worse" and mb != "better":
        return _row(claim, evidence, NOT_SUPPORTED, f"bpb worse than 1x + {BPB_TOL} in a majority of languages; "
                    f"{mb_text}")
    why = "languages split evenly on bpb" if bpb == "split" else f"bpb says {bpb} but MultiBLiMP says {mb}"
    return _row(claim, evidence, INCONCLUSIVE, why)


# -- claim 2: forgetting ----------------------------------------------------------------------------------------

def claim_forgetting(tables: dict, setup: str, reference: str = "1x", claim: str | None = None) -> dict:
    """Does `setup` forget less English than `reference` (claim 2: an upscaled setup against 1x)?"""
    claim = claim or f"{CLAIMS[2]}: {setup} vs {reference}"
    f = tables.get("forgetting")
    if f is None:
        return _row(claim, "no adapted models", INCONCLUSIVE, "nothing to compare")
    a, b = f[f.setup == setup].set_index("trained_on"), f[f.setup == reference].set_index("trained_on")
    common = [m for m in a.index if m in b.index]
    if not common:
        return _row(claim, "no models adapted to the same data in both setups", INCONCLUSIVE, "nothing to compare")
    a, b = a.loc[common], b.loc[common]
    diffs = (a.blimp_change - b.blimp_change).dropna()
    m = len(diffs)
    blimp = float(diffs.mean()) if m else float("nan")  # > 0: this setup forgets less
    n = _pairs(tables, "blimp").get("eng", 0)
    p = float(pd.concat([a.blimp, b.blimp]).mean())
    # mean over m adapted models of each setup minus one base each: var = v (2/m + 2)
    se = math.sqrt(p * (1 - p) / n * (2 / m + 2)) if n and m else float("nan")
    bpb = float((a.eng_bpb_change - b.eng_bpb_change).mean())  # < 0: this setup forgets less
    calls = {"BLiMP": _call(blimp, Z * se, "less", "more", "same"),
             "English bpb": _call(-bpb, BPB_TOL, "less", "more", "same")}
    evidence = (f"BLiMP change (adapted - base) {setup} {a.blimp_change.mean():+.4f} vs {reference} "
                f"{b.blimp_change.mean():+.4f} (difference {blimp:+.4f}, {Z:g} SE = {Z * se:.4f} from {n} pairs, {m} "
                f"models); English bpb change {setup} {a.eng_bpb_change.mean():+.3f} vs {reference} "
                f"{b.eng_bpb_change.mean():+.3f} (difference {bpb:+.3f})")
    said = "; ".join(f"{k}: {v} forgetting" for k, v in calls.items())
    found = set(calls.values()) - {"n/a"}
    if "less" in found and "more" not in found:
        return _row(claim, evidence, SUPPORTED, said)
    if "more" in found and "less" not in found:
        return _row(claim, evidence, NOT_SUPPORTED, said)
    why = "the two measures disagree" if found == {"less", "more"} else (
        f"no difference beyond {Z:g} SE (BLiMP) or {BPB_TOL} bpb (English)")
    return _row(claim, evidence, INCONCLUSIVE, f"{said}: {why}")


# -- claims 3 and 4: merging -----------------------------------------------------------------------------------

def claim_merging(tables: dict) -> dict:
    s = tables.get("merge_summary")
    if s is None:
        return _row(CLAIMS[3], "no merges", INCONCLUSIVE, "nothing to compare")
    s = s.set_index("setup")
    gap = s.best_minus_multilingual.dropna()
    n, worse = len(gap), int((gap > BPB_TOL).sum())
    joint = "worse" if 2 * worse > n else "not worse" if 2 * worse < n else "split"
    up = [x for x in UPSCALED if x in s.index]
    diff = float((s.best_merge[up] - s.best_merge["1x"]).mean()) if up and "1x" in s.index else float("nan")
    scale = _call(-diff, BPB_TOL, "better", "worse", "same")
    evidence = ("best merge - joint model mean target bpb: " + ", ".join(f"{k} {v:+.3f}" for k, v in gap.items())
                + ("" if math.isnan(diff) else f"; best upscaled merge - best 1x merge: {diff:+.3f} ("
                   + ", ".join(f"{x} {s.best_merge[x]:.3f}" for x in ["1x", *up]) + ")"))
    why = f"merging {joint} than joint training (> +{BPB_TOL} bpb in {worse}/{n} setups); upscaled merges: {scale}"
    if joint == "worse" and scale == "better":
        return _row(CLAIMS[3], evidence, SUPPORTED, why)
    if joint == "not worse" or scale == "worse":
        return _row(CLAIMS[3], evidence, NOT_SUPPORTED, why)
    return _row(CLAIMS[3], evidence, INCONCLUSIVE, why)


def claim_methods(tables: dict) -> dict:
    mm = tables.get("merge_methods")
    if mm is None or len(mm) < 2:
        return _row(CLAIMS[4], "fewer than two merge methods", INCONCLUSIVE, "nothing to compare")
    vals = mm.set_index("method")
    spread = float((vals.max() - vals.min()).mean())  # range across methods, averaged over setups
    gap = float((vals.max(axis=1) - vals.min(axis=1)).mean()) if vals.shape[1] > 1 else float("nan")
    evidence = (f"range of mean target bpb across {len(vals)} methods: {spread:.3f} (mean over setups); "
                f"range across setups for one method: {gap:.3f} (mean over methods); best "
                + ", ".join(f"{s} {vals[s].idxmin()}" for s in vals))
    if math.isnan(gap):
        return _row(CLAIMS[4], evidence, INCONCLUSIVE, "one setup only: no between-setup gap to compare with")
    if spread > max(2 * gap, BPB_TOL):
        return _row(CLAIMS[4], evidence, SUPPORTED, "methods differ by more than twice the gap between setups")
    if spread <= max(gap, BPB_TOL):
        return _row(CLAIMS[4], evidence, NOT_SUPPORTED, "methods differ no more than the setups do "
                    f"(or by at most {BPB_TOL} bpb)")
    return _row(CLAIMS[4], evidence, INCONCLUSIVE, "methods differ by one to two times the gap between setups")


def findings(tables: dict, setups: list[str], equal_data: pd.DataFrame | None = None) -> pd.DataFrame:
    up = [s for s in UPSCALED if s in setups] or ["2x"]
    rows = ([claim_data_efficiency(tables, s, equal_data) for s in up] + [claim_forgetting(tables, s) for s in up]
            + [claim_merging(tables), claim_methods(tables)])
    return pd.DataFrame(rows, columns=["claim", "evidence", "verdict", "why"])


# -- beyond the paper: LoRA adapters -----------------------------------------------------------------------

LORA_CLAIMS = {
    "forgetting": "(L1) LoRA forgets less English than full CPT",
    "upscaling": "(L2) Upscaling helps LoRA as it helps full CPT",
}


def claim_lora_upscaling(tables: dict) -> dict:
    """2x_lora against 1x_lora at equal data, by claim 1's rules (bpb: a majority of languages; MultiBLiMP:
    Z binomial standard errors), with full CPT's 2x - 1x beside it."""
    claim = f"{LORA_CLAIMS['upscaling']}: 2x_lora vs 1x_lora"
    t = tables.get("lora_upscaling")
    rows = pd.DataFrame() if t is None else t.dropna(subset=["bpb_lora_2x_minus_1x"])
    if rows.empty:
        return _row(claim, "no final models of both LoRA setups", INCONCLUSIVE, "nothing to compare")
    d, full = rows.bpb_lora_2x_minus_1x, rows.bpb_full_2x_minus_1x
    n, helped = len(d), int((d < -BPB_TOL).sum())
    bpb = "helps" if 2 * helped > n else "does not help" if 2 * helped < n else "split"
    mb_rows = rows.rename(columns={"multiblimp_2x_lora": "multiblimp",
                                   "multiblimp_lora_2x_minus_1x": "multiblimp_minus_1x"})
    mb_mean, mb_se = _multiblimp_difference(mb_rows, _pairs(tables, "multiblimp"))
    mb = _call(mb_mean, Z * mb_se, "better", "worse", "tie")
    evidence = (f"final target bpb 2x_lora - 1x_lora at equal data: mean {d.mean():+.3f}, lower by more than "
                f"{BPB_TOL} in {helped}/{n} languages; full CPT 2x - 1x: mean {full.mean():+.3f}"
                + ("" if math.isnan(mb_mean) else
                   f"; MultiBLiMP 2x_lora - 1x_lora: {mb_mean:+.3f} ({Z:g} SE = {Z * mb_se:.3f})"))
    mb_text = "no MultiBLiMP" if mb == "n/a" else f"MultiBLiMP: {mb}"
    why = f"upscaling {bpb} LoRA's target bpb (majority of languages); {mb_text}"
    if bpb == "helps" and mb != "worse":
        return _row(claim, evidence, SUPPORTED, why)
    if bpb == "does not help" and mb != "better":
        return _row(claim, evidence, NOT_SUPPORTED, why)
    return _row(claim, evidence, INCONCLUSIVE, why)


def lora_findings(tables: dict, setups: list[str]) -> pd.DataFrame:
    """Two claims of our own on the LoRA setups (beyond the paper), by the same rules as the paper's."""
    rows = [claim_forgetting(tables, lora, full, f"{LORA_CLAIMS['forgetting']}: {lora} vs {full}")
            for full, lora in lora_twins(setups)]
    if {"1x_lora", "2x_lora"} <= set(setups):
        rows.append(claim_lora_upscaling(tables))
    return pd.DataFrame(rows, columns=["claim", "evidence", "verdict", "why"])


# -- REPORT.md ---------------------------------------------------------------------------------------------

def model_counts(results: pd.DataFrame) -> dict:
    finals = results[results["final"]].drop_duplicates("model")
    kinds = finals.kind.value_counts()
    source = sorted(set(results[results.benchmark == "multiblimp"].source.dropna().astype(str)))
    return {"counts": {k: int(kinds.get(k, 0)) for k in ["base", "cpt", "multilingual", "merged", "merged_subset",
                                                         "matching"]},
            "checkpoints": len(results[~results["final"]].drop_duplicates(["model", "step"])),
            "multiblimp_source": ", ".join(source) or "none"}


def _per_setup(values: dict | pd.Series, fmt: str = ".3f") -> str:
    return ", ".join(f"{k} {v:{fmt}}" for k, v in dict(values).items() if not pd.isna(v))


def _means(df: pd.DataFrame, value: str, by: str = "setup") -> dict:
    return df.groupby(by, sort=False)[value].mean().to_dict()


def _range(values: pd.Series, fmt: str) -> str:
    lo, hi = f"{values.min():{fmt}}", f"{values.max():{fmt}}"
    return lo if lo == hi else f"{lo}-{hi}"


def _s_data(t):
    b = t[t.lang != "multilingual"]
    return (f"Each language is allocated {_range(b.unimax_chars, ',')} characters by UniMax, "
            f"{_range(b.epochs, '.2f')} epochs of its training split; replay is "
            f"{_range(b.replay_share_samples, '.1%')} of the samples, and one pass takes {_range(b.steps, 'd')} steps.")


def _s_data_figure(t):
    b = t[t.lang != "multilingual"].set_index("lang")
    return (f"The language with the least data ({b.train_chars.idxmin()}) is repeated most "
            f"({b.epochs[b.train_chars.idxmin()]:.2f} epochs); bars use a log scale.")


def _s_final_bpb(t):
    means = t.drop(columns="lang").mean().to_dict()
    below = [f"{s} is below 1x in {int((t[s] < t['1x']).sum())}/{len(t)} languages"
             for s in UPSCALED if s in t and "1x" in t]
    return f"Final target bits per byte, mean over languages: {_per_setup(means)}; " + "; ".join(below) + "."


def _s_bpb_curve(t):
    parts = []
    for setup, g in t[t.setup != "1x"].groupby("setup", sort=False):
        reach = g.share_of_data_to_reach_1x.dropna()
        parts.append(f"{setup} reaches the 1x final bpb in {len(reach)}/{len(g)} languages"
                     + (f", after {reach.mean():.0%} of the target tokens on average" if len(reach) else ""))
    return "; ".join(parts) + "." if parts else "Only the 1x setup was run."


def _s_efficiency(t):
    up = t[t.setup != "1x"]
    mb = _means(up.dropna(subset=["multiblimp_minus_1x"]), "multiblimp_minus_1x")
    return (f"At equal data the final bpb minus 1x averages {_per_setup(_means(up, 'bpb_minus_1x'), '+.3f')}"
            + (f" and MultiBLiMP minus 1x {_per_setup(mb, '+.3f')}" if mb else "")
            + " (lower bpb, higher accuracy are better).")


def _s_mb_curve(t):
    return ("Final MultiBLiMP accuracy on the trained language, mean over languages: "
            f"{_per_setup(_means(t.dropna(subset=['multiblimp']), 'multiblimp'))}; chance is 0.5.")


def _s_multiblimp(t):
    cols = [c for c in t if "(" in c]
    return (f"Accuracy of every final model on every language's pairs (source in brackets); overall mean "
            f"{t[cols].stack().mean():.3f}, chance 0.5.")


def _token_ratios(fm) -> dict:
    # tokens the 1x model sees per token of a larger setup at the same FLOPs, per convention
    out = {}
    for conv, g in fm.groupby("convention", sort=False):
        ref = g[g.setup == "1x"].set_index("lang").tokens.astype(float)
        other = g[(g.setup != "1x")].dropna(subset=["tokens"])
        if len(other):
            out[conv] = float((other.lang.map(ref) / other.tokens.astype(float)).mean())
    return out


def _s_pairs(t):
    cols = [c for c in t if c not in ("benchmark", "setup", "kind", "trained_on")]
    means = t.set_index("kind")[cols].stack().groupby(level=0, sort=False).mean()
    return (f"Accuracy of every final model (subset merges aside) on the `{t.benchmark.iloc[0]}` pairs, one column "
            f"per language; mean over setups and languages per kind of model: {_per_setup(means)}; chance is 0.5.")


def _s_flop_matched_released(t):
    got = t[t.checkpoint == "-matching-1x"]
    missing = t[t.checkpoint == "not released"]
    ratio = got.flops_total_vs_1x.dropna()
    diffs = [f"{what} {_per_setup(_means(got.dropna(subset=[col]), col), '+.3f') or 'n/a'}"
             for col, what in [("bpb_minus_1x", "target bpb"), ("eng_bpb_minus_1x", "English bpb"),
                               ("multiblimp_minus_1x", "MultiBLiMP"), ("blimp_minus_1x", "BLiMP")]]
    return ("This comparison rests on our reading of the authors' \"-matching-1x\" checkpoints as the 572M "
            "checkpoints at the training FLOPs of the final 1x model (an inference from the name, FACTS.md "
            "\"Released models\"; their FLOPs are " + (f"{_range(ratio, '.3f')}x" if len(ratio) else "n/a")
            + " the 1x model's); minus the 1x final model: " + "; ".join(diffs)
            + f" (lower bpb, higher accuracy are better); {len(got)} of {len(got) + len(missing)} upscaled "
            "language-setup pairs have such a checkpoint"
            + (" (none for " + ", ".join(f"{r.setup}/{r.lang}" for r in missing.itertuples()) + ")"
               if len(missing) else "") + ".")


def _s_flops_figure(fm):
    ratios = _token_ratios(fm)
    return ("At equal FLOPs the larger models have seen fewer tokens: one of their tokens costs "
            + " and ".join(f"{r:.1f}x a 1x token ({c})" for c, r in ratios.items()) + ".")


def _s_flop_matched(fm, value="bpb_minus_1x", what="target bpb"):
    g = fm[(fm.convention == "non-embedding parameters") & (fm.setup != "1x")]
    inside = g.dropna(subset=[value])
    beyond = int((g.note == "beyond the run").sum())
    return (f"At the 1x final FLOPs (non-embedding convention) {what} minus 1x averages "
            f"{_per_setup(_means(inside, value), '+.3f') or 'n/a'}"
            f" ({beyond} setup-language pairs beyond the run).")


def _s_forgetting_figure(f):
    return (f"Mean BLiMP change (adapted - base): {_per_setup(_means(f, 'blimp_change'), '+.4f')}; mean English "
            f"bpb change: {_per_setup(_means(f, 'eng_bpb_change'), '+.3f')}.")


def _s_forgetting(f):
    bpb, blimp = f.loc[f.eng_bpb_change.idxmax()], f.loc[f.blimp_change.idxmin()]
    return (f"The largest English bpb change is {bpb.setup}/{bpb.trained_on} ({bpb.eng_bpb_change:+.3f}), the "
            f"lowest BLiMP change {blimp.setup}/{blimp.trained_on} ({blimp.blimp_change:+.4f}); BLiMP < 0 and "
            "bpb > 0 mean forgetting.")


def _s_blimp_bars(f):
    base = f.drop_duplicates("setup").set_index("setup").blimp_base
    return (f"The English bases score {_per_setup(base)} on BLiMP; the adapted models "
            f"{f.blimp.min():.3f}-{f.blimp.max():.3f}.")


def _s_english_blimp(t):
    return f"Mean change of the adapted models per setup: {_per_setup(t.set_index('setup')['mean change'], '+.4f')}."


def _s_english_bpb_curve(f):
    mono = f[f.trained_on != "multilingual"]
    bases = mono.drop_duplicates("setup").set_index("setup").eng_bpb_base
    return ("English bits per byte at the end of adaptation, mean over languages: "
            f"{_per_setup(_means(mono, 'eng_bpb'))} (bases: {_per_setup(bases)}).")


def _s_blimp_curve(pc):
    n = dict(zip(pc[pc.benchmark == "blimp"].lang, pc[pc.benchmark == "blimp"].pairs)).get("eng", 0)
    if not n:
        return "Every point is a checkpoint scored on English BLiMP."
    return (f"Every point is a checkpoint; with {n} pairs, differences below {Z * math.sqrt(0.5 / n):.3f} "
            f"({Z:g} binomial SE of a difference at accuracy 0.5) are within noise.")


def _s_merge_methods_figure(s):
    return "Best merge per setup: " + ", ".join(f"{r.setup} {r.best_method} ({r.best_merge:.3f})"
                                                for r in s.itertuples()) + "; lower is better."


def _s_merge_methods(mm):
    vals = mm.set_index("method")
    return f"Range of mean bpb across methods: {_per_setup(vals.max() - vals.min())}."


def _s_merge_summary(s):
    s = s.set_index("setup")
    return (f"Best merge minus jointly trained model: {_per_setup(s.best_minus_multilingual, '+.3f')}; best merge "
            f"minus monolingual models: {_per_setup(s.best_minus_monolingual, '+.3f')}.")


def _s_merged_bars(s):
    s = s.set_index("setup")
    return (f"Mean target bpb, jointly trained: {_per_setup(s.multilingual)}; monolingual: "
            f"{_per_setup(s.monolingual)}; best merge: {_per_setup(s.best_merge)}.")


def _s_merging(t):
    return f"Held-out bits per byte of every model on every target language ({len(t)} rows), mean in the last column."


def _s_merge_multiblimp(t):
    t = t.set_index("model")
    merges = t[t.index.str.startswith("merge: ")]
    joint = t.loc["multilingual (joint)"] if "multilingual (joint)" in t.index else None
    return ("Mean MultiBLiMP over target languages, best merge: " + _per_setup(merges.max())
            + ("" if joint is None else f"; jointly trained: {_per_setup(joint)}") + ".")


def _s_subsets(t):
    merges = t[~t.method.str.contains("same languages")]
    by_n = merges.groupby("n_langs").mean_bpb.mean()
    return ("Mean bpb of a merge on its own languages, averaged over methods and setups: "
            + ", ".join(f"{n} languages {v:.3f}" for n, v in by_n.items())
            + "; the monolingual and jointly trained lines are the same languages' reference.")


def _s_lora_points(t):
    means = t.groupby("setup", sort=False)[["target_gain", "eng_bpb_change"]].mean()
    return ("Mean over each setup's adapted models, target bpb gained over the base / English bpb change: "
            + ", ".join(f"{s} {r.target_gain:+.3f} / {r.eng_bpb_change:+.3f}" for s, r in means.iterrows()) + ".")


def _s_lora_vs_full(t):
    m = t.groupby("base", sort=False)[["target_bpb_lora_minus_full", "eng_bpb_change_lora_minus_full",
                                       "flops_lora_over_full"]].mean()
    return ("LoRA - full at equal data, mean over the adapted models: "
            + "; ".join(f"{b}: target bpb {r.target_bpb_lora_minus_full:+.3f}, English bpb change "
                        f"{r.eng_bpb_change_lora_minus_full:+.3f}, with {r.flops_lora_over_full:.2f}x the FLOPs"
                        for b, r in m.iterrows())
            + ". A LoRA step costs 4N + 6N_lora FLOPs per token against full CPT's 6N (frozen weights need no "
            "weight gradients).")


def _s_lora_equal_flops(t):
    t = t[t.convention == "all parameters"]
    m = t.groupby("base", sort=False)[["target_bpb_lora_minus_full", "eng_bpb_lora_minus_full",
                                       "full_share_of_its_steps"]].mean()
    return ("At the LoRA run's final FLOPs (all parameters), read off the full run's training curve (held-out text "
            "of the training evaluations), LoRA - full: "
            + "; ".join(f"{b}: target bpb {r.target_bpb_lora_minus_full:+.3f}, English bpb "
                        f"{r.eng_bpb_lora_minus_full:+.3f} (full CPT {r.full_share_of_its_steps:.0%} through its run)"
                        for b, r in m.iterrows()) + ".")


def _s_lora_merging(t):
    return ("Best merge of the adapters - best merge of the full models (mean target bpb): "
            + ", ".join(f"{r.base} {r.merge_lora_minus_full:+.3f}" for r in t.itertuples())
            + "; best merge - joint model, full / LoRA: "
            + ", ".join(f"{r.base} {r.merge_minus_joint_full:+.3f} / {r.merge_minus_joint_lora:+.3f}"
                        for r in t.itertuples()) + ".")


def _s_lora_upscaling(t):
    return (f"2x - 1x target bpb, mean over languages: LoRA {t.bpb_lora_2x_minus_1x.mean():+.3f}, full CPT "
            f"{t.bpb_full_2x_minus_1x.mean():+.3f} (< 0: the upscaled base adapts better).")


def _s_lora_findings(f):
    counts = f.verdict.value_counts()
    return ("Our two LoRA claims by the same rules as the paper's: " + ", ".join(
        f"{counts.get(v, 0)} {v}" for v in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)) + ".")


def _s_findings(f):
    counts = f.verdict.value_counts()
    return ", ".join(f"{int(counts.get(v, 0))} {v}" for v in [SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE]) + (
        f" (rules: bpb differences within {BPB_TOL} count as equal, accuracy differences within {Z:g} "
        "binomial standard errors as equal; see hyperllama_lib/pipeline/report.py).")


PAIR_TABLES = "pairs_"  # prefix of the tables of pair benchmarks without a table of their own

# Parts that need training curves or intermediate checkpoints: when a run lacks them (its models were fetched
# from the Hub), one sentence each says what is left out and why, where the part would have been.
NOT_TRAINED = "the models were fetched from the Hub, not trained here"
NO_CURVES = "the rows hold no training curves"
WHY = {("curves", True): NOT_TRAINED, ("curves", False): NO_CURVES,
       ("curves or checkpoints", True): NOT_TRAINED, ("curves or checkpoints", False): NO_CURVES,
       ("checkpoints", True): "the models were fetched from the Hub and only the released ones evaluated",
       ("checkpoints", False): "no intermediate checkpoints were evaluated"}
CURVES_OR_CHECKPOINTS = "needs training curves or the scores of intermediate checkpoints, and this run has neither"
LEFT_OUT = {
    "bpb_vs_target_tokens": ("curves", "Left out: target-language bits per byte against the target tokens seen "
                             "(`bpb_vs_target_tokens`), which draws the training curves, and this run has none "
                             "({why})."),
    "data_efficiency": ("curves", "Left out: table `data_efficiency`, whose data needed to reach the 1x final bits "
                        "per byte is read off the training curves, which this run lacks ({why}); the tables "
                        "`heldout_bpb_final` and `multiblimp`, and claim 1, compare the final models at equal data "
                        "instead."),
    "multiblimp_vs_target_tokens": ("curves or checkpoints", "Left out: MultiBLiMP accuracy against the target "
                                    "tokens seen (`multiblimp_vs_target_tokens`), which " + CURVES_OR_CHECKPOINTS
                                    + " ({why})."),
    "bpb_vs_training_flops": ("curves", "Left out: target-language bits per byte against training FLOPs "
                              "(`bpb_vs_training_flops`), which draws the training curves, and this run has none "
                              "({why})."),
    "flop_matched": ("curves", "Left out: table `flop_matched`, which reads the larger setups' bits per byte at the "
                     "1x final FLOPs off their training curves, and this run has none ({why}); {flop_matched}."),
    "multiblimp_vs_training_flops": ("curves or checkpoints", "Left out: MultiBLiMP accuracy against training FLOPs "
                                     "(`multiblimp_vs_training_flops`), which " + CURVES_OR_CHECKPOINTS
                                     + " ({why})."),
    "english_bpb_during_cpt": ("curves", "Left out: English bits per byte during adaptation "
                               "(`english_bpb_during_cpt`), which draws the training curves, and this run has none "
                               "({why}); the forgetting table compares the final models with their bases."),
    "english_blimp_during_cpt": ("checkpoints", "Left out: English BLiMP accuracy during adaptation "
                                 "(`english_blimp_during_cpt`), which needs the scores of intermediate checkpoints, "
                                 "and this run has none ({why})."),
}
FLOP_MATCHED_STAND_IN = {True: "the authors' released -matching-1x checkpoints stand in for it "
                               "(`flop_matched_released`, below)",
                         False: "no -matching-1x checkpoint was evaluated to stand in for it "
                                "(none released, or `released_matching: false`)"}
RELEASED_INTROS = {
    "2. Data efficiency": "Target-language bits per byte and MultiBLiMP accuracy of the final models, and every "
    "other pair benchmark the run scored; all setups of a language were trained on the same data.",
    "3. Compute": "The 1x final model against the larger setups at about the same training FLOPs of the adaptation "
    "stage (6 x parameters x tokens): without training curves, the authors' released -matching-1x checkpoints "
    "stand in for the points of the larger setups' curves.",
}


def _lacks(need: str, info: dict) -> bool:
    curves, checkpoints = info.get("has_curves", True), info.get("has_checkpoints", True)
    return {"curves": not curves, "checkpoints": not checkpoints,
            "curves or checkpoints": not curves and not checkpoints}[need]


def left_out(name: str, info: dict, tables: dict) -> str | None:
    """The sentence saying that `name` is left out and why, if it needs what the run lacks; else None."""
    if name not in LEFT_OUT or not _lacks(LEFT_OUT[name][0], info):
        return None
    need, sentence = LEFT_OUT[name]
    why = WHY[need, info.get("models_from") == "hub"]
    return sentence.format(why=why, flop_matched=FLOP_MATCHED_STAND_IN["flop_matched_released" in tables])


NO_SUBSETS = ("Merges of every language subset (26 for five languages) were not run at this scale, so the "
              "quality-against-subset-size analysis is missing; run it with `--set merge_subsets=all` "
              "(e.g. `hyperllama reproduce --scale tiny --set merge_subsets=all`).")

SECTIONS = [
    ("1. Data and budgets", "Per-language data, the UniMax allocation (capped at the maximum epochs) and the "
     "English/code replay share, as in the paper's budget table.",
     [("table", "data_budget", "data_budget", _s_data), ("figure", "data_budget", "data_budget", _s_data_figure)]),
    ("2. Data efficiency", "Target-language bits per byte and MultiBLiMP accuracy against the target tokens seen; "
     "all setups of a language see the same data.",
     [("figure", "bpb_vs_target_tokens", "data_efficiency", _s_bpb_curve),
      ("table", "heldout_bpb_final", "heldout_bpb_final", _s_final_bpb),
      ("table", "data_efficiency", "data_efficiency", _s_efficiency),
      ("figure", "multiblimp_vs_target_tokens", "data_efficiency", _s_mb_curve),
      ("table", "multiblimp", "multiblimp", _s_multiblimp),
      ("tables", PAIR_TABLES, None, _s_pairs)]),
    ("3. Compute", "The same against training FLOPs of the adaptation stage (6 x parameters x tokens, with all or "
     "with non-embedding parameters), and the 1x final model against the larger setups at the same FLOPs "
     "(linear interpolation between the curve points around it).",
     [("figure", "bpb_vs_training_flops", "flop_matched", _s_flops_figure),
      ("table", "flop_matched", "flop_matched", _s_flop_matched),
      ("table", "flop_matched_released", "flop_matched_released", _s_flop_matched_released),
      ("figure", "multiblimp_vs_training_flops", "flop_matched",
       lambda t: _s_flop_matched(t, "multiblimp_minus_1x", "MultiBLiMP accuracy"))]),
    ("4. English forgetting", "English BLiMP accuracy and English held-out bits per byte of every adapted model "
     "minus its setup's English base.",
     [("figure", "english_forgetting", "forgetting", _s_forgetting_figure),
      ("table", "forgetting", "forgetting", _s_forgetting),
      ("figure", "english_blimp_before_after", "forgetting", _s_blimp_bars),
      ("table", "english_blimp", "english_blimp", _s_english_blimp),
      ("figure", "english_bpb_during_cpt", "forgetting", _s_english_bpb_curve),
      ("figure", "english_blimp_during_cpt", "pair_counts", _s_blimp_curve)]),
    ("5. Merging", "Merges of the five monolingual models of each setup (task vectors against the setup's English "
     "base) against the jointly trained multilingual model and the monolingual models.",
     [("figure", "merge_methods", "merge_summary", _s_merge_methods_figure),
      ("table", "merge_methods", "merge_methods", _s_merge_methods),
      ("table", "merge_summary", "merge_summary", _s_merge_summary),
      ("figure", "merged_vs_multilingual", "merge_summary", _s_merged_bars),
      ("table", "merging", "merging", _s_merging),
      ("table", "merge_multiblimp", "merge_multiblimp", _s_merge_multiblimp),
      ("figure", "merge_subset_size", "merge_subsets", _s_subsets),
      ("table", "merge_subsets", "merge_subsets", _s_subsets)]),
    ("6. Parameter-efficient adaptation (LoRA, beyond the paper)", "peft LoRA adapters (the `*_lora` setups) "
     "trained on the same English bases with the same data, steps and schedule as full CPT, against full CPT: at "
     "equal data, at equal training FLOPs, learning against forgetting, and merges of the adapters (on their dense "
     "weight deltas) against merges of the full models and the jointly trained models.",
     [("figure", "lora_learning_vs_forgetting", "learning_forgetting", _s_lora_points),
      ("table", "lora_vs_full", "lora_vs_full", _s_lora_vs_full),
      ("table", "lora_equal_flops", "lora_equal_flops", _s_lora_equal_flops),
      ("table", "lora_merging", "lora_merging", _s_lora_merging),
      ("table", "lora_upscaling", "lora_upscaling", _s_lora_upscaling),
      ("table", "lora_findings", "lora_findings", _s_lora_findings)]),
    ("7. Findings check", "Each of the paper's four claims next to what this run shows, with a verdict by the "
     "rules in hyperllama_lib/pipeline/report.py.",
     [("table", "findings", "findings", _s_findings), ("table", "pair_counts", "pair_counts",
                                                       lambda t: "Pairs behind each accuracy, as 05_eval "
                                                       "counted them; the standard errors "
                                                       "above use them.")]),
]


OPTIONAL_SECTIONS = {SECTIONS[5][0]}  # LoRA: only in runs with a LoRA setup beside its full twin

HUB_LINE = ("- Models fetched from the Hub (`models_from: hub`): the authors' released checkpoints, evaluated here; "
            "no training curves")


def _header(info: dict) -> list[str]:
    counts = info["counts"]
    return [f"# Grow Up and Merge: reproduction report ({info.get('scale', '?')} scale)", "",
            "Generated by `hyperllama_lib.pipeline.analysis.render` from the rows in `tables/` (results_tidy.csv, "
            "curves.csv, data_stats.csv, run_info.csv); do not edit by hand. Paper: Glocker et al., "
            "\"Grow Up and Merge\", arXiv 2512.10772.", "",
            f"- Scale: {info.get('scale', '?')}",
            f"- Target languages: {', '.join(info['langs'])}",
            f"- Setups: {', '.join(info['setups'])} (1x: CPT of the small English base; 1x_cloned: that base "
            "HyperCloned x2, then CPT; 2x: CPT of the large English base)",
            f"- Merge methods: {', '.join(info['merge_methods'])} (subsets: {info.get('merge_subsets', 'full')})",
            f"- Models: {counts['base']} English bases, {counts['cpt']} monolingual, {counts['multilingual']} "
            f"multilingual, {counts['merged']} full merges, {counts['merged_subset']} subset merges; "
            f"{info['checkpoints']} intermediate checkpoints"
            + (f", {counts['matching']} released -matching-1x checkpoints" if counts.get("matching") else ""),
            *([HUB_LINE] if info.get("models_from") == "hub" else []),
            f"- MultiBLiMP pairs: {info['multiblimp_source']}", ""]


def _items(items: list, markdown: dict) -> list[tuple]:
    """The section's items, the "tables" item expanded to every table with its name prefix."""
    out = []
    for kind, name, source, sentence in items:
        if kind == "tables":
            out += [("table", n, n, sentence) for n in markdown if n.startswith(name)]
        else:
            out.append((kind, name, source, sentence))
    return out


def write(publish_dir: Path, info: dict, tables: dict, markdown: dict, figures: list[str]) -> Path:
    lines = _header(info)
    for title, intro, items in SECTIONS:
        if title in OPTIONAL_SECTIONS and not any(source in tables for _, _, source, _ in items):
            continue
        if not info.get("has_curves", True):
            intro = RELEASED_INTROS.get(title, intro)
        lines += [f"## {title}", "", intro, ""]
        for kind, name, source, sentence in _items(items, markdown):
            present = name in figures if kind == "figure" else name in markdown
            if not present or source not in tables:
                missing = left_out(name, info, tables)
                lines += [missing, ""] if missing else []
                continue
            lines += ([f"![{name}](figures/{name}.png)"] if kind == "figure" else
                      [f"Table `{name}` (tables/{name}.csv, .md, .tex):", "", markdown[name]])
            lines += ["", sentence(tables[source]), ""]
        if title.startswith("5.") and "merge_subsets" not in tables:
            lines += [NO_SUBSETS, ""]
    path = Path(publish_dir) / "REPORT.md"
    artifacts.atomic.write_text(path, "\n".join(lines).rstrip() + "\n")
    return path
