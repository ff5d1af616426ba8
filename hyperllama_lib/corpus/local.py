"""Local files: the offline data folder (`$HYPERLLAMA_DATA`, see README) with training text, UDHR and
BLiMP; minimal-pair files; held-out text files. One line of a text file is one document.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import DataError
from ..languages import to_code
from ..params import DATA_ENV
from .text import Document, dedup_key, normalize_text


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
