"""Training text: the offline reference data, Hub loaders, dedup, decontamination and splits.

One line of a local text file is one document. Everything that decides which document goes where
(dedup, held-out split, English seed/base split, code selection) is deterministic: it depends on
the text and a seed only, never on Python's randomised `hash` or on the order of iteration.
"""
from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import heapq
import io
import json
import os
import random
import re
import sysconfig
import unicodedata
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..languages import LANGUAGES, to_code
from ..errors import DataError  # noqa: F401  (defined in errors.py)

DATA_ENV = "HYPERLLAMA_DATA"
MIN_CONTAINED_WORDS = 6  # evaluation sentences this long are also searched for inside documents

_WHITESPACE = re.compile(r"\s+")
# A sentence ends at . ! ? or the Arabic question mark, followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?\u061f])\s+")
# Tokens for containment matching: runs of word characters, or single punctuation marks.
_TOKEN = re.compile(r"\w+|[^\w\s]")
_EXCLUDED_CODE_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__"}


@dataclass
class Document:
    text: str
    lang: str
    source: str


def default_data_dir() -> Path:
    """`$HYPERLLAMA_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def normalize_text(s: str) -> str:
    """NFC, every run of whitespace (newlines included) becomes one space, stripped."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", s)).strip()


def dedup_key(s: str) -> str:
    return normalize_text(s).casefold()


# ---------------------------------------------------------------- local files


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} folder {path} not found: set {DATA_ENV} or pass the data directory")
    return path


def _read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a (gzipped) UTF-8 file. Invalid UTF-8, and a truncated or damaged gzip
    stream, raise DataError naming the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: not valid UTF-8 ({e.reason}); re-encode the file as UTF-8") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}:{number + 1}: truncated or damaged gzip file ({e}); copy it again") from None


def read_local_corpus(data_dir: str | Path, lang: str) -> list[Document]:
    """All documents of `text/<lang>/*.txt.gz` (files in sorted order, lines in file order).

    Lines are normalised with `normalize_text`; empty lines are dropped. `udhr/` is never read.
    Text that is not valid UTF-8 raises DataError naming the file and line (no silent replacement).
    An empty file adds no documents; a language whose files are all empty raises DataError.
    """
    code = to_code(lang)
    root = _require_dir(Path(data_dir), "data")
    text_dir = _require_dir(root / "text", "text")
    lang_dir = text_dir / code
    if not lang_dir.is_dir():
        have = ", ".join(sorted(p.name for p in text_dir.iterdir() if p.is_dir()))
        raise DataError(f"no text for language {code!r} in {text_dir} (have: {have}); add text/{code}/*.txt.gz")
    files = sorted(lang_dir.glob("*.txt.gz"))
    if not files:
        raise DataError(f"{lang_dir} holds no *.txt.gz files; add the {code} text there")
    docs = []
    for path in files:
        source = path.name.removesuffix(".txt.gz")
        for line in _read_lines(path):
            text = normalize_text(line)
            if text:
                docs.append(Document(text, code, source))
    if not docs:
        raise DataError(f"{lang_dir}: every *.txt.gz file is empty; add the {code} text there")
    return docs


def dedup(docs: Iterable[Document]) -> tuple[list[Document], int]:
    """Exact dedup on `dedup_key`; the first occurrence wins. Returns (kept, number removed)."""
    seen: set[str] = set()
    kept = []
    removed = 0
    for doc in docs:
        key = dedup_key(doc.text)
        if key in seen:
            removed += 1
        else:
            seen.add(key)
            kept.append(doc)
    return kept, removed


# ---------------------------------------------------------------- evaluation sentences


def blimp_rows(data_dir: str | Path) -> list[dict]:
    """All rows of `blimp/*.jsonl.gz` (paradigms in sorted order)."""
    blimp_dir = _require_dir(Path(data_dir) / "blimp", "BLiMP")
    files = sorted(blimp_dir.glob("*.jsonl.gz"))
    if not files:
        raise DataError(f"{blimp_dir} holds no *.jsonl.gz files; add the BLiMP paradigms there")
    rows = []
    for path in files:
        for number, line in enumerate(_read_lines(path), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    return rows


def blimp_sentences(data_dir: str | Path) -> set[str]:
    """Dedup keys of `sentence_good` and `sentence_bad` of every BLiMP pair."""
    keys = set()
    for row in blimp_rows(data_dir):
        if not isinstance(row, dict) or not isinstance(row.get("sentence_good"), str) \
                or not isinstance(row.get("sentence_bad"), str):
            raise DataError(f"{Path(data_dir) / 'blimp'}: a row without sentence_good and sentence_bad text: "
                            f"{str(row)[:80]}")
        keys.add(dedup_key(row["sentence_good"]))
        keys.add(dedup_key(row["sentence_bad"]))
    return keys


def udhr_lines(data_dir: str | Path, lang: str) -> list[str]:
    """The UDHR of `lang`, normalised, non-empty lines.

    The first line of each file is the language's English name (a header of the npm package the
    text comes from, e.g. "Farsi, Western"), not part of the declaration, so it is left out.
    """
    code = to_code(lang)
    udhr_dir = _require_dir(Path(data_dir) / "udhr", "UDHR")
    path = udhr_dir / f"{code}.txt.gz"
    if not path.is_file():
        raise DataError(f"{path} not found: add the {code} UDHR text there")
    lines = [normalize_text(line) for line in _read_lines(path)]
    return [line for line in lines[1:] if line]


def read_texts(path: Path, max_bytes: int | None = None) -> list[str]:
    """Read a held-out text file (one document a line), optionally only the first `max_bytes` bytes."""
    out, size = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if max_bytes is not None and size >= max_bytes:
            break
        out.append(line)
        size += len(line.encode("utf-8"))
    return out


def pair_file_sentences(path: str | Path) -> set[str]:
    """Dedup keys of `sen` and `wrong_sen` of a MultiBLiMP-format `data.tsv` (plain or .gz)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"minimal-pair file {path} not found")
    text = "".join(_read_lines(path))
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    missing = {"sen", "wrong_sen"} - set(reader.fieldnames or [])
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected MultiBLiMP's data.tsv")
    keys = set()
    for row in reader:
        if None in row or None in row.values():  # csv fills a short row with None, puts extras under None
            raise DataError(f"{path}:{reader.line_num}: not {len(reader.fieldnames)} tab-separated columns "
                            "like the header; the file is truncated or malformed")
        keys.add(dedup_key(row["sen"] or ""))
        keys.add(dedup_key(row["wrong_sen"] or ""))
    keys.discard("")
    return keys


def evaluation_keys(data_dir: str | Path, lang: str, pair_files: Iterable[str | Path] = ()) -> set[str]:
    """What must never be trained on for `lang`: its UDHR, BLiMP for English, and any pair files."""
    code = to_code(lang)
    keys = {dedup_key(line) for line in udhr_lines(data_dir, code)}
    if code == "eng":
        keys |= blimp_sentences(data_dir)
    for path in pair_files:
        keys |= pair_file_sentences(path)
    return keys


# ---------------------------------------------------------------- decontamination


def split_sentences(text: str) -> list[str]:
    """Split at sentence-final punctuation (. ! ? ؟) followed by whitespace."""
    return [s for s in _SENTENCE_END.split(text) if s]


def _words(key: str) -> list[str]:
    return _TOKEN.findall(key)


@dataclass
class _ContainmentIndex:
    """Token tuples of evaluation sentences of >= MIN_CONTAINED_WORDS words, keyed by their
    first MIN_CONTAINED_WORDS tokens; `first` holds the first tokens for a cheap pre-filter."""

    by_head: dict[tuple[str, ...], list[tuple[str, ...]]]
    first: set[str]

    @classmethod
    def build(cls, eval_keys: set[str]) -> _ContainmentIndex:
        by_head: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for key in eval_keys:
            if key.count(" ") + 1 >= MIN_CONTAINED_WORDS:
                tokens = tuple(_words(key))
                if len(tokens) >= MIN_CONTAINED_WORDS:
                    by_head.setdefault(tokens[:MIN_CONTAINED_WORDS], []).append(tokens)
        return cls(by_head, {head[0] for head in by_head})

    def found_in(self, tokens: list[str]) -> bool:
        n = MIN_CONTAINED_WORDS
        for start in range(len(tokens) - n + 1):
            if tokens[start] not in self.first:
                continue
            for sentence in self.by_head.get(tuple(tokens[start : start + n]), ()):
                if tuple(tokens[start : start + len(sentence)]) == sentence:
                    return True
        return False


def is_contaminated(text: str, eval_keys: set[str], index: _ContainmentIndex | None = None) -> bool:
    """See `decontaminate`; pass `index` (built once from eval_keys) when testing many texts."""
    key = dedup_key(text)
    if key in eval_keys:
        return True
    if any(segment in eval_keys for segment in split_sentences(key)):
        return True
    if index is None:
        index = _ContainmentIndex.build(eval_keys)
    return bool(index.by_head) and index.found_in(_words(key))


def decontaminate(docs: Iterable[Document], eval_keys: set[str]) -> tuple[list[Document], int]:
    """Remove every document that contains an evaluation sentence. Returns (kept, number removed).

    `eval_keys` are `dedup_key`s of evaluation sentences. On the document's dedup key (NFC,
    whitespace collapsed, casefolded) a document is removed when
    1. the whole document equals an evaluation sentence, or
    2. one of its sentences equals one: the document is split after . ! ? ؟ followed by
       whitespace and each segment is looked up, or
    3. an evaluation sentence of at least 6 (space-separated) words occurs in it as a contiguous
       run of tokens, where a token is a run of word characters or one punctuation mark. So
       "The cat sat on the mat." is found in 'He said: "the cat sat on the mat." Then ...' but
       not in "... the tomcat sat on the mat." (whole tokens only).
    Case 3 indexes evaluation sentences by their first 6 tokens in a dict and slides a 6-token
    window over each document, so the cost is linear in the corpus size, not docs x sentences.
    Shorter evaluation sentences are only caught by 1 and 2 (substring matching of short
    sentences would remove many innocent documents).
    """
    index = _ContainmentIndex.build(eval_keys)
    kept = []
    removed = 0
    for doc in docs:
        if is_contaminated(doc.text, eval_keys, index):
            removed += 1
        else:
            kept.append(doc)
    return kept, removed


# ---------------------------------------------------------------- deterministic splits


def stable_unit(key: str, seed: int, salt: str) -> float:
    """A number in [0, 1) from sha256 of (salt, seed, key): stable across runs and machines."""
    digest = hashlib.sha256(f"{salt}\x00{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")


def split_fraction(
    docs: Iterable[Document], fraction: float, seed: int, salt: str
) -> tuple[list[Document], list[Document]]:
    """(first, rest): a document goes to `first` when stable_unit(dedup_key, seed, salt) < fraction.

    Membership depends only on the text, seed and salt, so it is independent of document order
    (output lists keep the input order); identical texts always land on the same side.
    """
    _check_fraction(fraction)
    first, rest = [], []
    for doc in docs:
        (first if stable_unit(dedup_key(doc.text), seed, salt) < fraction else rest).append(doc)
    return first, rest


def split_heldout(
    docs: Iterable[Document], fraction: float, seed: int, max_docs: int | None = None
) -> tuple[list[Document], list[Document]]:
    """(train, heldout): `fraction` of the documents held out by stable hash (see split_fraction).

    With `max_docs`, only the held-out candidates with the smallest hash values are held out;
    the other candidates go to train. Output lists keep the input order.
    """
    _check_fraction(fraction)
    scored = [(stable_unit(dedup_key(doc.text), seed, "heldout"), i, doc) for i, doc in enumerate(docs)]
    candidates = sorted((u, i) for u, i, _ in scored if u < fraction)
    if max_docs is not None:
        candidates = candidates[: max(max_docs, 0)]
    held = {i for _, i in candidates}
    train = [doc for _, i, doc in scored if i not in held]
    heldout = [doc for _, i, doc in scored if i in held]
    return train, heldout


# ---------------------------------------------------------------- code


def _stdlib_sources(root: Path) -> list[str]:
    """Relative paths of the *.py files under root, pruning the excluded folders while walking."""
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _EXCLUDED_CODE_DIRS]
        rel = Path(folder).relative_to(root)
        found.extend((rel / name).as_posix() for name in files if name.endswith(".py"))
    return found


def code_documents(max_bytes: int | None, seed: int = 0) -> list[Document]:
    """Python source of the interpreter's stdlib as documents: a stand-in for python-edu.

    Files `*.py` under sysconfig's stdlib path, skipping test/tests/idlelib/site-packages folders.
    Sorted relative paths are ordered by stable hash of (seed, path); files are taken in that
    order, skipping any that would push the total UTF-8 size over `max_bytes`. Text is kept as is
    (newlines matter in code); files that are not UTF-8 are skipped. source = relative path.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(_stdlib_sources(root))
    paths.sort(key=lambda rel: stable_unit(rel, seed, "code"))
    docs = []
    total = 0
    max_bytes = float("inf") if max_bytes is None else max_bytes
    for rel in paths:
        if total >= max_bytes:
            break
        path = root / rel
        if total + path.stat().st_size > max_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        size = len(text.encode("utf-8"))
        if text.strip() and total + size <= max_bytes:
            docs.append(Document(text, "code", rel))
            total += size
    return docs


def _top_level_starts(code: str) -> set[int]:
    """0-based line numbers where a top-level statement (with its decorators) starts."""
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError):
        return set()
    return {min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1 for node in body}


def chunk_code(docs: list[Document], max_chars: int) -> list[Document]:
    """Split code files into pieces of about `max_chars`, cutting only where a top-level statement
    starts (found with `ast`; a file that does not parse stays whole), so that small-scale replay
    samples many files' worth of code instead of one or two whole files. Source becomes "path#k"."""
    out = []
    for doc in docs:
        starts = _top_level_starts(doc.text)
        pieces, current, size = [], [], 0
        for i, line in enumerate(doc.text.splitlines(keepends=True)):
            if size >= max_chars and i in starts:
                pieces.append("".join(current))
                current, size = [], 0
            current.append(line)
            size += len(line)
        pieces.append("".join(current))
        out += [Document(t.strip("\n"), doc.lang, f"{doc.source}#{k}") for k, t in enumerate(pieces) if t.strip()]
    return out


# ---------------------------------------------------------------- Hugging Face Hub


def _stream(repo: str, config: str, split: str = "train") -> Iterable[dict]:
    import datasets  # imported lazily: slow to import, only needed with Hub access

    return datasets.load_dataset(repo, config, split=split, streaming=True)


def _collect(
    rows: Iterable[dict], lang: str, source: str, max_docs: int | None, max_chars: int | None, code: bool = False
) -> list[Document]:
    """Documents from rows' `text`, until max_docs documents or max_chars characters (the last
    document may cross max_chars). Prose is normalised; code only NFC'd and stripped."""
    docs: list[Document] = []
    chars = 0
    for row in rows:
        if (max_docs is not None and len(docs) >= max_docs) or (max_chars is not None and chars >= max_chars):
            break
        if "text" not in row:
            raise DataError(
                f"{source}: rows have no 'text' field (fields: {', '.join(sorted(row))}); "
                "python-edu on the Hub only lists Software Heritage blob ids: download the "
                "file contents into a 'text' field first, or use code_documents() offline"
            )
        raw = row["text"] or ""
        text = unicodedata.normalize("NFC", raw).strip() if code else normalize_text(raw)
        if text:
            docs.append(Document(text, lang, source))
            chars += len(text)
    return docs


def load_fineweb2(lang: str, max_docs: int | None = None, max_chars: int | None = None) -> list[Document]:
    """FineWeb-2 (`HuggingFaceFW/fineweb-2`, the language's subset, split train), streamed."""
    code = to_code(lang)
    subset = LANGUAGES[code].fineweb2_subset
    if subset is None:
        raise ValueError(f"FineWeb-2 has no subset for {code!r}; English comes from load_smollm_english()")
    rows = _stream("HuggingFaceFW/fineweb-2", subset)
    return _collect(rows, code, f"fineweb-2/{subset}", max_docs, max_chars)


def load_smollm_english(max_docs: int | None = None, max_chars: int | None = None) -> list[Document]:
    """English: SmolLM-Corpus `fineweb-edu-dedup` (`HuggingFaceTB/smollm-corpus`), streamed."""
    rows = _stream("HuggingFaceTB/smollm-corpus", "fineweb-edu-dedup")
    return _collect(rows, "eng", "smollm-corpus/fineweb-edu-dedup", max_docs, max_chars)


def load_python_edu(max_docs: int | None = None, max_chars: int | None = None) -> list[Document]:
    """Code: SmolLM-Corpus `python-edu`, streamed.

    The Hub rows of python-edu carry metadata (blob_id, repo_name, path, ...) but not the source
    text, which lives in Software Heritage. A `text` field is read when present (e.g. a mirror
    with contents filled in); otherwise this raises DataError. Code keeps its newlines.
    """
    rows = _stream("HuggingFaceTB/smollm-corpus", "python-edu")
    return _collect(rows, "code", "smollm-corpus/python-edu", max_docs, max_chars, code=True)


BLIMP_FIELDS = ("sentence_good", "sentence_bad", "UID", "field", "linguistics_term", "pairID")


def load_blimp_hub(paradigm: str) -> list[dict]:
    """One BLiMP paradigm from `nyu-mll/blimp` (config = paradigm, split train) as dict rows."""
    rows = _stream("nyu-mll/blimp", paradigm)
    return [{name: (str(row[name]) if name == "pairID" else row[name]) for name in BLIMP_FIELDS} for row in rows]


# ---------------------------------------------------------------- streaming (the Hub path at scale)

SHUFFLE_BUFFER = 10_000  # documents held by the shuffle buffer of a streamed dataset
FINEWEB2 = "HuggingFaceFW/fineweb-2"
SMOLLM = "HuggingFaceTB/smollm-corpus"
SOFTWARE_HERITAGE_URL = "https://softwareheritage.s3.us-west-2.amazonaws.com/content/{blob_id}"
_FETCH_THREADS = 16  # downloads are network-bound: threads, not processes
_FETCH_BATCH = 256


def hub_source(lang: str) -> tuple[str, str]:
    """(repository, config) of a language's training text on the Hub; `code` is python-edu."""
    if lang == "code":
        return SMOLLM, "python-edu"
    if to_code(lang) == "eng":
        return SMOLLM, "fineweb-edu-dedup"
    subset = LANGUAGES[to_code(lang)].fineweb2_subset
    if subset is None:
        raise ValueError(f"FineWeb-2 has no subset for {lang!r}")
    return FINEWEB2, subset


def buffer_shuffle(items: Iterable, seed: int, size: int = SHUFFLE_BUFFER) -> Iterator:
    """Seeded shuffle through a buffer of `size` items: each incoming item swaps out a random
    buffered one, which is yielded; the buffer is emptied in random order at the end."""
    rng = random.Random(f"{seed}-buffer-shuffle")
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def shuffled_rows(repo: str, config: str, seed: int, buffer_size: int = SHUFFLE_BUFFER) -> Iterable[dict]:
    """A streamed Hub dataset, shuffled with a seeded buffer. A `datasets.IterableDataset` also
    shuffles its shard order (`.shuffle`); a plain iterable of rows gets `buffer_shuffle`."""
    rows = _stream(repo, config)
    if hasattr(rows, "shuffle"):
        return rows.shuffle(seed=seed, buffer_size=buffer_size)
    return buffer_shuffle(rows, seed, buffer_size)


def fetch_software_heritage(blob_id: str) -> str | None:
    """The content of one python-edu file, the way the SmolLM-Corpus card documents it: the gzipped
    blob `content/<blob_id>` of the public Software Heritage bucket on S3 (read anonymously).
    None for a file that is not UTF-8 (such files are skipped, as `code_documents` does)."""
    url = SOFTWARE_HERITAGE_URL.format(blob_id=blob_id)
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                raw = gzip.decompress(response.read())
            break
        except OSError as e:  # URLError, timeouts, truncated gzip
            if attempt == 2:
                raise DataError(f"python-edu blob {blob_id}: download from {url} failed ({e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _with_contents(rows: Iterable[dict], fetch: Callable[[str], str | None]) -> Iterator[dict]:
    """Rows with a `text` field: python-edu rows carry only `blob_id`, so their contents are fetched
    (in threads, in order) by `fetch`; rows that already have text pass through."""
    def batches():
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) == _FETCH_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    with ThreadPoolExecutor(_FETCH_THREADS) as pool:
        for batch in batches():
            missing = [row["blob_id"] for row in batch if "text" not in row and "blob_id" in row]
            contents = iter(pool.map(fetch, missing))
            for row in batch:
                if "text" not in row and "blob_id" in row:
                    row = {**row, "text": next(contents)}
                yield row


def stream_documents(lang: str, seed: int, fetch: Callable[[str], str | None] | None = None) -> Iterator[Document]:
    """A language's Hub documents (lang `code`: python-edu), shuffled, normalised, empty ones dropped.
    Prose is normalised with `normalize_text`; code is only NFC'd and stripped (newlines matter)."""
    repo, config = hub_source(lang)
    rows = shuffled_rows(repo, config, seed)
    code = lang == "code"
    if code:
        rows = _with_contents(rows, fetch or fetch_software_heritage)
    source = f"{repo.split('/')[-1]}/{config}"
    for row in rows:
        raw = row.get("text")
        if raw is None:
            if "text" not in row:
                raise DataError(f"{source}: rows have no 'text' field (fields: {', '.join(sorted(row))})")
            continue  # a python-edu file that is not UTF-8
        text = unicodedata.normalize("NFC", raw).strip() if code else normalize_text(raw)
        if text:
            yield Document(text, "code" if code else to_code(lang), source)


class HashDedup:
    """Exact dedup on `dedup_key` that keeps 64-bit hashes of the keys, not the texts (about 70 bytes
    of RAM per distinct document). A false duplicate needs a 64-bit collision: at a billion
    documents the chance that any occurs is about 3%, and it costs one document."""

    def __init__(self):
        self.seen: set[int] = set()

    def is_new(self, text: str) -> bool:
        digest = hashlib.blake2b(dedup_key(text).encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "big")
        if h in self.seen:
            return False
        self.seen.add(h)
        return True


class StreamingHeldout:
    """`split_heldout` for a stream: candidates (stable_unit < fraction) are held out, and with
    `max_docs` only those with the smallest units, so a later candidate can push an earlier one
    back to training. `offer` returns the documents that go to training now. Candidates are
    checked with `reject` before they compete, so the held-out set is `split_heldout`'s on the
    accepted documents."""

    def __init__(self, fraction: float, seed: int, max_docs: int | None = None,
                 reject: Callable[[Document], bool] | None = None):
        _check_fraction(fraction)
        self.fraction, self.seed, self.max_docs = fraction, seed, max_docs
        self.reject = reject  # candidates it returns True for are dropped (e.g. contaminated ones)
        self.rejected = 0
        self.heap: list[tuple[float, int, Document]] = []  # (-unit, -arrival, doc): largest unit on top
        self.arrivals = 0

    def offer(self, doc: Document) -> list[Document]:
        unit = stable_unit(dedup_key(doc.text), self.seed, "heldout")
        if unit >= self.fraction or (self.max_docs is not None and self.max_docs <= 0):
            return [doc]
        if self.reject is not None and self.reject(doc):
            self.rejected += 1
            return []
        # ties on the unit go to the earlier arrival, as in split_heldout's sort on (unit, position)
        heapq.heappush(self.heap, (-unit, -self.arrivals, doc))
        self.arrivals += 1
        if self.max_docs is not None and len(self.heap) > self.max_docs:
            return [heapq.heappop(self.heap)[2]]
        return []

    def heldout(self) -> list[Document]:
        """The held-out documents in arrival order."""
        return [doc for _, _, doc in sorted(self.heap, key=lambda item: -item[1])]


def contamination_index(eval_keys: set[str]) -> _ContainmentIndex:
    """Build once, then pass to `is_contaminated` for every document of a stream."""
    return _ContainmentIndex.build(eval_keys)
