"""The Hugging Face Hub sources of the paper scale, streamed: FineWeb-2, SmolLM-Corpus (English and
python-edu, whose file contents come from Software Heritage), shuffled by a seeded buffer."""
from __future__ import annotations

import gzip
import random
import unicodedata
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from ..errors import DataError
from ..languages import LANGUAGES, to_code
from .text import Document, normalize_text

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
    import datasets  # imported lazily: slow to import, only needed with Hub access

    rows = datasets.load_dataset(repo, config, split="train", streaming=True)
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
