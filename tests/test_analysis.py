"""06_analysis: derived numbers on small synthetic rows (FLOP matching, forgetting, every findings verdict
both ways, the files written), then the committed outputs re-rendered from the committed rows."""
import math

import pandas as pd
import pytest
from conftest import REPO
from matplotlib.testing.compare import compare_images

from hyperllama_lib.pipeline import analysis, report

LANGS = ["est", "fao", "isl"]
SETUPS = ["1x", "1x_cloned", "2x"]
STEPS, TOKENS_PER_STEP = 100, 1000
# FLOPs per token (all parameters, non-embedding): the larger setups cost 3.2x / 4x a 1x token
PER_TOKEN = {"1x": (6000, 3600), "1x_cloned": (19200, 14400), "2x": (19200, 14400)}
FINAL_BPB = 3.0
PAIRS = 1000  # pairs behind every synthetic accuracy


def curve_bpb(final: float, step: int) -> float:
    return final + 2.0 * (1 - step / STEPS) ** 2


def _row(model, kind, setup, trained_on, step, final, benchmark, lang, metric, value, source=None):
    total, non_emb = PER_TOKEN[setup]
    tokens = step * TOKENS_PER_STEP
    return dict(model=model, kind=kind, setup=setup, trained_on=trained_on, step=step, tokens=tokens,
                flops_total=tokens * total, flops_non_embedding=tokens * non_emb, final=final, benchmark=benchmark,
                lang=lang, metric=metric, value=value, source=source)


def make_rows(bpb_gap=0.0, mb_gap=0.0, blimp_change=None, eng_change=None, merges=None, joint=2.9,
              subsets=False, curve_until=STEPS):
    """Synthetic rows: upscaled setups end `bpb_gap` bits/byte and `mb_gap` MultiBLiMP accuracy away from 1x;
    blimp_change / eng_change: setup -> adapted minus base; merges: setup -> method -> mean bpb."""
    blimp_change = blimp_change or {s: 0.0 for s in SETUPS}
    eng_change = eng_change or {s: 0.5 for s in SETUPS}
    merges = merges or {s: {"linear": 3.4, "ties": 3.6} for s in SETUPS}
    results, curves = [], []
    for s in SETUPS:
        final = FINAL_BPB + (0.0 if s == "1x" else bpb_gap)
        mb_final = 0.7 + (0.0 if s == "1x" else mb_gap)
        results += [_row(f"base_{s}", "base", s, "eng", 0, True, "blimp", "eng", "accuracy", 0.801),
                    _row(f"base_{s}", "base", s, "eng", 0, True, "heldout", "eng", "bpb", 2.0)]
        results += [_row(f"base_{s}", "base", s, "eng", 0, True, "multiblimp", lang, "accuracy", 0.501, "built")
                    for lang in LANGS]
        results += [_row(f"base_{s}", "base", s, "eng", 0, True, "blimp", "eng", "n_pairs", PAIRS)]
        results += [_row(f"base_{s}", "base", s, "eng", 0, True, "multiblimp", lang, "n_pairs", PAIRS, "built")
                    for lang in LANGS]
        for lang in LANGS:
            model = f"cpt-{s}-{lang}"
            results += [_row(model, "cpt", s, lang, STEPS, True, "blimp", "eng", "accuracy",
                             round(0.801 + blimp_change[s], 3)),
                        _row(model, "cpt", s, lang, STEPS, True, "heldout", "eng", "bpb", 2.0 + eng_change[s]),
                        _row(model, "cpt", s, lang, STEPS, True, "heldout", lang, "bpb", final),
                        _row(model, "cpt", s, lang, STEPS, True, "multiblimp", lang, "accuracy", mb_final, "built"),
                        _row(model, "cpt", s, lang, STEPS, True, "blimp", "eng", "n_pairs", PAIRS),
                        _row(model, "cpt", s, lang, STEPS, True, "multiblimp", lang, "n_pairs", PAIRS, "built"),
                        _row(model, "cpt", s, lang, STEPS // 2, False, "multiblimp", lang, "accuracy", 0.6, "built")]
            for step in range(0, STEPS + 1, 10):
                if s == "1x" or step <= curve_until:
                    total, non_emb = PER_TOKEN[s]
                    tokens = step * TOKENS_PER_STEP
                    point = dict(stage=f"{s}-{lang}", step=step, tokens=tokens, flops_total=tokens * total,
                                 flops_non_embedding=tokens * non_emb, setup=s, trained_on=lang)
                    curves += [{**point, "lang": lang, "bpb": curve_bpb(final, step)},
                               {**point, "lang": "eng", "bpb": 2.0 + eng_change[s] * step / STEPS}]
        results += [_row(f"cpt-{s}-multilingual", "multilingual", s, "multilingual", 3 * STEPS, True, "heldout",
                         lang, "bpb", joint) for lang in LANGS]
        for method, value in merges[s].items():
            results += [_row(f"merged-{s}-{method}", "merged", s, method, 0, True, "heldout", lang, "bpb", value)
                        for lang in LANGS]
            if subsets:
                for pair in [("est", "fao"), ("est", "isl"), ("fao", "isl")]:
                    results += [_row(f"merged-{s}-{method}-{'+'.join(pair)}", "merged_subset", s, method, 0, True,
                                     "heldout", lang, "bpb", value - 0.2) for lang in pair]
    stats = pd.DataFrame([dict(lang=lang, train_chars=10**6, unimax_chars=2 * 10**5, epochs=0.2,
                               target_tokens=90_000, replay_tokens=10_000, replay_share_samples=0.03,
                               stream_tokens=100_000, steps=STEPS) for lang in LANGS])
    info = {"scale": "synthetic", "langs": ",".join(LANGS), "setups": ",".join(SETUPS),
            "merge_methods": "linear,ties", "merge_subsets": "all" if subsets else "full"}
    return {"results": pd.DataFrame(results), "curves": pd.DataFrame(curves), "data_stats": stats,
            "run_info": pd.DataFrame({"key": list(info), "value": list(info.values())})}


def verdict(rows, claim: str, setup: str = "") -> str:
    f = analysis.derive(rows)["findings"]
    hit = f[f.claim.str.startswith(claim) & f.claim.str.endswith(f"{setup} vs 1x" if setup else "")]
    assert len(hit) == 1, f
    return hit.verdict.iloc[0]


# -- numbers --------------------------------------------------------------------------------------------------

def test_interpolate_and_first_crossing():
    assert analysis.interpolate(15, [0, 10, 20], [1.0, 2.0, 4.0]) == pytest.approx(3.0)
    assert math.isnan(analysis.interpolate(25, [0, 10, 20], [1.0, 2.0, 4.0]))
    assert analysis.first_crossing([0, 10, 20], [5.0, 3.0, 1.0], 2.0) == pytest.approx(15.0)
    assert math.isnan(analysis.first_crossing([0, 10], [5.0, 3.0], 2.0))


def test_flop_matched_interpolates_between_curve_points():
    fm = analysis.derive(make_rows(bpb_gap=-0.1))["flop_matched"]
    row = fm[(fm.lang == "est") & (fm.convention == "all parameters") & (fm.setup == "2x")].iloc[0]
    flops = STEPS * TOKENS_PER_STEP * PER_TOKEN["1x"][0]
    tokens = flops / PER_TOKEN["2x"][0]  # 31,250 tokens: step 31.25, between the points at 30 and 40
    step = tokens / TOKENS_PER_STEP
    lo, hi = curve_bpb(FINAL_BPB - 0.1, 30), curve_bpb(FINAL_BPB - 0.1, 40)
    assert row.flops == flops and row.tokens == round(tokens) and row.target_tokens == round(0.9 * tokens)
    assert row.bpb == pytest.approx(lo + (step - 30) / 10 * (hi - lo))
    assert row.bpb_minus_1x == pytest.approx(row.bpb - FINAL_BPB)
    checkpoint_flops = STEPS // 2 * TOKENS_PER_STEP * PER_TOKEN["2x"][0]  # base at 0, checkpoint at step 50
    assert row.multiblimp == pytest.approx(0.501 + flops / checkpoint_flops * (0.6 - 0.501))
    assert row.note == "interpolated"
    ref = fm[(fm.lang == "est") & (fm.convention == "all parameters") & (fm.setup == "1x")].iloc[0]
    assert ref.bpb == pytest.approx(FINAL_BPB) and ref.multiblimp == pytest.approx(0.7)
    non_emb = fm[(fm.lang == "est") & (fm.convention == "non-embedding parameters") & (fm.setup == "2x")].iloc[0]
    assert non_emb.tokens == round(STEPS * TOKENS_PER_STEP * PER_TOKEN["1x"][1] / PER_TOKEN["2x"][1])


def test_flop_matched_says_beyond_the_run():
    fm = analysis.derive(make_rows(curve_until=20))["flop_matched"]
    beyond = fm[(fm.setup == "2x") & (fm.convention == "all parameters")]
    assert (beyond.note == "beyond the run").all() and beyond.bpb.isna().all() and beyond.tokens.isna().all()


def test_forgetting_deltas():
    rows = make_rows(blimp_change={"1x": -0.05, "1x_cloned": 0.0, "2x": 0.02},
                     eng_change={"1x": 0.6, "1x_cloned": 0.4, "2x": 0.3})
    f = analysis.derive(rows)["forgetting"]
    assert list(f.setup.unique()) == SETUPS and list(f.trained_on[:3]) == LANGS
    got = f.groupby("setup")[["blimp_change", "eng_bpb_change"]].mean()
    assert got.loc["1x"].tolist() == pytest.approx([-0.05, 0.6])
    assert got.loc["2x"].tolist() == pytest.approx([0.02, 0.3])
    assert (f.blimp_base == 0.801).all() and (f.eng_bpb_base == 2.0).all()


def test_efficiency_share_of_data_to_reach_1x():
    eff = analysis.derive(make_rows(bpb_gap=-0.5))["data_efficiency"]
    row = eff[(eff.lang == "est") & (eff.setup == "2x")].iloc[0]
    # 2.5 + 2 (1 - t)^2 = 3.0 at t = 0.5: half the data
    assert row.share_of_data_to_reach_1x == pytest.approx(0.5, abs=0.01)
    assert row.bpb_minus_1x == pytest.approx(-0.5)


# -- every verdict both ways ---------------------------------------------------------------------------------

def test_claim_1_verdicts():
    assert verdict(make_rows(bpb_gap=-0.05), "(1)", "2x") == report.SUPPORTED
    assert verdict(make_rows(bpb_gap=0.05), "(1)", "2x") == report.NOT_SUPPORTED
    # bits per byte better, MultiBLiMP clearly worse (0.2 >> 2 SE at 1000 pairs): the measures disagree
    assert verdict(make_rows(bpb_gap=-0.05, mb_gap=-0.2), "(1)", "2x") == report.INCONCLUSIVE


def test_claim_2_verdicts():
    less = make_rows(eng_change={"1x": 0.6, "1x_cloned": 0.3, "2x": 0.3})
    more = make_rows(eng_change={"1x": 0.3, "1x_cloned": 0.6, "2x": 0.6})
    noise = make_rows(blimp_change={"1x": 0.0, "1x_cloned": 0.01, "2x": 0.01})  # < 2 SE at 1000 pairs
    assert verdict(less, "(2)", "2x") == report.SUPPORTED
    assert verdict(more, "(2)", "1x_cloned") == report.NOT_SUPPORTED
    assert verdict(noise, "(2)", "2x") == report.INCONCLUSIVE
    blimp_only = make_rows(blimp_change={"1x": -0.2, "1x_cloned": 0.0, "2x": 0.0})
    assert verdict(blimp_only, "(2)", "2x") == report.SUPPORTED


def test_claim_3_verdicts():
    def merges(small, large):
        return {"1x": {"linear": small, "ties": small + 0.2}, "1x_cloned": {"linear": large, "ties": large + 0.2},
                "2x": {"linear": large, "ties": large + 0.2}}
    assert verdict(make_rows(merges=merges(3.5, 3.3)), "(3)") == report.SUPPORTED
    assert verdict(make_rows(merges=merges(3.5, 3.6)), "(3)") == report.NOT_SUPPORTED
    assert verdict(make_rows(merges=merges(2.8, 2.7)), "(3)") == report.NOT_SUPPORTED  # merges beat joint
    assert verdict(make_rows(merges=merges(3.5, 3.5)), "(3)") == report.INCONCLUSIVE


def test_claim_4_verdicts():
    def merges(spread, gap):
        return {s: {"linear": 3.4 + i * gap, "ties": 3.4 + i * gap + spread} for i, s in enumerate(SETUPS)}
    assert verdict(make_rows(merges=merges(0.5, 0.05)), "(4)") == report.SUPPORTED
    assert verdict(make_rows(merges=merges(0.02, 0.1)), "(4)") == report.NOT_SUPPORTED
    assert verdict(make_rows(merges=merges(0.15, 0.05)), "(4)") == report.INCONCLUSIVE


# -- files ----------------------------------------------------------------------------------------------------

def test_render_writes_tables_figures_and_report(tmp_path):
    rows = make_rows(bpb_gap=-0.05, subsets=True)
    out = analysis.render(rows, tmp_path, log=lambda m: None, formats=())  # figures: the committed test
    for name, df in out["tables"].items():
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
        assert len(pd.read_csv(tmp_path / "tables" / f"{name}.csv")) == len(df)
    assert "\\begin{tabular}" in (tmp_path / "tables" / "findings.tex").read_text()
    assert {"merge_subsets", "findings", "flop_matched", "forgetting"} <= set(out["tables"])
    text = (tmp_path / "REPORT.md").read_text()
    assert all(f"(figures/{name}.png)" in text for name in out["figures"])
    assert "merge_subset_size" in out["figures"] and "merge_subsets=all" not in text
    subsets = out["tables"]["merge_subsets"]
    two = subsets[(subsets.setup == "1x") & (subsets.method == "linear") & (subsets.n_langs == 2)]
    assert two.mean_bpb.iloc[0] == pytest.approx(3.2) and two.subsets.iloc[0] == 3
    png, pdf = analysis.save_figure(analysis.subset_figure(subsets, SETUPS), tmp_path, "subsets")
    assert png.stat().st_size > 1000 and b"CreationDate" not in pdf.read_bytes()


def test_report_says_how_to_run_subsets(tmp_path):
    rows = make_rows()
    tables = analysis.derive(rows)
    info = {**analysis.info(rows), **report.model_counts(rows["results"])}
    report.write(tmp_path, info, tables, {name: "" for name in tables}, [])
    assert "--set merge_subsets=all" in (tmp_path / "REPORT.md").read_text()


def test_rows_round_trip(tmp_path):
    rows = make_rows()
    for key, name in analysis.ROW_FILES.items():
        rows[key].to_csv(tmp_path / name, index=False)
    back = analysis.load_rows(tmp_path)
    assert back["results"]["final"].dtype == bool and (~back["results"]["final"]).sum() == 9
    assert analysis.info(back)["langs"] == LANGS


# -- the committed outputs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rerendered(tmp_path_factory):
    tables = REPO / "tables"
    missing = [n for n in analysis.ROW_FILES.values() if not (tables / n).exists()]
    if missing:
        pytest.skip(f"committed rows missing in tables/ ({', '.join(missing)}): run notebooks/06_analysis.ipynb")
    out_dir = tmp_path_factory.mktemp("rerender")
    return out_dir, analysis.render(analysis.load_rows(tables), out_dir, log=lambda m: None, formats=("png",))


def test_committed_tables_and_report_rerender_exactly(rerendered):
    out_dir, out = rerendered
    for name in out["tables"]:
        for ext in ("csv", "md", "tex"):
            committed = REPO / "tables" / f"{name}.{ext}"
            assert committed.exists(), f"{committed} not committed"
            assert (out_dir / "tables" / f"{name}.{ext}").read_text() == committed.read_text(), f"{name}.{ext}"
    assert (out_dir / "REPORT.md").read_text() == (REPO / "REPORT.md").read_text()


def test_committed_figures_rerender(rerendered):
    _, out = rerendered
    for name, png in out["figures"].items():
        committed = REPO / "figures" / f"{name}.png"
        assert committed.exists(), f"{committed} not committed"
        assert compare_images(str(committed), str(png), tol=3) is None, name
