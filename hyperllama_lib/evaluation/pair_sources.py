"""Minimal-pair sources for evaluation: BLiMP, MultiBLiMP and mParaRel, from files or the Hub.

Pair sources, all returning PAIR_COLUMNS first and then the source's other columns:
- BLiMP jsonl (`sentence_good`, `sentence_bad`, `UID`, `field`, `linguistics_term`, `pairID`):
  local files, plain or gzipped, a single file or a folder of per-paradigm files
  (`load_blimp_local`), or the Hub (`load_blimp_hub`): `nyu-mll/blimp` has one config per paradigm
  with a "train" split. `liu-nlp/blimp-single-error` (the paper's filtered BLiMP) is, we assume,
  in BLiMP's field names, either one config per paradigm or a single config with a `UID` (or
  `paradigm`) column; its dataset card could not be consulted offline.
- MultiBLiMP `data.tsv` (`jumelet/multiblimp`, one `<iso>/data.tsv` per language; tab-separated,
  header row, columns `sen`, `wrong_sen`, `phenomenon`, `lang`, `prefix`, `metadata`, ...):
  `load_multiblimp_local`, `load_multiblimp_hub` (hf_hub_download of `<iso>/data.tsv`).
  paradigm = phenomenon (SV-#, SV-P, SV-G, SP-#, SP-P, SP-G); field = the agreement feature
  (number, person, gender); linguistics_term = subject-verb or subject-participle agreement.
- mParaRel minimal pairs (`liu-nlp/minimal_pair_mpararel`, `load_mpararel_hub`): the column
  layout is not documented anywhere we could reach, so the good/bad/relation/language columns are
  picked from candidate names (`*_COLUMN_CANDIDATES`) or given explicitly.
A malformed source raises PairsFormatError naming the file (or Hub table) and the line (or row).
"""
from __future__ import annotations

import csv
import gzip
import json
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..errors import PairsFormatError, ParamError  # noqa: F401  (defined in errors.py)

BLIMP_HUB_ID = "nyu-mll/blimp"
BLIMP_SINGLE_ERROR_HUB_ID = "liu-nlp/blimp-single-error"
MULTIBLIMP_HUB_ID = "jumelet/multiblimp"
MPARAREL_HUB_ID = "liu-nlp/minimal_pair_mpararel"

PAIR_COLUMNS = ["good", "bad", "paradigm", "field", "linguistics_term", "pair_id"]
PAIR_FORMATS = ("blimp", "multiblimp")

# Assumed column names for pair tables without a documented layout (mParaRel), first match wins.
GOOD_COLUMN_CANDIDATES = ("sentence_good", "good", "correct", "sen", "true_sentence")
BAD_COLUMN_CANDIDATES = ("sentence_bad", "bad", "incorrect", "wrong_sen", "false_sentence")
PARADIGM_COLUMN_CANDIDATES = ("UID", "paradigm", "relation", "predicate_id", "pid")
LANG_COLUMN_CANDIDATES = ("lang", "language")

_BLIMP_KEYS = {"sentence_good", "sentence_bad", "UID", "paradigm", "field", "linguistics_term",
               "pairID", "pair_id"}
_AGREEMENT = {"SV": "subject-verb agreement", "SP": "subject-participle agreement"}
_FEATURE = {"#": "number", "P": "person", "G": "gender"}


# ---------------------------------------------------------------- reading files

def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, plain or gzipped; read errors -> PairsFormatError.

    Lines are decoded one by one (not in chunks) so that a decoding error names its own line;
    line ends are kept, so csv can read quoted fields that span lines.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if _is_gzip(path) else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise PairsFormatError(f"{path}, line {lineno}: not UTF-8 ({err.reason} at byte "
                                           f"{err.start})") from None
                yield lineno, line
    except (EOFError, OSError, zlib.error) as err:
        raise PairsFormatError(f"{path}, line {lineno + 1}: unreadable "
                               f"({type(err).__name__}: {err})") from None


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    for suffix in (".jsonl", ".tsv"):
        name = name.removesuffix(suffix)
    return name


def _to_frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    frame = pd.DataFrame(rows)
    return frame[PAIR_COLUMNS + [c for c in frame.columns if c not in PAIR_COLUMNS]]


def _subsample(items: list, paradigm: str, max_pairs: int | None, seed: int) -> list:
    """The first `max_pairs` of a seeded permutation, kept in order; one stream per paradigm."""
    if max_pairs is None or max_pairs >= len(items):
        return items
    rng = np.random.default_rng([seed, zlib.crc32(paradigm.encode())])
    keep = np.sort(rng.permutation(len(items))[:max_pairs])
    return [items[i] for i in keep]


def _subsample_by_paradigm(rows: list[dict], max_pairs: int | None, seed: int) -> list[dict]:
    if max_pairs is None:
        return rows
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row["paradigm"]), []).append(i)
    keep = {i for paradigm, idx in groups.items() for i in _subsample(idx, paradigm, max_pairs, seed)}
    return [row for i, row in enumerate(rows) if i in keep]


def _require_known(wanted: Iterable[str], known: Iterable[str], where: str) -> None:
    missing = sorted(set(wanted) - set(known))
    if missing:
        raise ParamError(f"unknown BLiMP paradigm(s) {missing} (not in {where})")


# ---------------------------------------------------------------- BLiMP

def _blimp_row(record: Any, index: int, where: str, default_paradigm: str) -> dict:
    if not isinstance(record, dict):
        raise PairsFormatError(f"{where}: not a BLiMP record (a JSON object expected)")
    empty = [k for k in ("sentence_good", "sentence_bad")
             if not isinstance(record.get(k), str) or not record[k]]
    if empty:
        raise PairsFormatError(f"{where}: not a BLiMP record (missing or empty {', '.join(empty)})")
    try:
        pair_id = int(record.get("pairID", record.get("pair_id", index)))
    except (TypeError, ValueError):
        raise PairsFormatError(f"{where}: pair id {record.get('pairID')!r} is not a number") from None
    row = {
        "good": record["sentence_good"],
        "bad": record["sentence_bad"],
        "paradigm": str(record.get("UID") or record.get("paradigm") or default_paradigm),
        "field": record.get("field"),
        "linguistics_term": record.get("linguistics_term"),
        "pair_id": pair_id,
    }
    row.update({k: v for k, v in record.items() if k not in _BLIMP_KEYS and k not in row})
    return row


def read_blimp_jsonl(path: str | Path) -> list[dict]:
    """Pair rows of one BLiMP jsonl file (plain or .gz); the paradigm is `UID` (else the file name)."""
    path = Path(path)
    rows = []
    for lineno, line in _numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PairsFormatError(f"{where}: malformed JSON ({err.msg})") from None
        rows.append(_blimp_row(record, len(rows), where, _stem(path)))
    return rows


def _blimp_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            files[_stem(path)] = path
    return files


def load_blimp_local(data_dir: str | Path, paradigms: Sequence[str] | None = None,
                     max_pairs_per_paradigm: int | None = None, seed: int = 0) -> pd.DataFrame:
    """BLiMP pairs from a jsonl file, or a folder (`<dir>/blimp/` or `<dir>/`) of `*.jsonl[.gz]`.

    In a folder, paradigms are file names, read in sorted order; in a single file, `UID` values.
    """
    path = Path(data_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        rows = read_blimp_jsonl(path)
        if paradigms is not None:
            _require_known(paradigms, (r["paradigm"] for r in rows), str(path))
            rows = [r for r in rows if r["paradigm"] in set(paradigms)]
        return _to_frame(_subsample_by_paradigm(rows, max_pairs_per_paradigm, seed))
    folder = path / "blimp" if (path / "blimp").is_dir() else path
    files = _blimp_files(folder) if folder.is_dir() else {}
    if not files:
        raise FileNotFoundError(f"no BLiMP files (*.jsonl or *.jsonl.gz) under {folder}")
    wanted = sorted(files) if paradigms is None else list(paradigms)
    _require_known(wanted, files, str(folder))
    rows = [row for paradigm in wanted for row in read_blimp_jsonl(files[paradigm])]
    return _to_frame(_subsample_by_paradigm(rows, max_pairs_per_paradigm, seed))


def load_blimp_hub(paradigms: Sequence[str] | None = None,
                   max_pairs_per_paradigm: int | None = None, seed: int = 0,
                   cache_dir: str | None = None, repo_id: str = BLIMP_HUB_ID,
                   split: str = "train") -> pd.DataFrame:
    """BLiMP pairs from a Hub dataset in BLiMP's field names, as load_blimp_local returns them.

    `nyu-mll/blimp` has one config per paradigm; a dataset with a single config (e.g. "default")
    is read whole and its paradigms are the `UID` (or `paradigm`) values.
    """
    import datasets  # imported late: slow, and only needed with Hub access

    configs = sorted(datasets.get_dataset_config_names(repo_id))
    per_paradigm = len(configs) > 1
    if per_paradigm and paradigms is not None:
        _require_known(paradigms, configs, repo_id)
        configs = list(paradigms)
    rows = []
    for config in configs:
        ds = datasets.load_dataset(repo_id, config, split=split, cache_dir=cache_dir)
        rows += [_blimp_row(r, i, f"{repo_id} ({config}), row {i}", config) for i, r in enumerate(ds)]
    if paradigms is not None and not per_paradigm:
        _require_known(paradigms, (r["paradigm"] for r in rows), repo_id)
        rows = [r for r in rows if r["paradigm"] in set(paradigms)]
    return _to_frame(_subsample_by_paradigm(rows, max_pairs_per_paradigm, seed))


def load_blimp_single_error_hub(**kwargs: Any) -> pd.DataFrame:
    """The paper's filtered BLiMP, `liu-nlp/blimp-single-error` (layout assumed, see module doc)."""
    return load_blimp_hub(repo_id=BLIMP_SINGLE_ERROR_HUB_ID, **kwargs)


# ---------------------------------------------------------------- MultiBLiMP

def _multiblimp_row(record: dict[str, str], index: int, where: str, lang: str | None) -> dict:
    if not record["sen"] or not record["wrong_sen"]:
        raise PairsFormatError(f"{where}: empty sen or wrong_sen")
    phenomenon = record.get("phenomenon") or None
    kind, _, feature = (phenomenon or "").partition("-")
    row = {
        "good": record["sen"],
        "bad": record["wrong_sen"],
        "paradigm": phenomenon,
        "field": _FEATURE.get(feature),
        "linguistics_term": _AGREEMENT.get(kind),
        "pair_id": index,
    }
    row.update({k: v for k, v in record.items() if k not in ("sen", "wrong_sen") and k not in row})
    row["lang"] = record.get("lang") or lang
    return row


def load_multiblimp_local(path: str | Path, lang: str | None = None,
                          max_pairs_per_paradigm: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Pairs of a MultiBLiMP `data.tsv` (plain or .gz), in file order.

    `lang` fills the `lang` column where the file has none; by default, the folder name of a
    `<iso>/data.tsv`. Values stay strings, as in the file.
    """
    path = Path(path)
    if lang is None and _stem(path) == "data" and len(path.parent.name) == 3:
        lang = path.parent.name
    reader = csv.reader((line for _, line in _numbered_lines(path)), delimiter="\t")
    rows = []
    try:
        header = next(reader, None)
        if header is None:
            raise PairsFormatError(f"{path}: empty file (expected a header with sen and wrong_sen)")
        missing = [c for c in ("sen", "wrong_sen") if c not in header]
        if missing:
            raise PairsFormatError(f"{path}, line 1: missing column(s) {', '.join(missing)}; "
                                   "expected MultiBLiMP's data.tsv header")
        for fields in reader:
            if not fields:
                continue
            where = f"{path}, line {reader.line_num}"
            if len(fields) != len(header):
                raise PairsFormatError(f"{where}: {len(fields)} tab-separated fields, "
                                       f"the header has {len(header)}")
            rows.append(_multiblimp_row(dict(zip(header, fields)), len(rows), where, lang))
    except csv.Error as err:
        raise PairsFormatError(f"{path}, line {reader.line_num}: {err}") from None
    return _to_frame(_subsample_by_paradigm(rows, max_pairs_per_paradigm, seed))


def load_multiblimp_hub(langs: str | Sequence[str], cache_dir: str | None = None,
                        revision: str | None = None, max_pairs_per_paradigm: int | None = None,
                        seed: int = 0) -> pd.DataFrame:
    """MultiBLiMP pairs of each ISO code, downloaded as `<iso>/data.tsv` from `jumelet/multiblimp`."""
    from huggingface_hub import hf_hub_download  # imported late: only needed with Hub access

    frames = []
    for iso in [langs] if isinstance(langs, str) else langs:
        path = hf_hub_download(repo_id=MULTIBLIMP_HUB_ID, filename=f"{iso}/data.tsv",
                               repo_type="dataset", cache_dir=cache_dir, revision=revision)
        frames.append(load_multiblimp_local(path, lang=iso,
                                            max_pairs_per_paradigm=max_pairs_per_paradigm, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else _to_frame([])


# ---------------------------------------------------------------- generic tables (mParaRel)

def _pick_column(columns: Sequence[str], given: str | None, candidates: Sequence[str],
                 what: str, where: str, required: bool = True) -> str | None:
    if given is not None:
        if given not in columns:
            raise PairsFormatError(f"{where}: no column {given!r} for the {what} "
                                   f"(columns: {', '.join(columns)})")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise PairsFormatError(f"{where}: no {what} column (tried {', '.join(candidates)}; "
                               f"columns: {', '.join(columns)}); name it explicitly")
    return found


def pairs_from_records(records: Sequence[dict], where: str, good_column: str | None = None,
                       bad_column: str | None = None, paradigm_column: str | None = None,
                       lang: str | None = None) -> pd.DataFrame:
    """Pairs from records of any table: good/bad/paradigm columns given or picked by name."""
    if not records:
        return _to_frame([])
    columns = list(records[0])
    good = _pick_column(columns, good_column, GOOD_COLUMN_CANDIDATES, "good sentence", where)
    bad = _pick_column(columns, bad_column, BAD_COLUMN_CANDIDATES, "bad sentence", where)
    paradigm = _pick_column(columns, paradigm_column, PARADIGM_COLUMN_CANDIDATES, "paradigm",
                            where, required=False)
    lang_column = _pick_column(columns, None, LANG_COLUMN_CANDIDATES, "language", where,
                               required=False)
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record.get(good), str) or not isinstance(record.get(bad), str) \
                or not record[good] or not record[bad]:
            raise PairsFormatError(f"{where}, row {i}: missing or empty {good!r} or {bad!r}")
        row = {"good": record[good], "bad": record[bad],
               "paradigm": str(record[paradigm]) if paradigm else None,
               "field": None, "linguistics_term": None, "pair_id": i}
        row.update({k: v for k, v in record.items() if k not in (good, bad) and k not in row})
        row["lang"] = record.get(lang_column) if lang_column else lang
        rows.append(row)
    return _to_frame(rows)


def load_mpararel_hub(configs: Sequence[str] | None = None, split: str = "train",
                      good_column: str | None = None, bad_column: str | None = None,
                      paradigm_column: str | None = None, cache_dir: str | None = None,
                      repo_id: str = MPARAREL_HUB_ID) -> pd.DataFrame:
    """mParaRel minimal pairs; every config by default (a config name other than "default" is
    taken as the language where the table has no language column). Layout assumed, see module doc."""
    import datasets  # imported late: slow, and only needed with Hub access

    if configs is None:
        configs = sorted(datasets.get_dataset_config_names(repo_id))
    frames = []
    for config in configs:
        records = list(datasets.load_dataset(repo_id, config, split=split, cache_dir=cache_dir))
        frames.append(pairs_from_records(records, f"{repo_id} ({config})", good_column, bad_column,
                                         paradigm_column, lang=None if config == "default" else config))
    return pd.concat(frames, ignore_index=True) if frames else _to_frame([])


# ---------------------------------------------------------------- pair files by format

def detect_pairs_format(path: str | Path) -> str:
    """blimp for *.jsonl[.gz] and folders, multiblimp for *.tsv[.gz]."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    if path.is_dir() or name.endswith(".jsonl"):
        return "blimp"
    if name.endswith(".tsv"):
        return "multiblimp"
    raise PairsFormatError(f"{path}: cannot tell the format from the name "
                           f"(expected .jsonl[.gz] or .tsv[.gz]); give one of {', '.join(PAIR_FORMATS)}")


def load_pairs_file(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Pairs of a BLiMP jsonl (file or folder) or a MultiBLiMP tsv; format from the name by default."""
    fmt = fmt or detect_pairs_format(path)
    if fmt == "blimp":
        return load_blimp_local(path)
    if fmt == "multiblimp":
        return load_multiblimp_local(path)
    raise ParamError(f"unknown pairs format {fmt!r}; expected one of {', '.join(PAIR_FORMATS)}")
