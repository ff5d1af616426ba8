"""06_analysis on LoRA setups: the tables at equal data and equal FLOPs, adapter merges, the learning-against-
forgetting figure and both LoRA verdicts each way, on small synthetic rows."""
import pandas as pd
import pytest

from hyperllama_lib.pipeline import analysis, report

LANGS = ["est", "fao", "isl"]
SETUPS = ["1x", "2x", "1x_lora", "2x_lora"]
STEPS, TOKENS_PER_STEP, PAIRS = 100, 1000, 1000
# FLOPs per token (all parameters, non-embedding): a LoRA step costs 4N + 6N_lora, about 2/3 of full CPT's 6N
PER_TOKEN = {"1x": (6000, 3600), "2x": (19200, 14400), "1x_lora": (4100, 2500), "2x_lora": (12900, 9700)}
BASE_TARGET, BASE_ENG = 5.0, 2.0


def _row(model, kind, setup, trained_on, step, benchmark, lang, metric, value, final=True):
    tokens = step * TOKENS_PER_STEP
    total, non_emb = PER_TOKEN[setup]
    return dict(model=model, kind=kind, setup=setup, trained_on=trained_on, step=step, tokens=tokens,
                flops_total=tokens * total, flops_non_embedding=tokens * non_emb, final=final, benchmark=benchmark,
                lang=lang, metric=metric, value=value, source="built" if benchmark == "multiblimp" else None)


def make_rows(target: dict, eng_change: dict, blimp_change: dict, merges: dict, multiblimp: dict | None = None):
    """setup -> final target bpb, English bpb change, BLiMP change, best merge bpb; MultiBLiMP accuracy."""
    multiblimp = multiblimp or {s: 0.7 for s in SETUPS}
    results, curves = [], []
    for s in SETUPS:
        base = f"base_{s.removesuffix('_lora')}"
        results += [_row(base, "base", s, "eng", 0, "blimp", "eng", "accuracy", 0.8),
                    _row(base, "base", s, "eng", 0, "blimp", "eng", "n_pairs", PAIRS),
                    _row(base, "base", s, "eng", 0, "heldout", "eng", "bpb", BASE_ENG)]
        results += [_row(base, "base", s, "eng", 0, "heldout", lang, "bpb", BASE_TARGET) for lang in LANGS]
        for lang in LANGS:
            model = f"cpt-{s}-{lang}"
            results += [_row(model, "cpt", s, lang, STEPS, "heldout", lang, "bpb", target[s]),
                        _row(model, "cpt", s, lang, STEPS, "heldout", "eng", "bpb", BASE_ENG + eng_change[s]),
                        _row(model, "cpt", s, lang, STEPS, "blimp", "eng", "accuracy", 0.8 + blimp_change[s]),
                        _row(model, "cpt", s, lang, STEPS, "multiblimp", lang, "accuracy", multiblimp[s]),
                        _row(model, "cpt", s, lang, STEPS, "multiblimp", lang, "n_pairs", PAIRS)]
            for step in range(0, STEPS + 1, 10):  # bpb falls linearly from the base's to the final value
                total, non_emb = PER_TOKEN[s]
                point = dict(stage=f"{s}-{lang}", step=step, tokens=step * TOKENS_PER_STEP,
                             flops_total=step * TOKENS_PER_STEP * total,
                             flops_non_embedding=step * TOKENS_PER_STEP * non_emb, setup=s, trained_on=lang)
                frac = step / STEPS
                curves += [{**point, "lang": lang, "bpb": BASE_TARGET + (target[s] - BASE_TARGET) * frac},
                           {**point, "lang": "eng", "bpb": BASE_ENG + eng_change[s] * frac}]
        results += [_row(f"cpt-{s}-multilingual", "multilingual", s, "multilingual", 3 * STEPS, "heldout", lang,
                         "bpb", target[s] - 0.1) for lang in LANGS]
        for method, offset in (("linear", 0.0), ("ties", 0.2)):
            results += [_row(f"merged-{s}-{method}", "merged", s, method, 0, "heldout", lang, "bpb",
                             merges[s] + offset) for lang in LANGS]
    stats = pd.DataFrame([dict(lang=lang, train_chars=10**6, unimax_chars=2 * 10**5, epochs=0.2,
                               target_tokens=90_000, replay_tokens=10_000, replay_share_samples=0.03,
                               stream_tokens=100_000, steps=STEPS) for lang in LANGS])
    info = pd.DataFrame([{"key": "scale", "value": "synthetic"}, {"key": "langs", "value": ",".join(LANGS)},
                         {"key": "setups", "value": ",".join(SETUPS)}, {"key": "merge_methods", "value": "linear,ties"}])
    return {"results": pd.DataFrame(results), "curves": pd.DataFrame(curves), "data_stats": stats, "run_info": info}


TARGET = {"1x": 3.0, "2x": 2.8, "1x_lora": 3.4, "2x_lora": 3.1}
MERGES = {"1x": 3.5, "2x": 3.3, "1x_lora": 3.6, "2x_lora": 3.4}


def rows(**changes):
    args = dict(target=TARGET, eng_change={"1x": 0.5, "2x": 0.4, "1x_lora": 0.1, "2x_lora": 0.05},
                blimp_change={"1x": -0.05, "2x": -0.04, "1x_lora": -0.01, "2x_lora": -0.01}, merges=MERGES)
    return make_rows(**{**args, **changes})


def verdicts(tables, claim: str) -> dict[str, str]:
    f = tables["lora_findings"]
    return {c.split(": ")[-1]: v for c, v in zip(f.claim, f.verdict) if c.startswith(claim)}


def test_lora_against_full_at_equal_data_and_flops():
    tables = analysis.derive(rows())
    t = tables["lora_vs_full"].set_index(["base", "trained_on"])
    assert t.loc[("1x", "est"), "target_bpb_lora_minus_full"] == pytest.approx(0.4)
    assert t.loc[("2x", "fao"), "eng_bpb_change_lora_minus_full"] == pytest.approx(-0.35)
    assert t.loc[("1x", "isl"), "flops_lora_over_full"] == pytest.approx(4100 / 6000)
    assert t.loc[("1x", "multilingual"), "target_bpb_full"] == pytest.approx(2.9)
    # equal FLOPs: the LoRA run's final FLOPs are 4100/6000 of the way through the full 1x run, where its
    # (linear) curve stands at 5.0 - 2.0 x 0.683
    f = tables["lora_equal_flops"]
    row = f[(f.base == "1x") & (f.trained_on == "est") & (f.convention == "all parameters")].iloc[0]
    share = 4100 / 6000
    assert row.full_share_of_its_steps == pytest.approx(share)
    assert row.target_bpb_full == pytest.approx(BASE_TARGET - 2.0 * share)
    assert row.target_bpb_lora_minus_full == pytest.approx(3.4 - (BASE_TARGET - 2.0 * share))
    assert row.eng_bpb_lora_minus_full == pytest.approx(0.1 - 0.5 * share)
    points = tables["learning_forgetting"].set_index(["setup", "trained_on"])
    assert points.loc[("2x_lora", "est"), "target_gain"] == pytest.approx(BASE_TARGET - 3.1)
    assert len(points) == len(SETUPS) * (len(LANGS) + 1)  # one point per adapted model, multilingual included
    m = tables["lora_merging"].set_index("base")
    assert m.loc["1x", "merge_lora_minus_full"] == pytest.approx(0.1)
    assert m.loc["2x", "best_method_lora"] == "linear"
    assert m.loc["2x", "merge_minus_joint_lora"] == pytest.approx(3.4 - 3.0)


def test_lora_forgetting_verdicts_both_ways():
    less = verdicts(analysis.derive(rows()), "(L1)")
    assert less == {"1x_lora vs 1x": report.SUPPORTED, "2x_lora vs 2x": report.SUPPORTED}
    more = rows(eng_change={"1x": 0.1, "2x": 0.1, "1x_lora": 0.5, "2x_lora": 0.5},
                blimp_change={"1x": -0.01, "2x": -0.01, "1x_lora": -0.05, "2x_lora": -0.05})
    assert set(verdicts(analysis.derive(more), "(L1)").values()) == {report.NOT_SUPPORTED}
    same = rows(eng_change={s: 0.3 for s in SETUPS}, blimp_change={s: -0.02 for s in SETUPS})
    assert set(verdicts(analysis.derive(same), "(L1)").values()) == {report.INCONCLUSIVE}


def test_lora_upscaling_verdicts_every_way():
    helps = verdicts(analysis.derive(rows()), "(L2)")
    assert helps == {"2x_lora vs 1x_lora": report.SUPPORTED}
    up = analysis.derive(rows())["lora_upscaling"].set_index("lang")
    assert up.loc["est", "bpb_lora_2x_minus_1x"] == pytest.approx(-0.3)
    assert up.loc["est", "bpb_full_2x_minus_1x"] == pytest.approx(-0.2)
    flat = rows(target={**TARGET, "2x_lora": 3.4})
    assert verdicts(analysis.derive(flat), "(L2)") == {"2x_lora vs 1x_lora": report.NOT_SUPPORTED}
    # bpb helps but MultiBLiMP is significantly worse (1000 pairs per language): the measures disagree
    mixed = rows(multiblimp={"1x": 0.7, "2x": 0.7, "1x_lora": 0.8, "2x_lora": 0.6})
    assert verdicts(analysis.derive(mixed), "(L2)") == {"2x_lora vs 1x_lora": report.INCONCLUSIVE}


def test_report_has_the_lora_section_only_with_lora_setups(tmp_path):
    out = analysis.render(rows(), tmp_path / "with", log=lambda m: None, formats=("png",))
    text = out["report"].read_text()
    assert "## 6. Parameter-efficient adaptation (LoRA, beyond the paper)" in text
    assert "![lora_learning_vs_forgetting](figures/lora_learning_vs_forgetting.png)" in text
    assert (tmp_path / "with" / "figures" / "lora_learning_vs_forgetting.png").stat().st_size > 10_000
    for name in ("lora_vs_full", "lora_equal_flops", "lora_merging", "lora_upscaling", "lora_findings"):
        assert f"Table `{name}`" in text and (tmp_path / "with" / "tables" / f"{name}.tex").exists()
    full_only = rows()
    full_only = {k: v[v.setup.isin(["1x", "2x"])] if k in ("results", "curves") else v for k, v in full_only.items()}
    full_only["run_info"] = full_only["run_info"].replace({"value": {",".join(SETUPS): "1x,2x"}})
    text = analysis.render(full_only, tmp_path / "without", log=lambda m: None, formats=()).get("report").read_text()
    assert "LoRA" not in text and "## 7. Findings check" in text
