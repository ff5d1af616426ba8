"""Minimal-pair sources for evaluation: BLiMP, MultiBLiMP and mParaRel, from files or the Hub.

Pair sources, all returning PAIR_COLUMNS first and then the source's other columns:
- BLiMP jsonl (`sentence_good`, `sentence_bad`, `UID`, `field`, `linguistics_term`, `pairID`):
  local files, plain or gzipped, a single file or a folder of per-paradigm files
  (`load_blimp_local`), or the Hub (`load_blimp_hub`, through `datasets`): `nyu-mll/blimp` has one
  config per paradigm with a "train" split.
- MultiBLiMP `data.tsv` (`jumelet/multiblimp`, one `<iso>/data.tsv` per language; tab-separated,
  header row, columns `sen`, `wrong_sen`, `phenomenon`, `lang`, `prefix`, `metadata`, ...):
  `load_multiblimp_local`, `load_multiblimp_hub` (hf_hub_download of `<iso>/data.tsv`, a layout the
  Hub's file listing confirms). paradigm = phenomenon (SV-#, SV-P, SV-G, SP-#, SP-P, SP-G); field =
  the agreement feature (number, person, gender); linguistics_term = subject-verb or
  subject-participle agreement.
- The paper's own sets, whose dataset cards could not be consulted offline: `liu-nlp/blimp-single-error`
  (a filtered BLiMP, English; `load_blimp_single_error_hub`) and `liu-nlp/minimal_pair_mpararel`
  (factual knowledge as minimal pairs, several languages; `load_mpararel_hub`). Both go through
  `load_hub_pairs`: the repo's table files as hub_tables finds them (parquet, jsonl, json, csv, tsv; one
  config per folder or a single table; one split per config: test, else validation, else train), and
  in each table, columns picked by name (first candidate present wins, `*_COLUMN_CANDIDATES`):
  * the pair: a good and a bad sentence column with text (BLiMP's sentence_good/sentence_bad,
    good/bad, sen/wrong_sen, correct/incorrect, true/false, ...), or else mParaRel's own shape, a
    template with [X] and [Y] (template) filled with the subject (sub_label) and with the right
    (obj_label) and a wrong object (wrong_obj_label, distractor, ...); a list-valued cell counts as
    its first item;
  * paradigm: UID, paradigm, phenomenon, relation (mParaRel's P36...), ...; without one, the file's
    or config's name when it names neither a split nor a language (BLiMP's per-paradigm configs);
  * language: a lang/language column, else (mParaRel) the config's folders or the file's name, as ISO
    639-3 or 639-1 codes or English names, optionally with a script or region ("sv", "swe_Latn",
    "Swedish", "en-US"); blimp-single-error is English whatever it says. Labels that are no language
    of ours are left out (mParaRel has dozens), and a repo none of whose labels is ours is an error;
  * field, linguistics_term, pairID/pair_id are kept where present; every other column comes along.
  Subsampling is per language and paradigm, with the same seeded streams as BLiMP's.
A malformed source raises PairsFormatError naming the file (for the Hub: the repo and the path inside
it) and the line or row, or the columns it found; a failed download is a DataError. Both are one line.
"""
from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .. import languages
from ..errors import PairsFormatError, ParamError  # noqa: F401  (defined in errors.py)
from . import hub_tables

BLIMP_HUB_ID = "nyu-mll/blimp"
BLIMP_SINGLE_ERROR_HUB_ID = "liu-nlp/blimp-single-error"
MULTIBLIMP_HUB_ID = "jumelet/multiblimp"
MPARAREL_HUB_ID = "liu-nlp/minimal_pair_mpararel"

PAIR_COLUMNS = ["good", "bad", "paradigm", "field", "linguistics_term", "pair_id"]
PAIR_FORMATS = ("blimp", "multiblimp")

# Assumed column names of the Hub tables whose layout is not documented (blimp-single-error, mParaRel),
# first match wins. A sentence column must hold text (a boolean "correct" column is no sentence).
GOOD_COLUMN_CANDIDATES = ("sentence_good", "good_sentence", "good", "sen", "correct", "correct_sentence",
                          "sentence_correct", "true", "true_sentence", "grammatical", "acceptable", "positive")
BAD_COLUMN_CANDIDATES = ("sentence_bad", "bad_sentence", "bad", "wrong_sen", "incorrect", "incorrect_sentence",
                         "sentence_incorrect", "false", "false_sentence", "ungrammatical", "unacceptable",
                         "negative")
# the template layout: a sentence with [X] (subject) and [Y] (object), filled with a right and a wrong object
TEMPLATE_COLUMN_CANDIDATES = ("template", "pattern")
SUBJECT_COLUMN_CANDIDATES = ("sub_label", "subject", "subj_label", "subj", "sub")
OBJECT_COLUMN_CANDIDATES = ("obj_label", "object", "correct_object", "true_object", "obj", "target_true", "answer")
WRONG_OBJECT_COLUMN_CANDIDATES = ("wrong_obj_label", "incorrect_obj_label", "wrong_object", "incorrect_object",
                                  "false_object", "target_false", "distractor", "foil", "counterfactual")
PARADIGM_COLUMN_CANDIDATES = ("UID", "paradigm", "phenomenon", "relation", "relation_id", "predicate_id", "pid",
                              "rel")
LANG_COLUMN_CANDIDATES = ("lang", "language", "lang_code", "language_code", "iso", "iso_code", "locale")
PAIR_ID_COLUMN_CANDIDATES = ("pairID", "pair_id")
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(?:[-_][a-z]{2,4})?$", re.IGNORECASE)  # ISO 639, maybe a script/region

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


def _require_known(wanted: Iterable[str], known: Iterable[str], where: str, what: str = "BLiMP paradigm") -> None:
    missing = sorted(set(wanted) - set(known))
    if missing:
        raise ParamError(f"unknown {what}(s) {missing} (not in {where})")


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
    """MultiBLiMP pairs of each ISO code, downloaded as `<iso>/data.tsv` from `jumelet/multiblimp`
    (hf_hub_download: one file per language, not the 101 languages of the repo); a failed download is
    a DataError."""
    frames = []
    for iso in [langs] if isinstance(langs, str) else langs:
        path = hub_tables.fetch_file(MULTIBLIMP_HUB_ID, f"{iso}/data.tsv", revision=revision, cache_dir=cache_dir)
        frames.append(load_multiblimp_local(path, lang=iso,
                                            max_pairs_per_paradigm=max_pairs_per_paradigm, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else _to_frame([])


# ---------------------------------------------------------------- the paper's sets on the Hub (tables)

def _is_text_column(table: pd.DataFrame, column: str) -> bool:
    values = table[column].dropna()
    return not values.empty and isinstance(values.iloc[0], str)


def _pick_column(table: pd.DataFrame, given: str | None, candidates: Sequence[str], what: str,
                 where: str, text: bool = False) -> str | None:
    """The column given (it must exist), else the first candidate present (with text values, if `text`)."""
    columns = [str(c) for c in table.columns]
    if given is not None:
        if given not in columns:
            raise PairsFormatError(f"{where}: no column {given!r} for the {what} (columns: "
                                   f"{hub_tables.columns_text(columns)})")
        return given
    return next((c for c in candidates if c in columns and (not text or _is_text_column(table, c))), None)


def _first(value: Any) -> Any:
    """A list-valued cell (e.g. mParaRel's obj_label, a list of aliases) counts as its first item."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return value[0] if len(value) else None
    return value


def _filled(template: str, subject: Any, obj: Any) -> Any:
    if not isinstance(template, str) or "[Y]" not in template:
        return None
    subject, obj = _first(subject), _first(obj)
    if not isinstance(obj, str) or ("[X]" in template and not isinstance(subject, str)):
        return None
    return template.replace("[X]", subject or "").replace("[Y]", obj)


def _pair_columns(table: pd.DataFrame, where: str, good_column: str | None,
                  bad_column: str | None) -> tuple[str | None, ...]:
    """Where a table's pairs come from: (good, bad) sentence columns, else (template, subject, right
    object, wrong object) for a template with [X] (subject) and [Y] (object); the subject may be None."""
    good = _pick_column(table, good_column, GOOD_COLUMN_CANDIDATES, "good sentence", where, text=True)
    bad = _pick_column(table, bad_column, BAD_COLUMN_CANDIDATES, "bad sentence", where, text=True)
    if good and bad:
        return good, bad
    template = _pick_column(table, None, TEMPLATE_COLUMN_CANDIDATES, "template", where, text=True)
    subject = _pick_column(table, None, SUBJECT_COLUMN_CANDIDATES, "subject", where)
    right = _pick_column(table, None, OBJECT_COLUMN_CANDIDATES, "object", where)
    wrong = _pick_column(table, None, WRONG_OBJECT_COLUMN_CANDIDATES, "wrong object", where)
    if good_column is None and bad_column is None and template and right and wrong:
        return template, subject, right, wrong
    raise PairsFormatError(
        f"{where}: no good and bad sentence columns (tried {', '.join(GOOD_COLUMN_CANDIDATES)} and "
        f"{', '.join(BAD_COLUMN_CANDIDATES)}, with text) and no template with [Y] and a right and a wrong "
        f"object (tried {', '.join(TEMPLATE_COLUMN_CANDIDATES)}; {', '.join(OBJECT_COLUMN_CANDIDATES)}; "
        f"{', '.join(WRONG_OBJECT_COLUMN_CANDIDATES)}); columns: {hub_tables.columns_text(table.columns)}")


def _sentences(table: pd.DataFrame, columns: tuple[str | None, ...]) -> tuple[pd.Series, pd.Series]:
    """The good and bad sentences of the rows of a table, from `_pair_columns`' columns."""
    if len(columns) == 2:
        return table[columns[0]], table[columns[1]]
    template, subject, right, wrong = columns
    templates = table[template].tolist()  # lists: iterating an arrow-backed column cell by cell is slow
    subjects = table[subject].tolist() if subject else [None] * len(table)
    return tuple(pd.Series([_filled(t, s, o) for t, s, o in zip(templates, subjects, table[objects].tolist())],
                           index=table.index, dtype=object) for objects in (right, wrong))


def _label_language(label: Any) -> str | None:
    return languages.from_label(label) if isinstance(label, str) and label else None


def _names_a_language(name: str) -> bool:
    """Whether a config or file name is a language label: one of ours, or shaped like an ISO 639 code
    ("de", "deu", "zh_Hans"), so that another language's config is left out rather than an error."""
    return _label_language(name) is not None or bool(_LANGUAGE_CODE.match(name))


def _file_language(file: hub_tables.TableFile) -> tuple[str, str | None] | None:
    """The language label a file's config (any of its folders) or name gives, and our code for it (None: a
    language not ours); None when neither names a language."""
    return next(((part, _label_language(part)) for part in [*file.config.split("/"), file.name]
                 if _names_a_language(part)), None)


def _default_paradigm(file: hub_tables.TableFile) -> str | None:
    """For a table without a paradigm column: the file's name or else its config, unless that names a
    split, a language or nothing in particular (data, default)."""
    for name in (file.name, file.config):
        if name not in ("data", "default") and not hub_tables.is_split_name(name) and not _names_a_language(name):
            return name
    return None


def _is_sentence(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _cells(column: pd.Series | None, n: int, index: pd.Index, default: Any = None) -> pd.Series:
    """A column's values as text (missing: None), or `default` in every row."""
    if column is None:
        return pd.Series([default] * n, index=index, dtype=object)
    return column.map(lambda v: None if _is_missing(v) else str(v)).astype(object)


def _file_pairs(file: hub_tables.TableFile, table: pd.DataFrame, langs: set[str] | None,
                default_lang: str | None, good_column: str | None, bad_column: str | None,
                paradigm_column: str | None, first_id: int) -> tuple[pd.DataFrame, set[str]]:
    """The pairs of one table file in the languages wanted, and the language labels it has."""
    where = file.where
    columns = _pair_columns(table, where, good_column, bad_column)
    lang_column = _pick_column(table, None, LANG_COLUMN_CANDIDATES, "language", where)
    if lang_column is not None:
        labels = table[lang_column].astype(str)
        seen = set(labels.unique())
        codes = labels.map({label: _label_language(label) for label in seen})
    else:
        label = (default_lang, default_lang) if default_lang else _file_language(file)
        if label is None:
            raise PairsFormatError(f"{where}: no language column (tried {', '.join(LANG_COLUMN_CANDIDATES)}) "
                                   f"and neither the config {file.config!r} nor the file name is a language; "
                                   f"columns: {hub_tables.columns_text(table.columns)}")
        codes, seen = pd.Series([label[1]] * len(table), index=table.index, dtype=object), {label[0]}
    keep = codes.notna() & (codes.isin(langs) if langs is not None else True)
    table, codes = table[keep], codes[keep]  # before the sentences: mParaRel has dozens of languages
    good, bad = _sentences(table, columns)
    empty = np.array([not (_is_sentence(g) and _is_sentence(b)) for g, b in zip(good.tolist(), bad.tolist())],
                     dtype=bool)
    if empty.any():
        row = int(table.index[np.flatnonzero(empty)[0]])
        raise PairsFormatError(f"{where}, row {row}: no {' or '.join(columns[-2:])} to make a pair from "
                               f"(missing, empty, or a template without [Y])")
    paradigm = _pick_column(table, paradigm_column, PARADIGM_COLUMN_CANDIDATES, "paradigm", where)
    field = _pick_column(table, None, ("field",), "field", where)
    term = _pick_column(table, None, ("linguistics_term",), "linguistics term", where)
    pair_id = _pick_column(table, None, PAIR_ID_COLUMN_CANDIDATES, "pair id", where)
    index, n = table.index, len(table)
    ids = pd.Series(index + first_id, index=index)  # the row's place in its config, kept rows or not
    pairs = pd.DataFrame({
        "good": good, "bad": bad,
        "paradigm": _cells(table[paradigm] if paradigm else None, n, index, _default_paradigm(file)),
        "field": _cells(table[field] if field else None, n, index),
        "linguistics_term": _cells(table[term] if term else None, n, index),
        "pair_id": table[pair_id] if pair_id else ids,
    })
    taken = {*columns, paradigm, pair_id, *PAIR_COLUMNS, "lang"}  # as BLiMP's loader, no UID beside paradigm
    extra = table[[c for c in table.columns if c not in taken]]
    return pd.concat([pairs, extra], axis=1).assign(lang=codes).reset_index(drop=True), seen


def _subsample_frame(pairs: pd.DataFrame, max_pairs: int | None, seed: int) -> pd.DataFrame:
    """`_subsample_by_paradigm` for a table: per language, then per paradigm, kept in order."""
    if max_pairs is None or pairs.empty:
        return pairs
    keep: list[int] = []
    for _, by_lang in pairs.groupby("lang", sort=False):
        groups = by_lang.groupby(by_lang["paradigm"].astype(str), sort=False).indices
        keep += [by_lang.index[i] for paradigm, idx in groups.items()
                 for i in _subsample(list(idx), paradigm, max_pairs, seed)]
    return pairs.loc[sorted(keep)].reset_index(drop=True)


def load_hub_pairs(repo_id: str, langs: Sequence[str] | None = None, default_lang: str | None = None,
                   paradigms: Sequence[str] | None = None, max_pairs_per_paradigm: int | None = None,
                   seed: int = 0, good_column: str | None = None, bad_column: str | None = None,
                   paradigm_column: str | None = None, revision: str | None = None,
                   cache_dir: str | None = None) -> pd.DataFrame:
    """Minimal pairs from every config of a Hub dataset repo (its tables: hub_tables), in our language
    codes (column lang), restricted to `langs`, subsampled per language and paradigm.

    Columns are picked from the candidate names (module doc) unless given. A table's language is its
    language column, else `default_lang`, else the config or file name; labels that are no language of ours
    are left out, and a repo none of whose labels is one of ours is a PairsFormatError.
    """
    root = hub_tables.fetch_repo(repo_id, revision, cache_dir)
    wanted = set(langs) if langs is not None else None
    frames, labels, next_id, files = [], set(), {}, hub_tables.repo_tables(root, repo_id)
    for file in files:
        table = file.read()
        if table.empty:
            continue
        table.columns = [str(c) for c in table.columns]
        first_id = next_id.get(file.config, 0)
        pairs, seen = _file_pairs(file, table, wanted, default_lang, good_column, bad_column, paradigm_column,
                                  first_id)
        next_id[file.config] = first_id + len(table)
        frames.append(pairs)
        labels |= seen
    if not frames:
        raise PairsFormatError(f"{repo_id}: its tables hold no rows ({', '.join(f.path for f in files[:5])})")
    if not any(_label_language(label) for label in labels):
        raise PairsFormatError(f"{repo_id}: none of its language labels ({', '.join(sorted(labels)[:20])}) is "
                               f"one of ours ({', '.join(languages.LANGUAGES)}, as ISO 639-3 or 639-1 codes or "
                               f"English names); first file {files[0].path}")
    pairs = pd.concat(frames, ignore_index=True)
    if paradigms is not None:
        _require_known(paradigms, pairs["paradigm"].dropna().unique(), repo_id, what="paradigm")
        pairs = pairs[pairs["paradigm"].isin(set(paradigms))].reset_index(drop=True)
    return _subsample_frame(pairs, max_pairs_per_paradigm, seed)


def load_blimp_single_error_hub(paradigms: Sequence[str] | None = None,
                                max_pairs_per_paradigm: int | None = None, seed: int = 0,
                                revision: str | None = None, cache_dir: str | None = None,
                                repo_id: str = BLIMP_SINGLE_ERROR_HUB_ID) -> pd.DataFrame:
    """The paper's filtered BLiMP (English): pairs in BLiMP's field names or any of the candidates,
    paradigm `UID` (else the config or file name). Layout assumed, see the module doc."""
    return load_hub_pairs(repo_id, langs=[languages.ENGLISH], default_lang=languages.ENGLISH, paradigms=paradigms,
                          max_pairs_per_paradigm=max_pairs_per_paradigm, seed=seed, revision=revision,
                          cache_dir=cache_dir)


def load_mpararel_hub(langs: Sequence[str] | None = None, max_pairs_per_relation: int | None = None,
                      seed: int = 0, good_column: str | None = None, bad_column: str | None = None,
                      relation_column: str | None = None, revision: str | None = None,
                      cache_dir: str | None = None, repo_id: str = MPARAREL_HUB_ID) -> pd.DataFrame:
    """mParaRel minimal pairs in `langs` (our codes; None: every language of ours it has), paradigm the
    relation (e.g. P36) where it has one. Layout assumed, see the module doc."""
    return load_hub_pairs(repo_id, langs=langs, max_pairs_per_paradigm=max_pairs_per_relation, seed=seed,
                          good_column=good_column, bad_column=bad_column, paradigm_column=relation_column,
                          revision=revision, cache_dir=cache_dir)

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
