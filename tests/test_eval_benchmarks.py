"""05_eval runs what evaluation.benchmarks.BENCHMARKS declares: tiny model, tiny data, no pipeline run."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from test_score_pairs import save_tiny_model
from transformers import PreTrainedTokenizerFast

from hyperllama_lib import evaluation
from hyperllama_lib.evaluation import benchmarks
from hyperllama_lib.models import modeling
from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import evaluate, layout

TOY_PAIRS = pd.DataFrame({"good": ["Hunden skäller.", "The cat sat on the mat."],
                          "bad": ["Hundarna skäller.", "The cats sits on the mat."],
                          "paradigm": ["x", "y"]})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    save_tiny_model(path)
    return path


@pytest.fixture(scope="module")
def tok(model_dir):
    return PreTrainedTokenizerFast.from_pretrained(model_dir)


@pytest.fixture
def p(tmp_path):
    """A run with BLiMP (English), built MultiBLiMP pairs (eng, est), held-out text (eng, est) and the
    UDHR (eng only); fao has no data at all."""
    p = load_params("smoke", {"run_dir": str(tmp_path / "run"), "data_dir": str(tmp_path / "data"),
                              "langs": ["est", "fao"], "device": "cpu"}, need_data=False)
    for uid, (good, bad) in {"a": ("The cat sat.", "The cat sit."), "b": ("Many girls.", "Many girl.")}.items():
        (p.data_path / "blimp").mkdir(parents=True, exist_ok=True)
        (p.data_path / "blimp" / f"{uid}.jsonl").write_text(json.dumps(
            {"sentence_good": good, "sentence_bad": bad, "UID": uid, "pairID": 0}) + "\n")
    data = layout.of(p).data
    for lang in ("eng", "est"):
        data.multiblimp(lang).parent.mkdir(parents=True)
        data.multiblimp(lang).write_text("sen\twrong_sen\tphenomenon\tlang\n"
                                         f"Hunden skäller.\tHundarna skäller.\tSV-#\t{lang}\n"
                                         f"Þú ert góður.\tÞú eru góður.\tSV-P\t{lang}\n")
        data.heldout(lang).parent.mkdir(exist_ok=True)
        data.heldout(lang).write_text("The cat sat on the mat.\nÞú ert góður maður.\n")
    data.udhr("eng").parent.mkdir()
    data.udhr("eng").write_text("All human beings are born free.\n")
    return p


def entries(model_dir):
    final = evaluate.ModelEntry("cpt-1x-est", "cpt", "1x", "est", model_dir, "cpt/1x/est",
                                langs=["eng", "est", "fao"])
    checkpoint = evaluate.ModelEntry("cpt-1x-est", "cpt", "1x", "est", model_dir, "cpt/1x/est", step=4,
                                     final=False, langs=["eng", "est"])
    return final, checkpoint


def covered(rows: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(rows.benchmark, rows.lang)))


def test_final_models_and_checkpoints_get_what_the_table_declares(p, tok, model_dir):
    loaded = evaluate.load_benchmarks(p, log=lambda m: None)
    final, checkpoint = entries(model_dir)
    rows = evaluate.evaluate_model(p, final, tok, loaded)
    # pair benchmarks in table order, then text benchmarks language by language; no data, no rows (fao)
    assert covered(rows) == [("blimp", "eng"), ("multiblimp", "eng"), ("multiblimp", "est"),
                             ("heldout", "eng"), ("udhr", "eng"), ("heldout", "est")]
    assert list(rows.columns) == evaluate.RESULT_COLUMNS
    blimp = rows[rows.benchmark == "blimp"]
    assert blimp.metric.tolist() == ["accuracy", "accuracy_token_mean", "accuracy_byte_norm", "n_pairs"]
    assert blimp.source.isna().all() and blimp.set_index("metric").value["n_pairs"] == 2
    est = rows[(rows.benchmark == "multiblimp") & (rows.lang == "est")]
    assert est.metric.tolist() == ["accuracy", "n_pairs", "accuracy:SV-#", "accuracy:SV-P"]
    assert (est.source == "built").all()
    assert rows[rows.benchmark == "udhr"].metric.tolist() == ["bpb", "token_perplexity"]

    # checkpoints: English BLiMP and MultiBLiMP in the languages they are trained on, no bits per byte
    ckpt = evaluate.evaluate_model(p, checkpoint, tok, loaded)
    assert covered(ckpt) == [("blimp", "eng"), ("multiblimp", "est")]
    assert (~ckpt.final).all() and (ckpt.step == 4).all()
    for bench in benchmarks.BENCHMARKS:
        expected = [lang for lang in bench.langs_for(checkpoint.langs, final=False) if lang in loaded[bench.name]]
        assert [lang for b, lang in covered(ckpt) if b == bench.name] == expected, bench.name
        # a benchmark without data here (the paper's Hub sets under eval_source: local) gives no rows
        assert (bench.on_checkpoints and bool(expected)) == (bench.name in ckpt.benchmark.values), bench.name


def test_a_benchmark_added_to_the_table_gets_its_rows(p, tok, model_dir, monkeypatch):
    toy_pairs = benchmarks.Benchmark("toy-pairs", "pairs", lambda ctx: {"est": (TOY_PAIRS, "toy")},
                                     ("accuracy", "n_pairs"), langs="target", checkpoint_langs="target",
                                     data="a test table")
    toy_text = benchmarks.Benchmark("toy-text", "text", lambda ctx: {"eng": (["The cat sat."], None)}, ("bpb",),
                                    langs="english", checkpoint_langs="english", data="a test text")
    monkeypatch.setattr(benchmarks, "BENCHMARKS", (*benchmarks.BENCHMARKS, toy_pairs, toy_text))
    loaded = evaluate.load_benchmarks(p, log=lambda m: None)
    final, checkpoint = entries(model_dir)
    model = modeling.load_model(model_dir)
    accuracy = evaluation.score_pairs(model, tok, TOY_PAIRS, progress=False)[1]["accuracy"]
    bpb = evaluation.bits_per_byte(model, tok, ["The cat sat."], context_len=p.seq_len, progress=False)["bpb"]
    for entry in (final, checkpoint):
        rows = evaluate.evaluate_model(p, entry, tok, loaded)
        toy = rows[rows.benchmark.str.startswith("toy")]
        assert toy[["benchmark", "lang", "metric", "source"]].fillna("").values.tolist() == [
            ["toy-pairs", "est", "accuracy", "toy"], ["toy-pairs", "est", "n_pairs", "toy"],
            ["toy-text", "eng", "bpb", ""]]
        assert toy.value.tolist() == pytest.approx([accuracy, 2, bpb])


def test_a_benchmark_must_name_a_known_kind_and_languages():
    with pytest.raises(ValueError, match="kind 'ranking'"):
        benchmarks.Benchmark("x", "ranking", lambda ctx: {}, ("accuracy",), "english", None, data="")
    with pytest.raises(ValueError, match="languages 'all'"):
        benchmarks.Benchmark("x", "pairs", lambda ctx: {}, ("accuracy",), "english", "all", data="")


@pytest.mark.parametrize("precision, expected", [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16"),
                                                 ("fp16", "fp16")])
def test_models_are_scored_in_the_runs_precision(p, tok, model_dir, monkeypatch, precision, expected):
    """05_eval passes the run's precision to scoring (its own "auto" would pick bf16 on every GPU)."""
    seen = []
    for name in ("score_pairs", "bits_per_byte"):
        real = getattr(evaluation, name)
        monkeypatch.setattr(evaluation, name, lambda *a, _real=real, **kw: seen.append(kw["dtype"]) or _real(*a, **kw))
    p.precision = precision
    evaluate.evaluate_model(p, entries(model_dir)[0], tok, evaluate.load_benchmarks(p, log=lambda m: None))
    assert seen and set(seen) == {expected}
