"""Tests of hyperllama_lib.corpus: reading, dedup, decontamination, splits, code, Hub streams."""
from __future__ import annotations

import gzip
import hashlib
import json
import time
from pathlib import Path

import pytest
from conftest import shared_data

from hyperllama_lib import corpus
from hyperllama_lib.corpus import Document
from hyperllama_lib.errors import DataError
from hyperllama_lib.languages import LANGUAGES


def real_data_dir() -> Path:
    data = shared_data()
    if not (data / "text").is_dir():
        pytest.skip(f"reference data not found at {data}: set HYPERLLAMA_DATA to the shared data folder")
    return data


def write_gz(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def docs_of(*texts: str, lang: str = "eng") -> list[Document]:
    return [Document(t, lang, f"s{i}") for i, t in enumerate(texts)]


# ---------------------------------------------------------------- text keys


def test_normalize_and_key():
    assert corpus.normalize_text("  a\t b\n\nc  ") == "a b c"
    assert corpus.normalize_text("e\u0301") == "\u00e9"  # NFC
    assert corpus.dedup_key("  The  CAT. ") == "the cat."
    assert corpus.dedup_key("Straße") == "strasse"  # casefold, not lower


# ---------------------------------------------------------------- local files


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    write_gz(tmp_path / "text/isl/b.txt.gz", "Fyrsta lína.\n\nÖnnur  lína.\n")
    write_gz(tmp_path / "text/isl/a.txt.gz", "Önnur lína.\nA line\n")
    write_gz(tmp_path / "udhr/isl.txt.gz", "Icelandic\nMannréttindi.\n\nGrein 1.\n")
    return tmp_path


def test_read_local_corpus_sorted_files_and_normalised(tiny_data: Path):
    docs = corpus.read_local_corpus(tiny_data, "icelandic")
    assert [(d.text, d.source, d.lang) for d in docs] == [
        ("Önnur lína.", "a", "isl"),
        ("A line", "a", "isl"),
        ("Fyrsta lína.", "b", "isl"),
        ("Önnur lína.", "b", "isl"),
    ]
    assert all("Mannréttindi" not in d.text for d in docs)  # udhr/ is never read


def test_read_local_corpus_errors(tiny_data: Path, tmp_path: Path):
    with pytest.raises(DataError, match="HYPERLLAMA_DATA"):
        corpus.read_local_corpus(tmp_path / "missing", "isl")
    with pytest.raises(DataError, match="no text for language 'fao'.*have: isl"):
        corpus.read_local_corpus(tiny_data, "fao")
    with pytest.raises(ValueError, match="unknown language"):
        corpus.read_local_corpus(tiny_data, "klingon")


def test_read_local_corpus_invalid_utf8_names_file_and_line(tiny_data: Path):
    write_gz(tiny_data / "text/isl/c.txt.gz", b"good\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"c\.txt\.gz:2: not valid UTF-8"):
        corpus.read_local_corpus(tiny_data, "isl")


def test_dedup_first_occurrence_wins(tiny_data: Path):
    kept, removed = corpus.dedup(corpus.read_local_corpus(tiny_data, "isl"))
    assert removed == 1
    assert [(d.text, d.source) for d in kept] == [("Önnur lína.", "a"), ("A line", "a"), ("Fyrsta lína.", "b")]
    kept2, removed2 = corpus.dedup(docs_of("Hello  world", "hello world", "HELLO WORLD!"))
    assert (len(kept2), removed2) == (2, 1) and kept2[0].text == "Hello  world"


def test_udhr_lines_drops_header(tiny_data: Path):
    assert corpus.udhr_lines(tiny_data, "isl") == ["Mannréttindi.", "Grein 1."]
    with pytest.raises(DataError, match="fao.txt.gz not found"):
        corpus.udhr_lines(tiny_data, "fao")


def test_pair_file_sentences_plain_and_gz(tmp_path: Path):
    rows = "sen\twrong_sen\tphenomenon\nHún fer heim.\tHún fara heim.\tSV-#\nÞeir  fara.\tÞeir fer.\tSV-#\n"
    (tmp_path / "data.tsv").write_text(rows)
    write_gz(tmp_path / "gz/data.tsv.gz", rows)
    expected = {"hún fer heim.", "hún fara heim.", "þeir fara.", "þeir fer."}
    assert corpus.pair_file_sentences(tmp_path / "data.tsv") == expected
    assert corpus.pair_file_sentences(tmp_path / "gz/data.tsv.gz") == expected
    (tmp_path / "bad.tsv").write_text("good\tbad\na\tb\n")
    with pytest.raises(DataError, match="missing column.*sen"):
        corpus.pair_file_sentences(tmp_path / "bad.tsv")


# ---------------------------------------------------------------- decontamination


def test_decontaminate_matches():
    long_eval = "The cat sat on the old mat."
    keys = {corpus.dedup_key(s) for s in ["Who ran?", long_eval, "Ég fer.", "Hann kom heim í gær."]}
    docs = docs_of(
        "who  RAN?",  # 1: whole document
        "Hello there. Who ran? Nobody.",  # 2: one of its sentences
        'He said: "the cat sat on the old mat." Then he left',  # 3: contained, >= 6 words
        "Yesterday the cat sat on the old mat, twice.",  # not the same tokens: "mat ," vs "mat ."
        "The tomcat sat on the old mat.",  # whole tokens only
        "Who ran away?",  # short sentences are not matched as substrings
        "Ég fer heim.",
        "Spurði hann. Ég fer. Svo",  # segment match
        "Þá sagði hann að hann kom heim í gær .",  # 5-word eval sentence: not searched inside
    )
    kept, removed = corpus.decontaminate(docs, keys)
    assert [d.text for d in kept] == [
        "Yesterday the cat sat on the old mat, twice.",
        "The tomcat sat on the old mat.",
        "Who ran away?",
        "Ég fer heim.",
        "Þá sagði hann að hann kom heim í gær .",
    ]
    assert removed == 4


def test_decontaminate_persian_question_mark():
    keys = {corpus.dedup_key("آیا او آمد؟")}
    kept, removed = corpus.decontaminate(docs_of("سلام. آیا او آمد؟ بله.", lang="fas"), keys)
    assert (kept, removed) == ([], 1)


def test_decontaminate_empty_keys_keeps_everything():
    docs = docs_of("a b c d e f g", "x")
    assert corpus.decontaminate(docs, set()) == (docs, 0)


# ---------------------------------------------------------------- splits


def test_split_heldout_deterministic_and_order_independent():
    docs = docs_of(*[f"document number {i}" for i in range(2000)])
    train, held = corpus.split_heldout(docs, 0.1, seed=3)
    assert len(train) + len(held) == 2000 and 140 < len(held) < 260
    train_r, held_r = corpus.split_heldout(list(reversed(docs)), 0.1, seed=3)
    assert {d.text for d in held_r} == {d.text for d in held}
    assert {d.text for d in corpus.split_heldout(docs, 0.1, seed=4)[1]} != {d.text for d in held}
    assert [d.text for d in held] == [d.text for d in docs if d in held]  # input order kept


def test_split_heldout_max_docs_takes_smallest_hashes():
    docs = docs_of(*[f"line {i}" for i in range(1000)])
    _, held = corpus.split_heldout(docs, 0.2, seed=0)
    train, capped = corpus.split_heldout(docs, 0.2, seed=0, max_docs=10)
    smallest = sorted(held, key=lambda d: corpus.stable_unit(corpus.dedup_key(d.text), 0, "heldout"))[:10]
    assert {d.text for d in capped} == {d.text for d in smallest}
    assert len(train) == 990


def test_split_fraction_same_text_same_side_and_salt():
    docs = docs_of(*[f"text {i % 500}" for i in range(1000)])
    first, rest = corpus.split_fraction(docs, 0.8, seed=0, salt="english-80-20")
    assert {d.text for d in first}.isdisjoint({d.text for d in rest})
    assert 0.72 < len(first) / 1000 < 0.88
    other, _ = corpus.split_fraction(docs, 0.8, seed=0, salt="other")
    assert {d.text for d in other} != {d.text for d in first}
    assert corpus.split_fraction(docs, 0.0, 0, "x") == ([], docs)
    with pytest.raises(ValueError, match="fraction"):
        corpus.split_fraction(docs, 1.5, 0, "x")


def test_stable_unit_is_fixed():
    # sha256-based: must never change between runs or Python versions.
    assert corpus.stable_unit("hello", 0, "heldout") == corpus.stable_unit("hello", 0, "heldout")
    digest = hashlib.sha256(b"heldout\x000\x00hello").digest()
    assert corpus.stable_unit("hello", 0, "heldout") == int.from_bytes(digest[:8], "big") / 2**64
    assert corpus.stable_unit("hello", 0, "heldout") == 0.22451330815288642


# ---------------------------------------------------------------- code


def test_code_documents():
    docs = corpus.code_documents(200_000, seed=0)
    assert docs == corpus.code_documents(200_000, seed=0)
    assert docs and sum(len(d.text.encode()) for d in docs) <= 200_000
    assert all(d.lang == "code" and d.source.endswith(".py") for d in docs)
    banned = {"test", "tests", "idlelib", "site-packages"}
    assert not any(banned.intersection(d.source.split("/")[:-1]) for d in docs)
    assert any("\n" in d.text for d in docs)  # code keeps its lines
    assert [d.source for d in corpus.code_documents(200_000, seed=1)] != [d.source for d in docs]


# ---------------------------------------------------------------- Hub streams (mocked)


class FakeLoad:
    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.calls: list[tuple] = []

    def __call__(self, repo, config=None, split=None, streaming=False, **kwargs):
        self.calls.append((repo, config, split, streaming))
        return iter(self.rows)


@pytest.fixture
def fake_hub(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def install(rows: list[dict]) -> FakeLoad:
        fake = FakeLoad(rows)
        monkeypatch.setattr(datasets, "load_dataset", fake)
        return fake

    return install


def test_stream_documents(fake_hub):
    fake = fake_hub([{"text": "Tere  maailm.\nTeine rida", "id": "1"}, {"text": "  "}, {"text": "Kolmas"}])
    docs = list(corpus.stream_documents("estonian", seed=0))
    assert fake.calls == [("HuggingFaceFW/fineweb-2", LANGUAGES["est"].fineweb2_subset, "train", True)]
    assert sorted((d.text, d.lang) for d in docs) == [("Kolmas", "est"), ("Tere maailm. Teine rida", "est")]
    fake = fake_hub([{"text": "An  education page."}])
    assert [d.text for d in corpus.stream_documents("eng", seed=0)] == ["An education page."]
    assert fake.calls == [("HuggingFaceTB/smollm-corpus", "fineweb-edu-dedup", "train", True)]
    fake = fake_hub([{"blob_id": "a"}, {"blob_id": "b"}, {"blob_id": "c", "text": "x = 1\n"}])
    code = {"a": "def f():\n    return 1\n", "b": None}  # b: not UTF-8, skipped
    docs = list(corpus.stream_documents("code", seed=0, fetch=code.get))
    assert fake.calls == [("HuggingFaceTB/smollm-corpus", "python-edu", "train", True)]
    assert sorted(d.text for d in docs) == ["def f():\n    return 1", "x = 1"] and docs[0].lang == "code"
    fake_hub([{"id": "1"}])
    with pytest.raises(DataError, match="no 'text' field"):
        list(corpus.stream_documents("fao", seed=0))


# ---------------------------------------------------------------- real reference data


def test_real_corpus_all_languages():
    data = real_data_dir()
    manifest = json.loads((data / "MANIFEST.json").read_text())
    for code in LANGUAGES:
        docs = corpus.read_local_corpus(data, code)
        lines = sum(v["lines"] for k, v in manifest.items() if k.startswith(f"text/{code}/"))
        assert 0.99 * lines <= len(docs) <= lines
        assert len(corpus.udhr_lines(data, code)) > 80


def test_real_decontamination_is_fast():
    data = real_data_dir()
    start = time.perf_counter()
    blimp = corpus.blimp_sentences(data)
    docs, _ = corpus.dedup(corpus.read_local_corpus(data, "eng"))
    kept, removed = corpus.decontaminate(docs, blimp | corpus.evaluation_keys(data, "eng"))
    assert time.perf_counter() - start < 15
    assert len(blimp) > 120_000
    assert len(kept) + removed == len(docs)
    # A UD sentence planted into a longer document is found through the containment index.
    eval_doc = next(d.text for d in docs if len(d.text.split()) >= 8)
    planted = docs_of(f"Intro words here. {eval_doc} And a tail", "unrelated text")
    assert corpus.decontaminate(planted, {corpus.dedup_key(eval_doc)})[1] == 1
