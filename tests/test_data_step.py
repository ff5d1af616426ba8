"""01_data as a whole: the local path at smoke scale and the Hub path with the Hub mocked."""
import gzip

import numpy as np
import pandas as pd

from hyperllama_lib import corpus
from hyperllama_lib.corpus import packing
from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import data, layout


def _fake_hub(data_dir, calls):
    """datasets.load_dataset stand-in serving the real local text as FineWeb-2 / SmolLM-Corpus rows."""
    subsets = {"ekk_Latn": "est", "fao_Latn": "fao", "isl_Latn": "isl", "fas_Arab": "fas", "swe_Latn": "swe",
               "fineweb-edu-dedup": "eng"}

    def load_dataset(repo, config, split=None, streaming=False, **kw):
        calls.append((repo, config, split, streaming))
        lang = subsets[config]
        for f in sorted((data_dir / "text" / lang).glob("*.txt.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    yield {"text": line.rstrip("\n"), "id": "x"}
    return load_dataset


def test_hub_path_with_the_hub_mocked(tmp_path, data_dir, monkeypatch):
    import datasets
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(data_dir, calls))
    p = load_params("smoke", {"run_dir": str(tmp_path), "data_source": "hub"})
    stats = data.prepare(p, log=lambda m: None)
    requested = {(repo, config) for repo, config, _, _ in calls}
    assert requested == {("HuggingFaceFW/fineweb-2", s) for s in ("ekk_Latn", "fao_Latn", "isl_Latn", "fas_Arab",
                                                                  "swe_Latn")} | {("HuggingFaceTB/smollm-corpus",
                                                                                   "fineweb-edu-dedup")}
    assert all(split == "train" and streaming for _, _, split, streaming in calls)
    dp = layout.of(p).data
    for name in ["est", "fao", "isl", "fas", "swe", "multilingual", "seed", "base"]:
        assert len(packing.PackedTokens(dp.train(name))) > 0
    assert set(stats.lang.head(5)) == {"est", "fao", "isl", "fas", "swe"}


def test_local_smoke_data_step(tmp_path, data_dir):
    p = load_params("smoke", {"run_dir": str(tmp_path)})
    stats = data.prepare(p, log=lambda m: None).set_index("lang")
    plan = data.load_plan(p)
    langs = ["est", "fao", "isl", "fas", "swe"]
    # UniMax over characters: equal shares here (no language is capped at smoke scale)
    assert [plan["unimax_chars"][lang] for lang in langs] == [p.char_budget / 5] * 5
    assert stats.loc["multilingual", "stream_tokens"] == sum(stats.loc[lang, "stream_tokens"] for lang in langs)
    # replay: present, a small share of each mix
    assert all(0 < stats.loc[lang, "replay_share_samples"] < 0.2 for lang in langs)
    # MultiBLiMP pairs built from held-out UD files for English and every target language, with counts;
    # their sentences are evaluation keys, so no training document contains them
    dp = layout.of(p).data
    counts = data.load_multiblimp_counts(p).set_index("lang")
    assert list(counts.index) == ["eng", *langs] and (counts.total > 0).all()
    assert dp.multiblimp_counts.with_suffix(".md").exists()
    for lang in ["eng", *langs]:
        built = corpus.pair_file_sentences(dp.multiblimp(lang))
        assert len(built) > 0 and built <= data.eval_keys(p, lang)
    # held-out text never overlaps training text
    for lang in langs:
        held = set(dp.heldout(lang).read_text().splitlines())
        assert held and not held & set(dp.udhr(lang).read_text().splitlines())
    # deterministic: a second run in a fresh folder gives identical token streams
    q = load_params("smoke", {"run_dir": str(tmp_path / "again")})
    data.prepare(q, log=lambda m: None)
    for name in ["est", "multilingual", "seed"]:
        assert dp.train(name).read_bytes() == layout.of(q).data.train(name).read_bytes()
    assert isinstance(stats, pd.DataFrame)


def test_take_docs_whole_passes_then_the_start_of_one_more():
    out = data.take_docs(np.random.default_rng(0), 10, 2.5)
    assert len(out) == 25 and sorted(out[:10]) == sorted(out[10:20]) == list(range(10))
    assert len(set(out[20:].tolist())) == 5
    assert len(data.take_docs(np.random.default_rng(0), 10, 0)) == 0


def test_replay_scaled_by_document_share():
    class P:
        replay_english_fraction, replay_code_fraction, replay_reference_lang = 0.01, 0.05, "swe"
    counts = data.replay_counts(P, {"swe": 1000, "fao": 10}, n_english=10_000, n_code=2_000)
    assert counts["swe"] == (100, 100)  # 1% of English, 5% of code
    assert counts["fao"] == (1, 1)  # scaled by 10 / 1000


def test_english_seed_split_is_split_fraction():
    """The recipe splits English by each document's unit, as corpus.split_fraction does on documents."""
    docs = [corpus.Document(f"An English  document, number {i}.", "eng", "s") for i in range(500)]
    first, rest = corpus.split_fraction(docs, 0.8, 7, "english-80-20")
    units = data._measure([d.text for d in docs], 7)["units"]
    assert [d.text for d in first] == [docs[i].text for i in np.flatnonzero(units < 0.8)]
    assert [d.text for d in rest] == [docs[i].text for i in np.flatnonzero(units >= 0.8)]
