"""01_data: per-language corpora -> decontaminated train/held-out splits -> UniMax budgets with English
replay -> tokenizer -> packed token streams for every training stage.

Choices where the paper is silent (see README, "Choices we made"):
- Held-out text: a stable hash split of the deduplicated documents (`heldout_fraction`, capped at
  `heldout_max_docs`); the UDHR of each language is a second, parallel held-out text and is never trained on.
- MultiBLiMP: agreement pairs are built from each language's held-out UD files (`ud_pairs`) into
  data/multiblimp/<iso>/data.tsv, with a counts table (counts.csv, counts.md), before anything else.
- Decontamination: training documents that equal, or contain as a sentence, any sentence of an
  evaluation set (BLiMP, UDHR, the built and any released MultiBLiMP pairs, pair files) are removed.
- Fractional epochs: whole passes reshuffled each epoch, then documents of one more shuffle until the
  language's UniMax characters are reached.
- Code files are cut into pieces of about `code_chunk_chars` at top-level lines (small scales), so
  replay samples many files; the paper scale keeps whole python-edu files.
- The seed's English phase mixes in `seed_english_phase_code_fraction` of the code documents.

Two sources feed one recipe. The local source (`data_source: local`) reads and cleans the offline data
folder in memory; the Hub source (`hub`) streams, stages and cleans on disk (see below). Both tokenise
every kept document once into data/docs/<source>.bin with document offsets, and the recipe (`mix`) writes
every stage's stream from seeded permutations of document numbers.
"""
from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import artifacts, corpus, fingerprints, languages
from ..corpus import packing, unimax
from ..corpus import tokenizer as tok_lib
from ..evaluation import pair_sources, ud_pairs
from ..params import MissingInputError, Params
from . import layout

EVAL_FOLDERS = ("udhr", "blimp", "ud", "unimorph")  # of the data folder: evaluation sets and UD sources


def data_hash(p: Params) -> str:
    """Content hash of the local data the run reads. Hub runs name their Hub sources instead of text/,
    and still read the evaluation sets of a local data folder when there is one (decontamination, the
    UDHR, the pairs built from UD)."""
    h = hashlib.sha256()
    if p.data_source == "hub":
        h.update(artifacts.fingerprint("hub", [languages.LANGUAGES[c].fineweb2_subset for c in p.langs]).encode())
    for sub in EVAL_FOLDERS if p.data_source == "hub" else ("text", *EVAL_FOLDERS):
        for f in sorted((p.data_path / sub).rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(p.data_path)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


# -- evaluation sets -------------------------------------------------------------------------------

def has_local_eval_data(p: Params) -> bool:
    return (p.data_path / "blimp").is_dir() and (p.data_path / "udhr").is_dir()


def multiblimp_files(p: Params, lang: str) -> list[Path]:
    """The MultiBLiMP pairs of a language that exist: the ones built by this step and the released
    `<multiblimp_dir>/<iso>/data.tsv`."""
    files = [layout.of(p).data.multiblimp(lang)]
    if p.multiblimp_path is not None:
        files.append(p.multiblimp_path / lang / "data.tsv")
    return [f for f in files if f.is_file()]


def eval_keys(p: Params, lang: str) -> set[str]:
    """Sentences of the evaluation sets (UDHR, BLiMP for English, MultiBLiMP pairs, pair files) as dedup
    keys. They come from the local data folder when there is one (hub runs too), else BLiMP from the Hub."""
    pair_files = [Path(f) for f in p.eval_pairs_files] + multiblimp_files(p, lang)
    if has_local_eval_data(p):
        return corpus.evaluation_keys(p.data_path, lang, pair_files=pair_files)
    keys: set[str] = set()
    if lang == languages.ENGLISH:
        pairs = pair_sources.load_blimp_hub()
        keys |= {corpus.dedup_key(s) for s in pd.concat([pairs.good, pairs.bad])}
    for f in pair_files:
        keys |= corpus.pair_file_sentences(f)
    return keys


# -- the step --------------------------------------------------------------------------------------

def prepare(p: Params, log=print) -> pd.DataFrame:
    """Run 01_data (skipped when its outputs exist for the same parameters and data)."""
    dp = layout.of(p).data
    params = {**p.subset(fingerprints.keys("data")), "named_files": fingerprints.named_files(p)}
    with artifacts.Step(p.run_path, layout.DATA_STEP, {**params, "data_hash": data_hash(p)}, log=log) as step:
        if step.todo:
            pair_outputs = _prepare(p, dp, log)
            step.outputs = pair_outputs + [dp.stats, dp.plan, dp.tokenizer, dp.train("seed"), dp.train("base"),
                                           dp.train("multilingual")] + [dp.train(lang) for lang in p.langs]
            step.extra = {"data_hash": step.params["data_hash"]}
    return pd.read_csv(dp.stats).convert_dtypes()


@dataclass
class Sources:
    """What a source hands the recipe: its tokenizer, the token file of every source (English, the
    target languages, then code), and each language's held-out documents and cleaning counts."""
    tokenizer: object
    docs: dict[str, DocFile]
    heldout: dict[str, list]
    counts: dict[str, dict]


def _prepare(p: Params, dp: layout.DataPaths, log) -> list[Path]:
    pair_outputs = build_multiblimp(p, dp, log)  # first: their sentences are removed from training text
    src = (_hub_source if p.data_source == "hub" else _local_source)(p, dp, log)
    tok = src.tokenizer
    tok_lib.save_tokenizer(tok, dp.tokenizer)
    rows, plan = mix(p, dp, src.docs, src.counts, len(tok))
    for lang in [languages.ENGLISH, *p.langs]:
        _write_text(dp.heldout(lang), src.heldout[lang])
        if has_local_eval_data(p):
            artifacts.atomic.write_text(dp.udhr(lang), "".join(
                line + "\n" for line in corpus.udhr_lines(p.data_path, lang)))
    artifacts.atomic.write_json(dp.plan, {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
                                          "eos_token_id": tok.eos_token_id, **plan})
    artifacts.atomic.write_text(dp.stats, pd.DataFrame(rows).to_csv(index=False))
    return pair_outputs


def _write_text(path: Path, docs) -> None:
    artifacts.atomic.write_text(path, "".join(d.text + "\n" for d in docs))


def load_plan(p: Params) -> dict:
    return json.loads(layout.of(p).data.plan.read_text())


# -- MultiBLiMP pairs from held-out UD files --------------------------------------------------------

def _build_pairs(job: tuple) -> ud_pairs.Built:
    files, lang, unimorph, lexicon, seed = job
    return ud_pairs.build_pairs(files, lang, unimorph, lexicon, seed=seed)


def build_multiblimp(p: Params, dp: layout.DataPaths, log=print) -> list[Path]:
    """MultiBLiMP-style pairs for English and every target language from their held-out UD files
    (`ud_pairs`), then the counts table; returns the files written. Languages without a treebank in
    the data folder (or hub runs without one) get no pairs."""
    rows, written = [], []
    langs = [languages.ENGLISH, *p.langs]
    files = {lang: ud_pairs.heldout_files(p.data_path, lang) for lang in langs}
    for lang in langs:
        if not files[lang]:
            dp.multiblimp(lang).unlink(missing_ok=True)
            log(f"  {lang}: no UD treebank in {p.data_path / 'ud'}, no MultiBLiMP pairs built")
    jobs = [(files[lang], lang, ud_pairs.unimorph_file(p.data_path, lang), ud_pairs.lexicon_files(p.data_path, lang),
             p.seed) for lang in langs if files[lang]]
    # Languages are independent and pure Python: built in parallel by forked workers (nothing re-imported).
    results = list(tok_lib.ordered_map(_build_pairs, jobs, min(workers(p), len(jobs))))
    for (treebanks, lang, *_), built in zip(jobs, results):
        target = dp.multiblimp(lang)
        written.append(ud_pairs.write_data_tsv(built.pairs, target))
        rows.append({"lang": lang, "treebank_files": " ".join(f.name for f in treebanks),
                     "sentences": built.sentences, **ud_pairs.counts(built.pairs),
                     "before_balancing": sum(built.before_balance.values()),
                     "multiblimp_1_0": ud_pairs.RELEASED_COUNTS.get(lang)})
        log(f"  {lang}: {len(built.pairs)} MultiBLiMP pairs from {built.sentences} held-out UD sentences")
    columns = ["lang", "treebank_files", "sentences", *ud_pairs.PHENOMENA, "total", "before_balancing", "multiblimp_1_0"]
    table = pd.DataFrame(rows, columns=columns)  # written even when empty, so 01_data can always show it
    artifacts.atomic.write_text(dp.multiblimp_counts, table.to_csv(index=False))
    artifacts.atomic.write_text(dp.multiblimp_counts.with_suffix(".md"), table.to_markdown(index=False) + "\n")
    return written + [dp.multiblimp_counts, dp.multiblimp_counts.with_suffix(".md")]


def load_multiblimp_counts(p: Params) -> pd.DataFrame:
    path = layout.of(p).data.multiblimp_counts
    if not path.exists():
        raise MissingInputError(f"no MultiBLiMP counts in {path}; run notebooks/01_data.ipynb first")
    return pd.read_csv(path)


# -- the local source: the offline data folder, read and cleaned in memory --------------------------

def _read(p: Params, lang: str) -> list[corpus.Document]:
    return corpus.read_local_corpus(p.data_path, lang)


def _subsample(docs: list, n: int | None, seed: int, salt: str) -> list:
    if n is None or len(docs) <= n:
        return docs
    rng = random.Random(f"{seed}-{salt}")
    keep = sorted(rng.sample(range(len(docs)), n))
    return [docs[i] for i in keep]


def clean_language(p: Params, lang: str) -> tuple[list, list, dict]:
    """Read, deduplicate, decontaminate and split one language; returns (train, heldout, counts)."""
    raw = _subsample(_read(p, lang), p.max_docs_per_lang, p.seed, lang)
    deduped, n_dup = corpus.dedup(raw)
    clean, n_contam = corpus.decontaminate(deduped, eval_keys(p, lang))
    train, heldout = corpus.split_heldout(clean, p.heldout_fraction, p.seed, p.heldout_max_docs)
    # Near-duplicates that exact dedup misses (e.g. Persian updt-text spaces its punctuation unlike the
    # UD copies of the same sentences) must not leak held-out text into training.
    train, n_overlap = corpus.decontaminate(train, {corpus.dedup_key(d.text) for d in heldout})
    if not train or not heldout:
        raise corpus.DataError(f"language {lang}: {len(train)} training and {len(heldout)} held-out documents "
                               "after cleaning; the corpus is too small for these parameters")
    counts = {"docs_raw": len(raw), "duplicates_removed": n_dup, "decontaminated": n_contam,
              "heldout_overlap_removed": n_overlap,
              "train_docs": len(train), "heldout_docs": len(heldout)}
    return train, heldout, counts


def _local_source(p: Params, dp: layout.DataPaths, log) -> Sources:
    split = {}
    for lang in [languages.ENGLISH, *p.langs]:
        split[lang] = clean_language(p, lang)
        log(f"  {lang}: {split[lang][2]}")
    texts = {lang: [d.text for d in train] for lang, (train, _, _) in split.items()}
    texts["code"] = [d.text for d in _code_documents(p)]
    if p.tokenizer == "llama3":
        tok = tok_lib.llama3_tokenizer()
    else:
        tok = tok_lib.train_bpe([t for name in texts for t in texts[name]], p.bpe_vocab_size)
    docs = {name: write_documents(dp.docs(name), tok, texts[name], _split_seed(p, name)) for name in texts}
    return Sources(tok, docs, {lang: held for lang, (_, held, _) in split.items()},
                   {lang: counts for lang, (_, _, counts) in split.items()})


def _code_documents(p: Params):
    """Code documents: python-edu streamed (contents downloaded by blob id) or the interpreter's
    stdlib; at most `code_max_bytes` characters (the last file may cross it), then cut into pieces of
    about `code_chunk_chars` when that is set."""
    if p.code_source == "python-edu":
        docs = _until_chars(corpus.stream_documents("code", p.seed), p.code_max_bytes)
    else:
        docs = corpus.code_documents(p.code_max_bytes, seed=p.seed)
    for doc in docs:
        yield from corpus.chunk_code([doc], p.code_chunk_chars) if p.code_chunk_chars else [doc]


def _until_chars(docs, max_chars: int | None):
    chars = 0
    for doc in docs:
        if max_chars is not None and chars >= max_chars:
            return
        yield doc
        chars += len(doc.text)


# -- the Hub source: streamed, staged on disk, cleaned and tokenised by a pool ----------------------
#
# Pass 1 streams each source once (shuffled by a seeded buffer), normalises, drops exact duplicates
# (64-bit hashes of the keys), picks held-out documents by the stable-hash rule, and appends the rest
# to a gzipped staging file; a target language stops at `char_budget` characters, more than UniMax
# can give any one language. Pass 2 reads the staging file in batches: worker processes drop documents
# that contain evaluation or held-out text and tokenise the others, in order, into data/docs/<name>.bin.
# UniMax then runs on the measured characters.

STAGE_BATCH = 256  # documents per task of the worker pool
KEEP, EVAL_TEXT, HELDOUT_TEXT = 0, 1, 2
_WORKER: dict = {}  # what a pass-2 worker process checks against


def workers(p: Params) -> int:
    """`data_workers`, else the cores this process may run on."""
    if p.data_workers:
        return p.data_workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _hub_source(p: Params, dp: layout.DataPaths, log) -> Sources:
    shutil.rmtree(dp.staging, ignore_errors=True)
    dp.staging.mkdir(parents=True)
    langs = [languages.ENGLISH, *p.langs]
    keys = {lang: eval_keys(p, lang) for lang in langs} | {"code": set()}
    heldout, counts = {}, {}
    for lang in langs:
        cap = float("inf") if lang == languages.ENGLISH else p.char_budget
        heldout[lang], counts[lang] = _stage_language(p, dp, lang, keys[lang], cap)
        log(f"  {lang}: staged, {counts[lang]}")
    _stage_lines(dp.staging / "code.jsonl.gz", (d.text for d in _code_documents(p)))
    names = [*langs, "code"]
    held_keys = {name: {corpus.dedup_key(d.text) for d in heldout.get(name, [])} for name in names}
    tok = _hub_tokenizer(p, dp, names, {n: keys[n] | held_keys[n] for n in names})
    docs = {}
    for name in names:
        docs[name] = tokenise_staged(dp.staging / f"{name}.jsonl.gz", dp.docs(name), tok, len(tok), keys[name],
                                     held_keys[name], _split_seed(p, name), workers(p))
        if name in counts:
            counts[name]["decontaminated"] += docs[name].removed["decontaminated"]
            counts[name] |= {"heldout_overlap_removed": docs[name].removed["heldout_overlap_removed"],
                             "train_docs": docs[name].n, "heldout_docs": len(heldout[name])}
        log(f"  {name}: {docs[name].n} documents, {int(docs[name].tokens.sum())} tokens")
        if name in heldout and (not docs[name].n or not heldout[name]):
            raise corpus.DataError(f"language {name}: {docs[name].n} training and {len(heldout[name])} held-out "
                                   "documents after cleaning; the stream is too small for these parameters")
    shutil.rmtree(dp.staging)
    return Sources(tok, docs, heldout, counts)


def _stage_lines(path: Path, texts) -> int:
    """Write texts to a gzipped JSON-lines file (code keeps its newlines); returns the characters."""
    chars = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
        for text in texts:
            out.write(json.dumps(text, ensure_ascii=False) + "\n")
            chars += len(text)
    return chars


def _staged_batches(path: Path):
    batch = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line))
            if len(batch) == STAGE_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _staged_texts(path: Path):
    for batch in _staged_batches(path):
        yield from batch


def _stage_language(p: Params, dp: layout.DataPaths, lang: str, keys: set[str], max_chars: float):
    """Pass 1 for one language: returns (held-out documents, counts). Held-out candidates are
    decontaminated here, so the held-out set is the local rule's (smallest hashes among clean
    candidates); training documents are decontaminated in pass 2, in parallel."""
    index = corpus.contamination_index(keys)
    held = corpus.StreamingHeldout(p.heldout_fraction, p.seed, p.heldout_max_docs,
                                   reject=lambda d: corpus.is_contaminated(d.text, keys, index))
    dedup = corpus.HashDedup()
    counts = {"docs_raw": 0, "duplicates_removed": 0}

    def train_texts():
        chars = 0
        for doc in corpus.stream_documents(lang, p.seed):
            if chars >= max_chars or (p.max_docs_per_lang is not None and counts["docs_raw"] >= p.max_docs_per_lang):
                return
            counts["docs_raw"] += 1
            if not dedup.is_new(doc.text):
                counts["duplicates_removed"] += 1
                continue
            for kept in held.offer(doc):
                yield kept.text
                chars += len(kept.text)

    _stage_lines(dp.staging / f"{lang}.jsonl.gz", train_texts())
    return held.heldout(), {**counts, "decontaminated": held.rejected}


def _init_worker(encoder, eval_keys: set[str], heldout_keys: set[str], split_seed: int | None) -> None:
    tok_lib.init_worker(encoder)
    _WORKER.update(eval=eval_keys, eval_index=corpus.contamination_index(eval_keys), held=heldout_keys,
                   held_index=corpus.contamination_index(heldout_keys), split_seed=split_seed)


def _status(text: str) -> int:
    if _WORKER["eval"] and corpus.is_contaminated(text, _WORKER["eval"], _WORKER["eval_index"]):
        return EVAL_TEXT
    # Near-duplicates that exact dedup misses must not leak held-out text into training.
    if _WORKER["held"] and corpus.is_contaminated(text, _WORKER["held"], _WORKER["held_index"]):
        return HELDOUT_TEXT
    return KEEP


def _clean_and_encode(texts: list[str]) -> dict:
    """One pool task: which documents stay, and for those their ids and `_measure`'s numbers."""
    status = np.array([_status(t) for t in texts], dtype=np.int8)
    kept = [t for t, s in zip(texts, status) if s == KEEP]
    return {"status": status, "ids": tok_lib.encode_in_worker(kept), **_measure(kept, _WORKER["split_seed"])}


def tokenise_staged(staged: Path, out: Path, tok, vocab: int, eval_keys: set[str], heldout_keys: set[str],
                    split_seed: int | None, n_workers: int) -> DocFile:
    """Pass 2: decontaminate and tokenise a staging file with `n_workers` processes, in order, into a
    token file with document offsets (`split_seed`: see `_measure`)."""
    parts: dict[str, list] = {"chars": [], "bytes": []} | ({"units": []} if split_seed is not None else {})
    removed = {EVAL_TEXT: 0, HELDOUT_TEXT: 0}
    results = tok_lib.ordered_map(_clean_and_encode, _staged_batches(staged), n_workers, _init_worker,
                                  (tok_lib.worker_state(tok), eval_keys, heldout_keys, split_seed))
    with packing.TokenWriter(out, vocab, offsets=True) as writer:
        for result in results:
            for ids in result["ids"]:
                writer.add(ids)
            for key in parts:
                parts[key].append(result[key])
            for code in removed:
                removed[code] += int((result["status"] == code).sum())
    arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    return DocFile.of(out, arrays, {"decontaminated": removed[EVAL_TEXT],
                                    "heldout_overlap_removed": removed[HELDOUT_TEXT]})


def _hub_tokenizer(p: Params, dp: layout.DataPaths, names: list[str], keys: dict[str, set[str]]):
    """Llama-3, or a BPE trained on the staged training text as pass 2 will keep it."""
    if p.tokenizer == "llama3":
        return tok_lib.llama3_tokenizer()

    def texts():
        for name in names:
            index = corpus.contamination_index(keys[name])
            for text in _staged_texts(dp.staging / f"{name}.jsonl.gz"):
                if not keys[name] or not corpus.is_contaminated(text, keys[name], index):
                    yield text
    return tok_lib.train_bpe(texts(), p.bpe_vocab_size)


# -- tokenised documents ---------------------------------------------------------------------------

@dataclass
class DocFile:
    """A source's kept documents, tokenised once: the token file and per-document numbers (in RAM:
    a few bytes per document, never text)."""
    path: Path
    chars: np.ndarray
    bytes: np.ndarray
    units: np.ndarray | None  # English only: stable_unit for the 80/20 split
    tokens: np.ndarray
    removed: dict = field(default_factory=dict)  # the Hub source's pass 2: documents it dropped, by reason

    @classmethod
    def of(cls, path: Path, measures: dict[str, np.ndarray], removed: dict | None = None) -> DocFile:
        """The DocFile of a written token file, with `_measure`'s numbers of its documents."""
        tokens = packing.PackedTokens(path).doc_lengths().copy()
        return cls(path, measures["chars"], measures["bytes"], measures.get("units"), tokens, removed or {})

    @property
    def n(self) -> int:
        return len(self.chars)


def _split_seed(p: Params, name: str) -> int | None:
    """Only English is split (into the seed's 80% and the bases' 20%)."""
    return p.seed if name == languages.ENGLISH else None


def _measure(texts: list[str], split_seed: int | None) -> dict[str, np.ndarray]:
    """Characters and UTF-8 bytes of each document and, given a `split_seed`, its unit for the English
    80/20 split (corpus.split_fraction's rule: the seed model gets the units below english_seed_fraction)."""
    out = {"chars": np.array([len(t) for t in texts], dtype=np.int64),
           "bytes": np.array([len(t.encode()) for t in texts], dtype=np.int64)}
    if split_seed is not None:
        out["units"] = np.array([corpus.stable_unit(corpus.dedup_key(t), split_seed, "english-80-20")
                                 for t in texts], dtype=np.float64)
    return out


def write_documents(out: Path, tok, texts: list[str], split_seed: int | None) -> DocFile:
    """Tokenise cleaned documents (in the tokenizers backend, in parallel) into a token file with
    document offsets (`split_seed`: see `_measure`)."""
    ids = tok_lib.encode_documents(tok, texts, add_bos=True)
    bounds = np.cumsum([0, *map(len, ids)])
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(bounds[-1]))
    if flat.size and (flat.min() < 0 or flat.max() >= len(tok)):
        raise ValueError(f"{out}: token id out of range [0, {len(tok)})")
    with packing.TokenWriter(out, len(tok), offsets=True) as writer:
        for a, b in zip(bounds[:-1], bounds[1:]):  # one array for all: far fewer conversions than per document
            writer.add_checked(flat[a:b])
    return DocFile.of(out, _measure(texts, split_seed))


# -- the recipe: UniMax budgets, replay and every stage's stream from the token files ---------------

def replay_counts(p: Params, n_docs: dict[str, int], n_english: int, n_code: int) -> dict[str, tuple[int, int]]:
    """English and code replay documents per language: the reference language gets the base fractions,
    the others that scaled by their share of training documents (FACTS.md)."""
    ref = n_docs[p.replay_reference_lang] if p.replay_reference_lang in n_docs else max(n_docs.values())
    return {lang: (round(p.replay_english_fraction * n / ref * n_english),
                   round(p.replay_code_fraction * n / ref * n_code)) for lang, n in n_docs.items()}


def take_chars(rng: np.random.Generator, doc_chars: np.ndarray, target: float) -> np.ndarray:
    """Documents for `target` characters: whole passes (each a fresh permutation), then documents
    of one more permutation until the target is reached (the last one may cross it)."""
    n, total = len(doc_chars), float(doc_chars.sum())
    whole = int(target // total) if total else 0
    parts = [rng.permutation(n) for _ in range(whole)]
    rest = target - whole * total
    if rest > 0 and n:
        perm = rng.permutation(n)
        k = min(n, int(np.searchsorted(np.cumsum(doc_chars[perm]), rest, side="left")) + 1)
        parts.append(perm[:k])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def take_docs(rng: np.random.Generator, n: int, epochs: float) -> np.ndarray:
    """`epochs` passes over n documents: whole permuted passes, then the start of one more."""
    parts = [rng.permutation(n) for _ in range(int(epochs))]
    rest = round((epochs - int(epochs)) * n)
    if rest:
        parts.append(rng.permutation(n)[:rest])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _sample(rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
    return rng.choice(pool, size=min(k, len(pool)), replace=False) if k else np.zeros(0, dtype=np.int64)


def mix(p: Params, dp: layout.DataPaths, docs: dict[str, DocFile], counts: dict, vocab: int) -> tuple[list, dict]:
    """Every stage's stream from the per-source token files (English, the target languages, code);
    returns the rows of stats.csv and the plan. Only document numbers are in memory: a document's
    global number is its index plus the documents of the sources before it."""
    rng = np.random.default_rng(p.seed)
    names = list(docs)
    start = dict(zip(names, np.cumsum([0] + [docs[n].n for n in names]).tolist()))
    sources = [packing.PackedTokens(docs[n].path) for n in names]
    doc_tokens = np.concatenate([docs[n].tokens for n in names])

    def glob(name: str, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx, dtype=np.int64) + start[name]

    def write(name: str, order: np.ndarray) -> dict:
        return packing.write_mixture(dp.train(name), sources, order, vocab)

    eng, code = docs[languages.ENGLISH], docs["code"]
    eng_seed = np.flatnonzero(eng.units < p.english_seed_fraction)
    eng_base = np.flatnonzero(eng.units >= p.english_seed_fraction)
    available = {lang: int(docs[lang].chars.sum()) for lang in p.langs}
    alloc = unimax.unimax(available, p.char_budget, p.max_epochs)
    replay = replay_counts(p, {lang: docs[lang].n for lang in p.langs}, len(eng_seed), code.n)
    rows, mixtures = [], []
    for lang in p.langs:
        target = glob(lang, take_chars(rng, docs[lang].chars, alloc[lang]))
        n_eng, n_code = replay[lang]
        replay_docs = np.concatenate([glob(languages.ENGLISH, _sample(rng, eng_seed, n_eng)),
                                      glob("code", _sample(rng, np.arange(code.n), n_code))])
        mixtures.append(rng.permutation(np.concatenate([target, replay_docs])))
        info = write(lang, mixtures[-1])
        if info["n_tokens"] < p.tokens_per_step and p.models_from == "train":  # hub runs train on nothing
            raise corpus.DataError(f"language {lang}: {info['n_tokens']} training tokens, less than one batch of "
                                   f"{p.tokens_per_step} (global_batch_size x seq_len); add text, raise "
                                   "char_budget or lower global_batch_size")
        train_tokens = int(docs[lang].tokens.sum())
        rows.append({
            "lang": lang, **counts[lang], "train_chars": available[lang],
            "train_bytes": int(docs[lang].bytes.sum()), "train_tokens": train_tokens,
            "chars_per_token": round(available[lang] / train_tokens, 3), "unimax_chars": round(alloc[lang]),
            "epochs": round(alloc[lang] / available[lang], 3), "target_tokens": int(doc_tokens[target].sum()),
            "replay_english_docs": n_eng, "replay_code_docs": n_code,
            "replay_tokens": int(doc_tokens[replay_docs].sum()),
            "replay_share_samples": round(len(replay_docs) / len(mixtures[-1]), 4), "stream_tokens": info["n_tokens"],
            "steps": p.cpt_steps.get(lang, info["n_tokens"] // p.tokens_per_step),
        })
    joint = np.concatenate(mixtures)
    info = write(languages.MULTILINGUAL, rng.permutation(joint))
    rows.append({"lang": languages.MULTILINGUAL, "stream_tokens": info["n_tokens"],
                 "target_tokens": sum(r["target_tokens"] for r in rows),
                 "replay_tokens": sum(r["replay_tokens"] for r in rows),
                 "steps": p.cpt_steps.get(languages.MULTILINGUAL, info["n_tokens"] // p.tokens_per_step)})

    # The seed: code epochs, then 80% English mixed with code; the bases: the other 20% English.
    phase1 = glob("code", take_docs(rng, code.n, p.seed_code_epochs))
    phase2_code = glob("code", _sample(rng, np.arange(code.n), round(p.seed_english_phase_code_fraction * code.n)))
    phase2 = rng.permutation(np.concatenate([glob(languages.ENGLISH, eng_seed), phase2_code]))
    seed_info = write("seed", np.concatenate([phase1, phase2]))
    base_info = write("base", rng.permutation(glob(languages.ENGLISH, eng_base)))
    seed_steps = p.seed_steps or seed_info["n_tokens"] // p.tokens_per_step
    base_steps = p.base_steps or base_info["n_tokens"] // p.tokens_per_step
    rows.append({"lang": "eng (seed: code, then 80% English + code)", **counts[languages.ENGLISH],
                 "train_chars": int(eng.chars[eng_seed].sum()), "train_tokens": int(eng.tokens[eng_seed].sum()),
                 "stream_tokens": seed_info["n_tokens"], "steps": seed_steps})
    rows.append({"lang": "eng (bases: 20% English)", "train_chars": int(eng.chars[eng_base].sum()),
                 "train_tokens": int(eng.tokens[eng_base].sum()), "stream_tokens": base_info["n_tokens"],
                 "steps": base_steps})
    rows.append({"lang": "code (Python)", "train_docs": code.n, "train_chars": int(code.chars.sum()),
                 "train_tokens": int(code.tokens.sum())})
    plan = {"seed_steps": seed_steps, "base_steps": base_steps,
            "clone_after_fraction_of_english_steps": round(seed_steps / (seed_steps + base_steps), 4),
            "seed_phase_tokens": {"code": int(doc_tokens[phase1].sum()),
                                  "english_and_code": int(doc_tokens[phase2].sum())},
            "cpt_steps": {r["lang"]: r["steps"] for r in rows[: len(p.langs) + 1]},
            "unimax_chars": {k: round(v) for k, v in alloc.items()}, "available_chars": available}
    return rows, plan
