"""06_analysis on a run whose models were fetched from the Hub (`models_from: hub`): no training curves, no
checkpoints, the authors' -matching-1x checkpoints for some languages, with and without the paper's own pair
benchmarks. Every table and figure that needs no curve, the FLOP-matched comparison from the matching rows,
one sentence for each part left out."""
import pandas as pd
import pytest
from test_analysis import LANGS, PAIRS, PER_TOKEN, SETUPS, STEPS, TOKENS_PER_STEP, _row, make_rows

from hyperllama_lib.params import MissingInputError, load_params
from hyperllama_lib.pipeline import analysis, cpt, evaluate, report

# (setup, lang) -> (target bpb, English bpb, MultiBLiMP, BLiMP) of the released -matching-1x checkpoint
MATCHING = {("1x_cloned", "est"): (3.4, 2.3, 0.62, 0.79), ("2x", "est"): (3.3, 2.2, 0.64, 0.80),
            ("1x_cloned", "fao"): (3.5, 2.4, 0.66, 0.78)}
NEW_PAIRS = {"blimp-single-error": ["eng"], "mpararel": ["eng", "est", "isl"]}
CURVE_PARTS = ["bpb_vs_target_tokens", "data_efficiency", "multiblimp_vs_target_tokens", "bpb_vs_training_flops",
               "flop_matched", "multiblimp_vs_training_flops", "english_bpb_during_cpt", "english_blimp_during_cpt"]


def _matching_rows(setup, lang, scores):
    # tokens at which the 572M run has spent the 1x final model's FLOPs (all parameters)
    step = round(STEPS * PER_TOKEN["1x"][0] / PER_TOKEN[setup][0])
    target_bpb, eng_bpb, mb, blimp = scores

    def row(benchmark, on, metric, value, source=None):
        return _row(f"matching-{setup}-{lang}", "matching", setup, lang, step, True, benchmark, on, metric, value,
                    source)
    return [row("heldout", lang, "bpb", target_bpb), row("heldout", "eng", "bpb", eng_bpb),
            row("multiblimp", lang, "accuracy", mb, "built"), row("multiblimp", lang, "n_pairs", PAIRS, "built"),
            row("blimp", "eng", "accuracy", blimp), row("blimp", "eng", "n_pairs", PAIRS)]


def _new_benchmark_rows(results):
    rows = []
    for model in results[results["final"]].drop_duplicates("model").itertuples(index=False):
        for bench, langs in NEW_PAIRS.items():
            for i, lang in enumerate(langs):
                value = 0.6 + 0.01 * i + (0.05 if model.kind == "cpt" else 0.0)
                rows += [{**model._asdict(), "benchmark": bench, "lang": lang, "metric": metric, "value": v,
                          "source": None}
                         for metric, v in [("accuracy", value), ("accuracy_byte_norm", value - 0.01), ("n_pairs", 50)]]
    return rows


def released_rows(matching=MATCHING, new_benchmarks=True, **kwargs):
    """make_rows without curves and checkpoints, with -matching-1x rows (and the paper's pair benchmarks)."""
    rows = make_rows(**kwargs)
    results = rows["results"][rows["results"]["final"]]
    results = pd.concat([results, pd.DataFrame([r for (s, lang), v in matching.items()
                                                for r in _matching_rows(s, lang, v)])], ignore_index=True)
    if new_benchmarks:
        results = pd.concat([results, pd.DataFrame(_new_benchmark_rows(results))], ignore_index=True)
    info = pd.concat([rows["run_info"], pd.DataFrame({"key": ["models_from"], "value": ["hub"]})], ignore_index=True)
    return {**rows, "results": results, "curves": pd.DataFrame(columns=analysis.CURVE_COLUMNS), "run_info": info}


def _report(tmp_path, rows, formats=()):
    out = analysis.render(rows, tmp_path, log=lambda m: None, formats=formats)
    return out, (tmp_path / "REPORT.md").read_text()


def test_released_run_gets_every_table_without_curves_and_a_sentence_for_each_part_left_out(tmp_path):
    out, text = _report(tmp_path, released_rows(), formats=("png",))
    assert set(out["tables"]) == {"data_budget", "heldout_bpb_final", "multiblimp", "pairs_blimp_single_error",
                                  "pairs_mpararel", "flop_matched_released", "english_blimp", "forgetting", "merging",
                                  "merge_methods", "merge_summary", "pair_counts", "findings"}
    assert set(out["figures"]) == {"data_budget", "english_forgetting", "english_blimp_before_after",
                                   "merge_methods", "merged_vs_multilingual"}
    for name, png in out["figures"].items():
        assert png.stat().st_size > 1000 and f"(figures/{name}.png)" in text
    assert not (tmp_path / "tables" / "data_efficiency.csv").exists()
    for name in out["tables"]:
        assert f"Table `{name}`" in text, name
    for name in CURVE_PARTS:
        sentence = report.left_out(name, {"has_curves": False, "has_checkpoints": False, "models_from": "hub"},
                                   out["tables"])
        assert text.count(sentence) == 1 and text.count(f"(`{name}`)") + text.count(f"table `{name}`") == 1, name
        assert "fetched from the Hub" in sentence and sentence.count(". ") == 0, sentence  # one sentence
    assert "stand in for it (`flop_matched_released`, below)" in text
    assert "Models fetched from the Hub" in text and "3 released -matching-1x checkpoints" in text
    assert "an inference from the name" in text and "none for 2x/fao, 1x_cloned/isl, 2x/isl" in text


def test_pair_benchmarks_each_get_a_final_scores_table(tmp_path):
    tables = analysis.derive(released_rows())
    mp = tables["pairs_mpararel"]
    assert list(mp.columns) == ["benchmark", "setup", "kind", "trained_on", "eng", "est", "isl"]
    cpt_est = mp[(mp.setup == "2x") & (mp.kind == "cpt") & (mp.trained_on == "est")].iloc[0]
    assert (cpt_est.eng, cpt_est.est, cpt_est.isl) == pytest.approx((0.65, 0.66, 0.67))
    assert set(mp.kind) == {"base", "cpt", "matching", "multilingual", "merged"}
    assert list(tables["pairs_blimp_single_error"].columns[4:]) == ["eng"]
    counts = tables["pair_counts"].set_index(["benchmark", "lang"]).pairs
    assert counts["mpararel", "isl"] == 50 and counts["blimp", "eng"] == PAIRS
    assert not any(n.startswith("pairs_") for n in analysis.derive(released_rows(new_benchmarks=False)))


def test_flop_matched_released_comes_from_the_matching_rows():
    fm = analysis.derive(released_rows())["flop_matched_released"]
    assert len(fm) == len(LANGS) * len(SETUPS) and list(fm.lang.unique()) == LANGS
    est = fm[fm.lang == "est"].set_index("setup")
    assert list(est.checkpoint) == ["1x final model", "-matching-1x", "-matching-1x"]
    ref_flops = STEPS * TOKENS_PER_STEP * PER_TOKEN["1x"][0]
    assert est.loc["1x", "flops_total"] == ref_flops and est.loc["1x", "bpb"] == pytest.approx(3.0)
    two = est.loc["2x"]
    step = round(STEPS * PER_TOKEN["1x"][0] / PER_TOKEN["2x"][0])
    assert two.step == step and two.tokens == step * TOKENS_PER_STEP
    assert two.flops_total == step * TOKENS_PER_STEP * PER_TOKEN["2x"][0]
    assert two.flops_total_vs_1x == pytest.approx(two.flops_total / ref_flops)
    assert (two.bpb, two.eng_bpb, two.multiblimp, two.blimp) == pytest.approx(MATCHING["2x", "est"])
    assert two.bpb_minus_1x == pytest.approx(3.3 - 3.0) and two.eng_bpb_minus_1x == pytest.approx(2.2 - 2.5)
    assert two.multiblimp_minus_1x == pytest.approx(0.64 - 0.7) and two.blimp_minus_1x == pytest.approx(0.80 - 0.801)
    missing = fm[fm.checkpoint == "not released"]
    assert set(zip(missing.setup, missing.lang)) == {("2x", "fao"), ("1x_cloned", "isl"), ("2x", "isl")}
    assert missing.bpb.isna().all() and missing.flops_total.isna().all()


def test_without_matching_rows_the_report_says_nothing_stands_in(tmp_path):
    out, text = _report(tmp_path, released_rows(matching={}))
    assert "flop_matched_released" not in out["tables"] and "flop_matched" not in out["tables"]
    assert "no -matching-1x checkpoint was evaluated to stand in for it" in text
    assert "released -matching-1x checkpoints" not in text.split("## 1.")[0]


def test_claims_give_verdicts_without_curves():
    merges = {s: {"linear": 3.5 - 0.2 * (s != "1x"), "ties": 3.7 - 0.2 * (s != "1x")} for s in SETUPS}
    rows = released_rows(bpb_gap=-0.05, eng_change={"1x": 0.6, "1x_cloned": 0.3, "2x": 0.3}, merges=merges)
    f = analysis.derive(rows)["findings"].set_index("claim")
    one = f.loc[f"{report.CLAIMS[1]}: 2x vs 1x"]
    assert one.verdict == report.SUPPORTED
    assert "unknown (no training curves)" in one.evidence
    assert "the released -matching-1x checkpoints" in one.evidence and "2x - 1x bpb is +0.300" in one.evidence
    assert f.loc[f"{report.CLAIMS[2]}: 2x vs 1x"].verdict == report.SUPPORTED
    assert f.loc[report.CLAIMS[3]].verdict == report.SUPPORTED  # merges above joint 2.9; upscaled 0.2 better
    assert f.loc[report.CLAIMS[4]].verdict == report.NOT_SUPPORTED  # methods differ as much as setups (0.2)
    worse = analysis.derive(released_rows(bpb_gap=0.05))["findings"].set_index("claim")
    assert worse.loc[f"{report.CLAIMS[1]}: 1x_cloned vs 1x"].verdict == report.NOT_SUPPORTED


def test_collect_without_curves(tmp_path, monkeypatch):
    rows = released_rows()
    monkeypatch.setattr(cpt, "curves", lambda p: pd.DataFrame())
    monkeypatch.setattr(evaluate, "load_results", lambda p: rows["results"])
    monkeypatch.setattr(analysis, "data_table", lambda p: rows["data_stats"])
    publish = tmp_path / "publish"  # not the repository's tables/ (tiny's default)
    overrides = {"run_dir": str(tmp_path), "publish_dir": str(publish), "langs": LANGS, "setups": SETUPS}
    with pytest.raises(MissingInputError, match="no training curves"):
        analysis.collect(load_params("tiny", overrides, need_data=False), log=lambda m: None)
    back = analysis.collect(load_params("tiny", {**overrides, "models_from": "hub"}, need_data=False),
                            log=lambda m: None)
    assert (publish / "tables" / "curves.csv").read_text().strip() == ",".join(analysis.CURVE_COLUMNS)
    assert back["curves"].empty and list(back["curves"].columns) == analysis.CURVE_COLUMNS
    inf = analysis.info(back)
    assert inf["models_from"] == "hub" and not inf["has_curves"] and not inf["has_checkpoints"]
    assert (back["results"].kind == "matching").sum() == len(rows["results"][rows["results"].kind == "matching"])
