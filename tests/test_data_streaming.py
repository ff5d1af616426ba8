"""01_data's Hub path at scale: streamed documents, hash dedup, decontamination, held-out split, UniMax cut,
tokenisation in a process pool into memory-mapped token files, mixtures built from document numbers.
The Hub (datasets.load_dataset, the Software Heritage download) is mocked with the real text of ../shared/data."""
from __future__ import annotations

import collections
import gzip
import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from hyperllama_lib import corpus
from hyperllama_lib.corpus import Document, hub, packing
from hyperllama_lib.corpus import tokenizer as tok_lib
from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import data, layout

LANGS = ["fao", "isl"]
SUBSETS = {"fao_Latn": "fao", "isl_Latn": "isl", "fineweb-edu-dedup": "eng"}
N_DUPLICATES = 40  # Faroese lines served a second time, with other whitespace, late in the stream
CODE_FILES = ["json/decoder.py", "textwrap.py", "shlex.py", "fractions.py", "string.py", "bisect.py"]


def _lines(data_dir: Path, lang: str) -> list[str]:
    out = []
    for f in sorted((data_dir / "text" / lang).glob("*.txt.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            out += [line.rstrip("\n") for line in fh]
    return out


class FakeStream:
    """What datasets.load_dataset(..., streaming=True) returns, as far as 01_data uses it."""

    def __init__(self, rows: list[dict], calls: list):
        self.rows, self.calls = rows, calls

    def __iter__(self):
        return iter(self.rows)

    def shuffle(self, seed, buffer_size):
        self.calls.append(("shuffle", seed, buffer_size))
        rows = list(self.rows)
        random.Random(seed).shuffle(rows)
        return FakeStream(rows, self.calls)


def _rows(data_dir: Path, config: str) -> list[dict]:
    if config == "python-edu":
        return [{"blob_id": f"blob-{i}", "repo_name": "x/y", "path": name} for i, name in enumerate(CODE_FILES)]
    lines = _lines(data_dir, SUBSETS[config])
    if config == "fao_Latn":
        lines += ["\t" + line.replace(" ", "  ") + " " for line in lines[:N_DUPLICATES]]
    return [{"text": line, "id": str(i)} for i, line in enumerate(lines)]


def _fetch(blob_id: str) -> str | None:
    i = int(blob_id.split("-")[1])
    if i == 0:
        return None  # not UTF-8: skipped
    return (Path(sysconfig.get_paths()["stdlib"]) / CODE_FILES[i]).read_text()


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    from conftest import shared_data

    data_dir = shared_data()
    if not (data_dir / "text").is_dir():
        pytest.skip(f"real data not found at {data_dir}: set HYPERLLAMA_DATA or put ../shared/data beside the repo")
    datasets = pytest.importorskip("datasets")
    mp = pytest.MonkeyPatch()
    calls: list = []

    def load_dataset(repo, config, split=None, streaming=False, **kw):
        calls.append((repo, config, split, streaming))
        return FakeStream(_rows(data_dir, config), calls)

    # Evaluation sentences: every 50th line of a language, so some whole documents and, through
    # containment and sentence matches, some longer ones are removed.
    evals = {lang: {corpus.dedup_key(x) for x in _lines(data_dir, lang)[::50] if x.strip()} for lang in ["eng", *LANGS]}
    fetched: list = []
    mp.setattr(datasets, "load_dataset", load_dataset)
    mp.setattr(hub, "fetch_software_heritage", lambda b: fetched.append(b) or _fetch(b))
    mp.setattr(data, "eval_keys", lambda p, lang: evals[lang])
    mp.setattr(data, "build_multiblimp", lambda p, dp, log: [])  # covered by test_data_step; slow
    run = tmp_path_factory.mktemp("hub")
    p = load_params("smoke", {"run_dir": str(run), "data_dir": str(data_dir), "data_source": "hub", "langs": LANGS,
                              "max_docs_per_lang": None, "char_budget": 400_000, "code_source": "python-edu",
                              "data_workers": 2, "heldout_max_docs": 20})
    try:
        stats = data.prepare(p, log=lambda m: None).set_index("lang")
    finally:
        mp.undo()
    tok = tok_lib.load_tokenizer(layout.of(p).data.tokenizer)
    return {"p": p, "stats": stats, "calls": calls, "fetched": fetched, "evals": evals, "tok": tok,
            "data_dir": data_dir, "dp": layout.of(p).data}


def _docs(path: Path) -> list[tuple[int, ...]]:
    packed = packing.PackedTokens(path)
    return [tuple(packed.document(i).tolist()) for i in range(packed.n_docs)]


def _split_at_bos(path: Path, bos: int) -> list[tuple[int, ...]]:
    tokens = np.asarray(packing.PackedTokens(path).tokens)
    starts = np.flatnonzero(tokens == bos).tolist() + [len(tokens)]
    assert starts[0] == 0
    return [tuple(tokens[a:b].tolist()) for a, b in zip(starts, starts[1:])]


def _text(tok, ids) -> str:
    return tok.decode(list(ids[1:]))


def test_streams_are_requested_shuffled_and_python_edu_is_downloaded(hub_run):
    p, calls = hub_run["p"], hub_run["calls"]
    loads = {c for c in calls if c[0] != "shuffle"}
    assert loads == {("HuggingFaceFW/fineweb-2", "fao_Latn", "train", True),
                     ("HuggingFaceFW/fineweb-2", "isl_Latn", "train", True),
                     ("HuggingFaceTB/smollm-corpus", "fineweb-edu-dedup", "train", True),
                     ("HuggingFaceTB/smollm-corpus", "python-edu", "train", True)}
    assert [c for c in calls if c[0] == "shuffle"] == [("shuffle", p.seed, corpus.SHUFFLE_BUFFER)] * 4
    assert sorted(hub_run["fetched"]) == sorted(f"blob-{i}" for i in range(len(CODE_FILES)))
    code = {_text(hub_run["tok"], d) for d in _docs(hub_run["dp"].docs("code"))}
    pieces = {d.text for i in range(1, len(CODE_FILES))
              for d in corpus.chunk_code([Document(_fetch(f"blob-{i}"), "code", "x")], p.code_chunk_chars)}
    assert code and code <= pieces
    assert not hub_run["dp"].staging.exists()  # the staged text is gone once tokenised


def test_dedup_decontamination_and_heldout_equal_the_local_rules(hub_run):
    """Faroese is read to its end (its text is below the staging cap), so every count and the held-out
    set must be exactly what the in-memory rules give on the whole corpus."""
    p, stats, dp, tok = hub_run["p"], hub_run["stats"], hub_run["dp"], hub_run["tok"]
    texts = map(corpus.normalize_text, (r["text"] for r in _rows(hub_run["data_dir"], "fao_Latn")))
    raw = [Document(t, "fao", "x") for t in texts if t]
    deduped, n_dup = corpus.dedup(raw)
    clean, n_contam = corpus.decontaminate(deduped, hub_run["evals"]["fao"])
    _, held = corpus.split_heldout(clean, p.heldout_fraction, p.seed, p.heldout_max_docs)
    assert n_dup >= N_DUPLICATES and stats.loc["fao", "duplicates_removed"] == n_dup
    assert n_contam > 0 and stats.loc["fao", "decontaminated"] == n_contam
    assert set(dp.heldout("fao").read_text().splitlines()) == {d.text for d in held}
    assert stats.loc["fao", "docs_raw"] == len(raw)
    train = [_text(tok, d) for d in _docs(dp.docs("fao"))]
    keys = [corpus.dedup_key(t) for t in train]
    assert len(keys) == len(set(keys)) == stats.loc["fao", "train_docs"]


def test_no_heldout_or_evaluation_text_in_training(hub_run):
    dp, tok = hub_run["dp"], hub_run["tok"]
    for lang in ["eng", *LANGS]:
        held = {corpus.dedup_key(x) for x in dp.heldout(lang).read_text().splitlines()}
        forbidden = hub_run["evals"][lang] | held
        index = corpus.contamination_index(forbidden)
        train = [_text(tok, d) for d in _docs(dp.docs(lang))]
        assert held and train
        assert not [t for t in train if corpus.is_contaminated(t, forbidden, index)]


def test_budgets_and_mixtures_are_target_plus_replay(hub_run):
    p, stats, dp, tok = hub_run["p"], hub_run["stats"], hub_run["dp"], hub_run["tok"]
    plan = data.load_plan(p)
    bos = plan["bos_token_id"]
    eng, code = set(_docs(dp.docs("eng"))), set(_docs(dp.docs("code")))
    mixtures = collections.Counter()
    for lang in LANGS:
        own = set(_docs(dp.docs(lang)))
        mixture = _split_at_bos(dp.train(lang), bos)
        mixtures.update(mixture)
        target = [d for d in mixture if d in own]
        # the staging cap: no language is read beyond char_budget (plus the document that crosses it)
        longest = max(len(_text(tok, d)) for d in own)
        assert plan["available_chars"][lang] < p.char_budget + longest
        # the UniMax cut: the target part holds the allocated characters, the last document may cross
        alloc = plan["unimax_chars"][lang]
        chars = sum(len(_text(tok, d)) for d in target)
        assert alloc <= chars < alloc + longest
        assert sum(map(len, target)) == stats.loc[lang, "target_tokens"]
        n_eng = sum(d in eng for d in mixture)
        n_code = sum(d in code for d in mixture)
        assert len(target) + n_eng + n_code == len(mixture)
        assert (n_eng, n_code) == (stats.loc[lang, "replay_english_docs"], stats.loc[lang, "replay_code_docs"])
        assert n_eng + n_code > 0
    # the jointly trained model sees exactly the union of the language mixtures
    assert collections.Counter(_split_at_bos(dp.train("multilingual"), bos)) == mixtures
    # the seed: code passes first, then English and code; the bases: the other English documents
    seed_docs, base_docs = _split_at_bos(dp.train("seed"), bos), _split_at_bos(dp.train("base"), bos)
    assert set(base_docs) | {d for d in seed_docs if d in eng} == eng
    assert not set(base_docs) & set(seed_docs)
    phase1 = int(p.seed_code_epochs) * len(code)
    assert all(d in code for d in seed_docs[:phase1]) and collections.Counter(seed_docs[:phase1]) == \
        collections.Counter({d: int(p.seed_code_epochs) for d in code})
    assert sum(map(len, seed_docs[:phase1])) == plan["seed_phase_tokens"]["code"]


def test_token_files_are_memory_mapped_with_offsets(hub_run):
    dp = hub_run["dp"]
    for name in ["fao", "eng", "code"]:
        packed = packing.PackedTokens(dp.docs(name))
        assert isinstance(packed.tokens, np.memmap) and isinstance(packed.offsets, np.memmap)
        assert packed.offsets[-1] == packed.n_tokens and (np.diff(packed.offsets) > 0).all()
        assert isinstance(packed.document(0), np.memmap)
    stream = packing.PackedTokens(dp.train("fao"))
    assert isinstance(stream.tokens, np.memmap) and stream.offsets is None  # stage streams keep the old format
    stream.verify()


def test_pool_tokenisation_equals_single_process(hub_run, tmp_path):
    tok = hub_run["tok"]
    texts = [t for t in map(corpus.normalize_text, _lines(hub_run["data_dir"], "fas")[:1500]) if t]
    texts.append("literal <|begin_of_text|> stays text")
    staged = tmp_path / "fas.jsonl.gz"
    data._stage_lines(staged, texts)
    out = {}
    for n in (1, 2):
        out[n] = data.tokenise_staged(staged, tmp_path / f"w{n}.bin", tok, len(tok), set(), set(), 0, n)
    assert (tmp_path / "w1.bin").read_bytes() == (tmp_path / "w2.bin").read_bytes()
    assert (tmp_path / "w1.idx").read_bytes() == (tmp_path / "w2.idx").read_bytes()
    expected = tok_lib.encode_documents(tok, texts, add_bos=True)
    assert [list(d) for d in _docs(tmp_path / "w2.bin")] == expected
    assert out[2].chars.tolist() == [len(t) for t in texts] and out[2].tokens.tolist() == [len(e) for e in expected]


# ---------------------------------------------------------------- building blocks


def test_streaming_heldout_equals_split_heldout():
    docs = [Document(f"document {i}", "eng", "s") for i in range(3000)]
    reject = {f"document {i}" for i in range(0, 3000, 7)}
    held = corpus.StreamingHeldout(0.05, 3, max_docs=25, reject=lambda d: d.text in reject)
    train = [kept.text for d in docs for kept in held.offer(d)]
    clean = [d for d in docs if d.text not in reject]
    want_train, want_held = corpus.split_heldout(clean, 0.05, 3, max_docs=25)
    assert [d.text for d in held.heldout()] == [d.text for d in want_held]
    assert sorted(t for t in train if t not in reject) == sorted(d.text for d in want_train)
    # only candidates are checked here; the other documents are decontaminated in pass 2
    candidates = {t for t in reject if corpus.stable_unit(corpus.dedup_key(t), 3, "heldout") < 0.05}
    assert held.rejected == len(candidates) > 0 and not candidates & set(train)


def test_buffer_shuffle_and_hash_dedup():
    items = list(range(5000))
    once = list(corpus.buffer_shuffle(items, seed=1, size=100))
    assert sorted(once) == items and once != items
    assert once == list(corpus.buffer_shuffle(items, seed=1, size=100))
    assert once != list(corpus.buffer_shuffle(items, seed=2, size=100))
    dedup = corpus.HashDedup()
    assert [dedup.is_new(t) for t in ["A  b", "a b", "a c", " A B\n"]] == [True, False, True, False]
    assert all(isinstance(h, int) for h in dedup.seen)  # hashes, not texts


def test_take_chars_whole_passes_then_a_cut():
    rng = np.random.default_rng(0)
    chars = np.array([10, 20, 30, 40])
    picked = data.take_chars(rng, chars, 2 * 100 + 45)
    counts = np.bincount(picked, minlength=4)
    assert counts.min() >= 2 and counts.max() <= 3
    extra = chars[counts == 3].sum()
    assert 45 <= extra < 45 + chars.max()
    assert len(data.take_chars(rng, chars, 0)) == 0
