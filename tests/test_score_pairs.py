"""Pair loaders (BLiMP, MultiBLiMP; local and mocked Hub), format errors, `hyperllama score-pairs`.

The paper's Hub sets (blimp-single-error, mParaRel) are tested in test_paper_eval_sets.py."""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hyperllama_lib import cli
from hyperllama_lib.evaluation import pair_sources
from hyperllama_lib.evaluation import scoring as ev
from hyperllama_lib.models import modeling

MULTIBLIMP_HEADER = ["sen", "verb", "wrong_sen", "wrong_verb", "phenomenon", "lang", "grammatical_feature",
                     "ungrammatical_feature", "child", "distance", "prefix", "metadata"]


def blimp_record(uid: str, i: int, good: str = "The cat sat.", bad: str = "The cat sit.") -> dict:
    return {"sentence_good": f"{good} {i}", "sentence_bad": f"{bad} {i}", "field": "morphology",
            "linguistics_term": "agreement", "UID": uid, "simple_LM_method": True, "pairID": str(i)}


def write_text(path: Path, text: str, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(records: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def multiblimp_row(phenomenon: str, i: int, lang: str = "swe") -> list[str]:
    return [f"Hunden skäller {i} .", "skäller", f"Hunden skälla {i} .", "skälla", phenomenon, lang, "Sing",
            "Plur", "Hunden", "1", "", "{'sent_id': 'x'}"]


def tsv(header: list[str], rows: list[list[str]]) -> str:
    return "".join("\t".join(r) + "\n" for r in [header, *rows])


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated_gz(path: Path, text: str) -> Path:
    data = gzip.compress(text.encode())
    return write_bytes(path, data[: len(data) // 2])


# ---------------------------------------------------------------- BLiMP jsonl

def test_blimp_single_files_plain_and_gz_keep_extra_columns(tmp_path):
    records = [blimp_record("p_b", i) for i in range(3)] + [blimp_record("p_a", i) for i in range(2)]
    for path in (write_text(tmp_path / "all.jsonl", jsonl(records)),
                 write_text(tmp_path / "all.jsonl.gz", jsonl(records), gz=True)):
        df = pair_sources.load_blimp_local(path)
        assert list(df.columns) == pair_sources.PAIR_COLUMNS + ["simple_LM_method"]
        assert df["paradigm"].tolist() == ["p_b"] * 3 + ["p_a"] * 2  # file order
        assert df["pair_id"].tolist() == [0, 1, 2, 0, 1]
        assert df["good"].iloc[0] == "The cat sat. 0"
    only_a = pair_sources.load_blimp_local(tmp_path / "all.jsonl", paradigms=["p_a"])
    assert set(only_a["paradigm"]) == {"p_a"} and len(only_a) == 2
    assert len(pair_sources.load_blimp_local(tmp_path / "all.jsonl", max_pairs_per_paradigm=1)) == 2
    with pytest.raises(ValueError, match="unknown BLiMP paradigm"):
        pair_sources.load_blimp_local(tmp_path / "all.jsonl", paradigms=["p_c"])


def test_blimp_folder_mixes_plain_and_gz_and_hub_field_names(tmp_path):
    write_text(tmp_path / "blimp" / "zeta.jsonl", jsonl([blimp_record("zeta", i) for i in range(2)]))
    # Hub-style record: pair_id (int) instead of pairID, no UID: the file name is the paradigm
    hub_style = [{"sentence_good": "A b.", "sentence_bad": "B a.", "field": "syntax", "pair_id": 7}]
    write_text(tmp_path / "blimp" / "alpha.jsonl.gz", jsonl(hub_style), gz=True)
    df = pair_sources.load_blimp_local(tmp_path)
    assert df["paradigm"].tolist() == ["alpha", "zeta", "zeta"]
    assert df["pair_id"].tolist() == [7, 0, 1]
    assert df["linguistics_term"].isna().tolist() == [True, False, False]
    with pytest.raises(FileNotFoundError):
        pair_sources.load_blimp_local(tmp_path / "missing")


@pytest.mark.parametrize("lines, line, message", [
    ([json.dumps(blimp_record("p", 0)), '{"sentence_good": "x",'], 2, "malformed JSON"),
    ([json.dumps(blimp_record("p", 0)), "", json.dumps({"sentence_good": "x", "UID": "p"})], 3,
     "missing or empty sentence_bad"),
    (["[1, 2]"], 1, "a JSON object expected"),
    ([json.dumps({**blimp_record("p", 0), "pairID": "seven"})], 1, "not a number"),
])
def test_blimp_malformed_lines_name_file_and_line(tmp_path, lines, line, message):
    path = write_text(tmp_path / "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(pair_sources.PairsFormatError, match=rf"bad\.jsonl, line {line}: .*{message}"):
        pair_sources.load_blimp_local(path)


def test_truncated_blimp_gz_is_a_format_error(tmp_path):
    text = jsonl([blimp_record("p", i) for i in range(200)])
    path = truncated_gz(tmp_path / "cut.jsonl.gz", text)
    with pytest.raises(pair_sources.PairsFormatError, match=r"cut\.jsonl\.gz, line \d+: unreadable \(EOFError"):
        pair_sources.load_blimp_local(path)
    assert issubclass(pair_sources.PairsFormatError, ValueError)


# ---------------------------------------------------------------- MultiBLiMP tsv

def test_multiblimp_tsv_plain_and_gz(tmp_path):
    rows = [multiblimp_row("SV-#", 0), multiblimp_row("SP-G", 1), multiblimp_row("SV-P", 2)]
    rows[1][0] = '"Hon sa\t""ja"" ."'  # pandas-style quoting: a tab and quotes inside a field
    text = tsv(MULTIBLIMP_HEADER, rows)
    for path in (write_text(tmp_path / "data.tsv", text), write_text(tmp_path / "swe.tsv.gz", text, gz=True)):
        df = pair_sources.load_multiblimp_local(path)
        assert list(df.columns[:6]) == pair_sources.PAIR_COLUMNS
        assert df["good"].tolist() == ["Hunden skäller 0 .", 'Hon sa\t"ja" .', "Hunden skäller 2 ."]
        assert df["bad"].iloc[0] == "Hunden skälla 0 ."
        assert df["paradigm"].tolist() == df["phenomenon"].tolist() == ["SV-#", "SP-G", "SV-P"]
        assert df["field"].tolist() == ["number", "gender", "person"]
        assert df["linguistics_term"].tolist() == ["subject-verb agreement", "subject-participle agreement",
                                                   "subject-verb agreement"]
        assert df["pair_id"].tolist() == [0, 1, 2]
        assert {"lang", "prefix", "metadata", "verb", "distance", "child"} <= set(df.columns)
        assert "sen" not in df.columns and set(df["lang"]) == {"swe"}


def test_multiblimp_lang_from_folder_when_the_file_has_no_lang_column(tmp_path):
    header = ["sen", "wrong_sen", "phenomenon"]
    path = write_text(tmp_path / "fao" / "data.tsv", tsv(header, [["Eg eri .", "Eg er .", "SV-P"]]))
    assert pair_sources.load_multiblimp_local(path)["lang"].tolist() == ["fao"]
    assert pair_sources.load_multiblimp_local(path, lang="isl")["lang"].tolist() == ["isl"]


@pytest.mark.parametrize("make, message", [
    (lambda p: write_text(p / "x.tsv", tsv(MULTIBLIMP_HEADER, [multiblimp_row("SV-#", 0),
                                                                multiblimp_row("SV-#", 1)[:-2]])),
     r"x\.tsv, line 3: 10 tab-separated fields, the header has 12"),
    (lambda p: write_text(p / "x.tsv", tsv(["sentence", "wrong_sen"], [["a", "b"]])),
     r"x\.tsv, line 1: missing column\(s\) sen"),
    (lambda p: write_text(p / "x.tsv", ""), r"x\.tsv: empty file"),
    (lambda p: write_text(p / "x.tsv", tsv(["sen", "wrong_sen"], [["a", "b"], ["", "c"]])),
     r"x\.tsv, line 3: empty sen"),
    (lambda p: truncated_gz(p / "x.tsv.gz", tsv(MULTIBLIMP_HEADER, [multiblimp_row("SV-#", i) for i in range(300)])),
     r"x\.tsv\.gz, line \d+: unreadable"),
    (lambda p: write_bytes(p / "x.tsv", b"sen\twrong_sen\na\tb\n\xff\xfe\tb\n"), r"x\.tsv, line 3: not UTF-8"),
])
def test_multiblimp_malformed_files_name_file_and_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(pair_sources.PairsFormatError, match=message):
        pair_sources.load_multiblimp_local(path)


def test_multiblimp_hub_downloads_iso_data_tsv(monkeypatch, tmp_path):
    calls = []

    def hf_hub_download(repo_id, filename, repo_type=None, cache_dir=None, revision=None):
        calls.append((repo_id, filename, repo_type))
        iso = filename.split("/")[0]
        rows = [multiblimp_row("SV-#", i, lang=iso) for i in range(3)]
        return str(write_text(tmp_path / "snapshot" / filename, tsv(MULTIBLIMP_HEADER, rows)))

    monkeypatch.setattr("huggingface_hub.hf_hub_download", hf_hub_download)
    df = pair_sources.load_multiblimp_hub(["fao", "isl"], max_pairs_per_paradigm=2)
    assert calls == [("jumelet/multiblimp", "fao/data.tsv", "dataset"),
                     ("jumelet/multiblimp", "isl/data.tsv", "dataset")]
    assert df.groupby("lang").size().to_dict() == {"fao": 2, "isl": 2}
    assert len(pair_sources.load_multiblimp_hub("eng")) == 3


def test_detect_pairs_format(tmp_path):
    assert pair_sources.detect_pairs_format("a/b.jsonl.gz") == pair_sources.detect_pairs_format("b.jsonl") == "blimp"
    assert pair_sources.detect_pairs_format("fao/data.tsv") == pair_sources.detect_pairs_format("x.tsv.gz") == "multiblimp"
    assert pair_sources.detect_pairs_format(tmp_path) == "blimp"
    with pytest.raises(pair_sources.PairsFormatError, match="cannot tell the format"):
        pair_sources.detect_pairs_format("pairs.csv")


# ---------------------------------------------------------------- hyperllama score-pairs

SENTENCES = ["The cat sat on the mat.", "The cats sits on the mat.", "Hunden skäller.", "Hundarna skäller.",
             "Þú ert góður maður.", "Many girls insulted themselves."]


def save_tiny_model(path: Path) -> None:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(SENTENCES * 3, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                                  eos_token="<|end_of_text|>")
    config = modeling.smollm2_config(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4,
                                     num_kv_heads=2, head_dim=8, intermediate_size=64,
                                     max_position_embeddings=64, initializer_range=0.5)
    modeling.new_model(config, seed=0).save_pretrained(path)
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scorer") / "model"
    save_tiny_model(path)
    return path


def score_pairs_cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("score-pairs", *args)


def test_score_pairs_command_on_blimp_jsonl(model_dir, tmp_path):
    records = [blimp_record("p_one", i) for i in range(3)]
    records += [blimp_record("p_two", i, "Many girls insulted themselves.", "Many girls insulted herself.")
                for i in range(2)]
    pairs_file = write_text(tmp_path / "pairs.jsonl", jsonl(records))
    res = score_pairs_cli(str(model_dir), str(pairs_file), "--out", str(tmp_path / "res.json"), "--batch-size", "3")
    assert res.returncode == 0, res.stderr
    assert "accuracy" in res.stdout and "token-mean" in res.stdout and "byte-normalised" in res.stdout
    result = json.loads((tmp_path / "res.json").read_text())
    assert result["format"] == "blimp" and result["n_pairs"] == 5 and 0 <= result["accuracy"] <= 1
    assert set(result["breakdowns"]) == {"paradigm", "field"}
    assert set(result["by_paradigm"]) == {"p_one", "p_two"}
    first = result["pairs"][0]
    assert {"good", "bad", "logp_good", "logp_bad", "correct", "n_tokens_good", "n_bytes_bad",
            "correct_token_mean", "correct_byte_norm", "paradigm"} <= set(first)

    # The same numbers in-process, with another batch size.
    model = modeling.load_model(model_dir)
    tok = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    scored, summary = ev.score_pairs(model, tok, pair_sources.load_blimp_local(pairs_file), batch_size=1,
                                     progress=False)
    for key in ev.VARIANTS:
        assert result[key] == pytest.approx(summary[key])
    np.testing.assert_allclose([p["logp_good"] for p in result["pairs"]], scored["logp_good"], atol=1e-5)
    assert [p["correct"] for p in result["pairs"]] == scored["correct"].tolist()


def test_score_pairs_command_on_gzipped_multiblimp(model_dir, tmp_path):
    rows = [multiblimp_row(ph, i, lang) for i, (ph, lang) in
            enumerate([("SV-#", "swe"), ("SV-#", "swe"), ("SP-G", "isl"), ("SV-P", "isl"), ("SV-P", "swe")])]
    pairs_file = write_text(tmp_path / "data.tsv.gz", tsv(MULTIBLIMP_HEADER, rows), gz=True)
    res = score_pairs_cli(str(model_dir), str(pairs_file), "--out", str(tmp_path / "r.json"), "--max-pairs", "4")
    assert res.returncode == 0, res.stderr
    assert "by phenomenon" in res.stdout and "by lang" in res.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["format"] == "multiblimp" and result["n_pairs"] == 4
    assert set(result["breakdowns"]) == {"paradigm", "field", "phenomenon", "lang"}
    assert sum(row["n_pairs"] for row in result["breakdowns"]["lang"].values()) == 4
    ids = [p["pair_id"] for p in result["pairs"]]
    assert ids == sorted(ids) and all("metadata" in p for p in result["pairs"])


def test_score_pairs_command_errors_are_one_line(model_dir, tmp_path, capsys):
    good_file = write_text(tmp_path / "ok.jsonl", jsonl([blimp_record("p", 0)]))
    broken = write_text(tmp_path / "broken.jsonl", jsonl([blimp_record("p", 0)]) + "{oops\n")
    (tmp_path / "no_tokenizer").mkdir()
    modeling.new_model(modeling.smollm2_config(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2,
                                               num_kv_heads=1, head_dim=8, intermediate_size=32),
                       seed=0).save_pretrained(tmp_path / "no_tokenizer")
    cases = [
        ([str(tmp_path / "missing_model"), str(good_file)], "does not exist"),
        ([str(tmp_path / "no_tokenizer"), str(good_file)], "no usable tokenizer"),
        ([str(model_dir), str(broken)], "broken.jsonl, line 2: malformed JSON"),
        ([str(model_dir), str(tmp_path / "absent.tsv")], "absent.tsv"),
        ([str(model_dir), str(good_file.with_suffix(".txt"))], "cannot tell the format"),
        ([str(model_dir), str(good_file), "--format", "multiblimp"], "missing column(s) sen, wrong_sen"),
    ]
    for args, message in cases:
        assert cli.main(["score-pairs", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):
        cli.main(["score-pairs", str(model_dir), str(good_file), "--batch-size", "0"])
    assert "positive integer" in capsys.readouterr().err
