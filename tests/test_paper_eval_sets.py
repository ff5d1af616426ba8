"""The paper's own evaluation sets (liu-nlp/blimp-single-error, liu-nlp/minimal_pair_mpararel, the released
MultiBLiMP) from a mocked Hub: the plausible layouts, the benchmark entries, eval_source local, bad layouts."""
from __future__ import annotations

import fnmatch
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_score_pairs import save_tiny_model
from transformers import PreTrainedTokenizerFast

from hyperllama_lib import artifacts
from hyperllama_lib.errors import DataError, PairsFormatError, ParamError
from hyperllama_lib.evaluation import benchmarks, hub_tables, pair_sources
from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import evaluate, layout

BLIMP_SE = pair_sources.BLIMP_SINGLE_ERROR_HUB_ID
MPARAREL = pair_sources.MPARAREL_HUB_ID
MULTIBLIMP = pair_sources.MULTIBLIMP_HUB_ID
ALL_LANGS = ["eng", "est", "fao", "isl", "fas", "swe"]
MB_HEADER = "sen\twrong_sen\tphenomenon\tlang\n"


class FakeHub:
    """snapshot_download and hf_hub_download over folders built in tmp_path; records every call."""

    def __init__(self, root: Path):
        self.root, self.repos, self.calls = root, {}, []

    def repo(self, repo_id: str) -> Path:
        return self.repos.setdefault(repo_id, self.root / "repos" / repo_id.replace("/", "--"))

    def snapshot_download(self, repo_id, repo_type=None, revision=None, cache_dir=None, allow_patterns=None,
                          **kwargs):
        self.calls.append(("snapshot", repo_id, repo_type))
        if repo_id not in self.repos:
            from huggingface_hub.errors import LocalEntryNotFoundError
            raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder\nfor the specified "
                                          "revision on the local disk and outgoing traffic has been disabled.")
        snapshot = self.root / "cache" / repo_id.replace("/", "--")
        shutil.rmtree(snapshot, ignore_errors=True)
        for f in self.repos[repo_id].rglob("*"):
            rel = f.relative_to(self.repos[repo_id]).as_posix()
            if f.is_file() and (allow_patterns is None or any(fnmatch.fnmatch(rel, pat) for pat in allow_patterns)):
                (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, snapshot / rel)
        return str(snapshot)

    def hf_hub_download(self, repo_id, filename, repo_type=None, revision=None, cache_dir=None, **kwargs):
        self.calls.append(("file", repo_id, filename, repo_type))
        path = self.repos.get(repo_id, self.root / "nowhere") / filename
        if not path.is_file():
            from huggingface_hub.errors import EntryNotFoundError
            raise EntryNotFoundError(f"404 Client Error. Entry Not Found for url: .../{repo_id}/{filename}")
        return str(path)

    def write(self, repo_id: str, path: str, rows: list[dict] | None = None, text: str | None = None) -> None:
        target = self.repo(repo_id) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if text is not None:
            target.write_text(text, encoding="utf-8")
        elif path.endswith(".parquet"):
            pd.DataFrame(rows).to_parquet(target)
        elif path.endswith(".jsonl"):
            target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        elif path.endswith(".json"):
            target.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        else:
            pd.DataFrame(rows).to_csv(target, sep="\t" if path.endswith(".tsv") else ",", index=False)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake.snapshot_download)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake.hf_hub_download)
    return fake


def blimp_rows(uid: str, n: int, with_uid: bool = True) -> list[dict]:
    rows = [{"sentence_good": f"The cat {i} sat.", "sentence_bad": f"The cat {i} sit.", "field": "morphology",
             "linguistics_term": "agreement", "pairID": i} for i in range(n)]
    return [{**r, "UID": uid} if with_uid else r for r in rows]


# ---------------------------------------------------------------- blimp-single-error layouts

def per_paradigm_parquet(hub):  # nyu-mll/blimp's shape: one config per paradigm, a train split
    for uid in ("island", "agreement"):
        hub.write(BLIMP_SE, f"{uid}/train-00000-of-00001.parquet", blimp_rows(uid, 4))
    hub.write(BLIMP_SE, "README.md", text="---\nconfigs: ...\n---\n")


def single_jsonl_with_splits(hub):  # one table with a UID column; test is preferred over train
    hub.write(BLIMP_SE, "data/test.jsonl", blimp_rows("island", 4) + blimp_rows("agreement", 4))
    hub.write(BLIMP_SE, "data/train.jsonl", blimp_rows("train_only", 9))


def config_folders_without_uid(hub):  # data/<config>/<split>-*.parquet, sharded; the config is the paradigm
    for uid in ("island", "agreement"):
        rows = blimp_rows(uid, 4, with_uid=False)
        hub.write(BLIMP_SE, f"data/{uid}/test-00000-of-00002.parquet", rows[:2])
        hub.write(BLIMP_SE, f"data/{uid}/test-00001-of-00002.parquet", rows[2:])


def one_csv_in_other_names(hub):  # a single csv; good/bad/paradigm columns, "NA" a word not a missing value
    rows = [{"good": f"NA cat {i} sat.", "bad": f"NA cat {i} sit.", "paradigm": uid}
            for uid in ("island", "agreement") for i in range(4)]
    hub.write(BLIMP_SE, "blimp_single_error.csv", rows)


@pytest.mark.parametrize("layout_of", [per_paradigm_parquet, single_jsonl_with_splits, config_folders_without_uid,
                                       one_csv_in_other_names])
def test_blimp_single_error_layouts(hub, layout_of):
    layout_of(hub)
    df = pair_sources.load_blimp_single_error_hub(max_pairs_per_paradigm=3)
    assert list(df.columns[:6]) == pair_sources.PAIR_COLUMNS and set(df["lang"]) == {"eng"}
    assert df.groupby("paradigm").size().to_dict() == {"agreement": 3, "island": 3}
    assert df["good"].str.contains(" sat.").all() and df["bad"].str.contains(" sit.").all()
    assert hub.calls == [("snapshot", BLIMP_SE, "dataset")]
    assert set(pair_sources.load_blimp_single_error_hub(paradigms=["island"])["paradigm"]) == {"island"}
    with pytest.raises(ParamError, match="unknown paradigm"):
        pair_sources.load_blimp_single_error_hub(paradigms=["nope"])


def test_the_subsample_is_the_same_as_local_blimps_and_keeps_order(hub, tmp_path):
    rows = blimp_rows("island", 12) + blimp_rows("agreement", 12)
    hub.write(BLIMP_SE, "data/test.jsonl", rows)
    df = pair_sources.load_blimp_single_error_hub(max_pairs_per_paradigm=4, seed=3)
    (tmp_path / "local.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    local = pair_sources.load_blimp_local(tmp_path / "local.jsonl", max_pairs_per_paradigm=4, seed=3)
    assert df[["paradigm", "pair_id", "good"]].values.tolist() == local[["paradigm", "pair_id", "good"]].values.tolist()
    assert df["pair_id"].tolist() != list(range(4)) * 2  # a sample, not the first four


# ---------------------------------------------------------------- mParaRel layouts

FACTS = {"en": ("Paris is the capital of France.", "Rome is the capital of France."),
         "sv": ("Paris är Frankrikes huvudstad.", "Rom är Frankrikes huvudstad."),
         "is": ("París er höfuðborg Frakklands.", "Róm er höfuðborg Frakklands."),
         "de": ("Paris ist die Hauptstadt Frankreichs.", "Rom ist die Hauptstadt Frankreichs.")}


def per_language_configs(hub):  # data/<iso1>/test-*.parquet, sentence columns, a relation column
    for iso, (good, bad) in FACTS.items():
        rows = [{"sentence_good": good, "sentence_bad": bad, "relation": rel, "sub_label": "France"}
                for rel in ("P36", "P30") for _ in range(3)]
        hub.write(MPARAREL, f"data/{iso}/test-00000-of-00001.parquet", rows)


def one_table_with_a_language_column(hub):  # one jsonl; languages as ISO 639-3 codes and English names
    labels = {"en": "eng", "sv": "Swedish", "is": "isl", "de": "deu"}
    rows = [{"language": labels[iso], "correct": good, "incorrect": bad, "predicate_id": rel}
            for iso, (good, bad) in FACTS.items() for rel in ("P36", "P30") for _ in range(3)]
    hub.write(MPARAREL, "train.jsonl", rows)


def templates_per_language_file(hub):  # mParaRel's own shape: template + subject + right and wrong object
    templates = {"en": "[Y] is the capital of [X].", "sv": "[Y] är huvudstad i [X].", "is": "[Y] er höfuðborg [X].",
                 "de": "[Y] ist die Hauptstadt von [X]."}
    for iso, template in templates.items():
        rows = [{"relation": rel, "template": template, "sub_label": "France", "obj_label": ["Paris", "Paree"],
                 "wrong_obj_label": "Rome"} for rel in ("P36", "P30") for _ in range(3)]
        hub.write(MPARAREL, f"{iso}.json", rows)


def relation_files_in_language_folders(hub):  # <lang>/<relation>.tsv with true/false columns
    for iso, (good, bad) in FACTS.items():
        for rel in ("P36", "P30"):
            hub.write(MPARAREL, f"{iso}/{rel}.tsv", [{"true": good, "false": bad}] * 3)


@pytest.mark.parametrize("layout_of", [per_language_configs, one_table_with_a_language_column,
                                       templates_per_language_file, relation_files_in_language_folders])
def test_mpararel_layouts(hub, layout_of):
    layout_of(hub)
    df = pair_sources.load_mpararel_hub(langs=["eng", "isl", "swe", "fao"], max_pairs_per_relation=2)
    # German is not ours; Faroese is not in the data: neither gives pairs
    assert df.groupby(["lang", "paradigm"]).size().to_dict() == {
        (lang, rel): 2 for lang in ("eng", "isl", "swe") for rel in ("P30", "P36")}
    eng = df[df["lang"] == "eng"]
    assert eng["good"].str.startswith("Paris").all() and eng["bad"].str.startswith("Rom").all()
    assert set(pair_sources.load_mpararel_hub()["lang"]) == {"eng", "isl", "swe"}  # every language of ours


def test_mpararel_columns_can_be_named(hub):
    per_language_configs(hub)
    flipped = pair_sources.load_mpararel_hub(langs=["eng"], good_column="sentence_bad", bad_column="sentence_good",
                                             relation_column="sub_label")
    assert flipped["good"].str.startswith("Rome").all() and set(flipped["paradigm"]) == {"France"}
    with pytest.raises(PairsFormatError, match=r"data/de/test-00000-of-00001\.parquet: no column 'truth' "
                                               r"for the good sentence \(columns: sentence_good, sentence_bad"):
        pair_sources.load_mpararel_hub(good_column="truth")


# ---------------------------------------------------------------- bad layouts: one line, file and columns

@pytest.mark.parametrize("make, message", [
    (lambda hub: hub.write(MPARAREL, "data/en/test-0.parquet", [{"left": "a", "right": "b", "relation": "P1"}]),
     r"^liu-nlp/minimal_pair_mpararel: data/en/test-0\.parquet: no good and bad sentence columns .* "
     r"columns: left, right, relation$"),
    (lambda hub: hub.write(MPARAREL, "pairs.jsonl", [{"sentence_good": "a", "sentence_bad": "b"}]),
     r"^liu-nlp/minimal_pair_mpararel: pairs\.jsonl: no language column .*config 'pairs'.*"
     r"columns: sentence_good, sentence_bad$"),
    (lambda hub: hub.write(MPARAREL, "x.jsonl", [{"lang": "de", "good": "a", "bad": "b"}]),
     r"^liu-nlp/minimal_pair_mpararel: none of its language labels \(de\) is one of ours"),
    (lambda hub: hub.write(MPARAREL, "en/test.csv", [{"good": "a", "bad": ""}]),
     r"^liu-nlp/minimal_pair_mpararel: en/test\.csv, row 0: no good or bad"),
    (lambda hub: hub.write(MPARAREL, "en/test.parquet", text="not parquet"),
     r"^liu-nlp/minimal_pair_mpararel: en/test\.parquet: unreadable as parquet \("),
    (lambda hub: hub.write(MPARAREL, "en.json", text='{"version": 1, "note": "x"}'),
     r"^liu-nlp/minimal_pair_mpararel: en\.json: a JSON object that is not a table \(keys: version, note\)$"),
    (lambda hub: hub.write(MPARAREL, "README.md", text="# no tables\n"),
     r"^liu-nlp/minimal_pair_mpararel: no table files in the dataset"),
])
def test_a_layout_we_cannot_read_is_one_line_naming_the_file_and_columns(hub, make, message):
    make(hub)
    with pytest.raises(PairsFormatError) as err:
        pair_sources.load_mpararel_hub()
    assert "\n" not in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)


def test_the_bad_row_is_named_even_in_a_table_of_good_ones(hub):
    rows = blimp_rows("island", 5)
    rows[3]["sentence_bad"] = None
    hub.write(BLIMP_SE, "island/test-00000-of-00001.parquet", rows)
    with pytest.raises(PairsFormatError, match=r"^liu-nlp/blimp-single-error: island/test-00000-of-00001\.parquet, "
                                               r"row 3: no sentence_good or sentence_bad"):
        pair_sources.load_blimp_single_error_hub()


def test_config_and_split_of_repo_files():
    cases = {"data/test-00000-of-00001.parquet": ("default", "test"), "en/train-0.parquet": ("en", "train"),
             "data/en/validation.jsonl": ("en", "validation"), "en/test/0000.parquet": ("en", "test"),
             "test/en.jsonl": ("en", "test"), "adjunct_island.jsonl": ("adjunct_island", None),
             "eng/data.tsv": ("eng", None), "sv/P36.tsv": ("sv", None), "dev.csv": ("default", "validation")}
    for path, expected in cases.items():
        assert hub_tables._config_and_split(hub_tables.PurePosixPath(path)) == expected, path


def test_an_offline_hf_cache_serves_the_sets_through_the_real_huggingface_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with HF_HUB_CACHE: snapshot_download and hf_hub_download answer from the cache."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo_id, path in ((BLIMP_SE, "island/train-00000-of-00001.parquet"), (MULTIBLIMP, "fao/data.tsv")):
        repo = tmp_path / "cache" / f"datasets--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        (repo / "snapshots" / commit / path).parent.mkdir(parents=True)
        if path.endswith(".parquet"):
            pd.DataFrame(blimp_rows("island", 3)).to_parquet(repo / "snapshots" / commit / path)
        else:
            (repo / "snapshots" / commit / path).write_text(MB_HEADER + "Eg eri.\tEg er.\tSV-P\tfao\n")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    df = pair_sources.load_blimp_single_error_hub()
    assert df["paradigm"].tolist() == ["island"] * 3 and "UID" not in df.columns
    assert pair_sources.load_multiblimp_hub("fao")["good"].tolist() == ["Eg eri."]
    with pytest.raises(DataError, match=r"^cannot fetch the dataset liu-nlp/minimal_pair_mpararel from the Hub "
                                        r"\(LocalEntryNotFoundError"):
        pair_sources.load_mpararel_hub()


# ---------------------------------------------------------------- MultiBLiMP and the benchmark entries

def multiblimp_files(hub, langs=ALL_LANGS):
    for lang in langs:
        hub.write(MULTIBLIMP, f"{lang}/data.tsv", text=MB_HEADER + f"Hunden {lang} skäller.\tHunden {lang} skälla."
                                                   f"\tSV-#\t{lang}\nDu {lang} är.\tDu {lang} är er.\tSV-P\t{lang}\n")


def paper_sets(hub):
    per_paradigm_parquet(hub)
    per_language_configs(hub)
    multiblimp_files(hub)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    save_tiny_model(path)
    return path


def run_params(tmp_path, **overrides):
    p = load_params("smoke", {"run_dir": str(tmp_path / "run"), "data_dir": str(tmp_path / "data"),
                              "langs": ALL_LANGS[1:], "device": "cpu", "blimp_pairs_per_paradigm": 3,
                              "mpararel_pairs_per_relation": 2, **overrides}, need_data=False)
    (p.data_path / "blimp").mkdir(parents=True)
    (p.data_path / "blimp" / "a.jsonl").write_text(json.dumps(blimp_rows("a", 1)[0]) + "\n")
    return p


def test_multiblimp_comes_from_the_hub_for_all_six_languages(hub, tmp_path):
    multiblimp_files(hub)
    p = run_params(tmp_path, eval_source="hub")
    loaded = benchmarks.load_multiblimp(benchmarks.Context(layout.of(p).data, p, log=lambda m: None))
    assert list(loaded) == ALL_LANGS and {source for _, source in loaded.values()} == {"released"}
    assert [c[2] for c in hub.calls] == [f"{lang}/data.tsv" for lang in ALL_LANGS]
    assert {c[1] for c in hub.calls} == {MULTIBLIMP} and loaded["fas"][0]["good"].iloc[0] == "Hunden fas skäller."


def test_a_language_the_hub_does_not_give_stops_in_one_line(hub, tmp_path):
    multiblimp_files(hub, [lang for lang in ALL_LANGS if lang != "fao"])
    p = run_params(tmp_path, eval_source="hub")
    with pytest.raises(DataError, match=r"cannot fetch fao/data\.tsv of the dataset jumelet/multiblimp from the "
                                        r"Hub \(EntryNotFoundError: 404") as err:
        benchmarks.load_multiblimp(benchmarks.Context(layout.of(p).data, p, log=lambda m: None))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"cannot fetch the dataset liu-nlp/blimp-single-error from the Hub "
                                        r"\(LocalEntryNotFoundError: Cannot find .* traffic has been disabled\.\)"):
        evaluate.load_benchmarks(p, log=lambda m: None)


def test_the_paper_sets_give_rows_for_final_models_and_checkpoints(hub, tmp_path, model_dir):
    paper_sets(hub)
    p = run_params(tmp_path, eval_source="hub")
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    loaded = evaluate.load_benchmarks(p, log=lambda m: None)
    final = evaluate.ModelEntry("cpt-1x-swe", "cpt", "1x", "swe", model_dir, "cpt/1x/swe", langs=["eng", *p.langs])
    ckpt = evaluate.ModelEntry("cpt-1x-swe", "cpt", "1x", "swe", model_dir, "cpt/1x/swe", step=2, final=False,
                               langs=["eng", "swe"])
    rows = evaluate.evaluate_model(p, final, tok, loaded)
    pairs = rows[rows.benchmark.isin(["blimp-single-error", "multiblimp", "mpararel"])]
    assert list(dict.fromkeys(zip(pairs.benchmark, pairs.lang))) == [
        ("blimp-single-error", "eng"), *[("multiblimp", lang) for lang in ALL_LANGS],
        ("mpararel", "eng"), ("mpararel", "isl"), ("mpararel", "swe")]  # mParaRel here has no est, fao, fas
    assert (pairs.source == "released").all()
    bse = rows[rows.benchmark == "blimp-single-error"].set_index("metric").value
    assert list(bse.index) == ["accuracy", "accuracy_token_mean", "accuracy_byte_norm", "n_pairs",
                               "accuracy:agreement", "accuracy:island"]
    assert bse["n_pairs"] == 6 and 0 <= bse["accuracy"] <= 1
    swe = rows[(rows.benchmark == "mpararel") & (rows.lang == "swe")].set_index("metric").value
    assert swe["n_pairs"] == 4 and {"accuracy:P30", "accuracy:P36"} <= set(swe.index)
    ckpt_rows = evaluate.evaluate_model(p, ckpt, tok, loaded)
    assert list(dict.fromkeys(zip(ckpt_rows.benchmark, ckpt_rows.lang))) == [
        ("blimp", "eng"), ("blimp-single-error", "eng"), ("multiblimp", "swe"), ("mpararel", "swe")]
    # the data decides whether rows are current: changed pairs, another fingerprint
    before = artifacts.fingerprint(benchmarks.data_fingerprint_input(benchmarks.BENCHMARKS[1],
                                                                                loaded["blimp-single-error"]))
    hub.write(BLIMP_SE, "island/train-00000-of-00001.parquet", blimp_rows("island", 4)[::-1])
    again = benchmarks.load_blimp_single_error(benchmarks.Context(layout.of(p).data, p, log=lambda m: None))
    assert artifacts.fingerprint(benchmarks.data_fingerprint_input(benchmarks.BENCHMARKS[1], again)) != before
    assert all(b.fingerprint_data for b in benchmarks.BENCHMARKS if b.name in ("blimp-single-error", "mpararel"))


def test_eval_source_local_asks_the_hub_for_nothing(hub, tmp_path):
    paper_sets(hub)
    p = run_params(tmp_path)
    assert p.eval_source == "local"
    loaded = evaluate.load_benchmarks(p, log=lambda m: None)
    assert hub.calls == []
    assert loaded["blimp-single-error"] == loaded["mpararel"] == {} and loaded["multiblimp"] == {}
    assert list(loaded["blimp"]) == ["eng"]
