"""Evaluation: minimal-pair accuracy (BLiMP, MultiBLiMP, mParaRel-style pairs) and bits per byte.

Scoring conventions (as in the paper): a sentence's score is the summed log-probability of its
tokens conditioned on BOS, i.e. the model reads [BOS] + tokens and every token after BOS is scored;
a pair is correct when logp(good) > logp(bad) (a tie counts as wrong). `score_pairs` reports that
accuracy (`accuracy`) and two normalised variants, each with the same tie rule:
- `accuracy_token_mean`: mean log-probability per scored token (tokens of the model's tokenizer);
- `accuracy_byte_norm`: summed log-probability divided by the sentence's UTF-8 byte count.

Sentences longer than the model context (config.max_position_embeddings) are truncated to the
context with a warning: only the first context - 1 tokens after BOS are scored.

Batching: `batch_size` is a number of sequences (sentences or windows) per forward call, or "auto"
(or None): each batch then holds as much as fits under a memory budget, estimated from the float32
logits (batch x length x vocab) plus one layer's activations (see `sequence_bytes`).
- Sentences (`sentence_logprobs`, `score_pairs`) under a Llama-family model are packed into prefix
  trees (`prefix_tree`, rows of at most TREE_ROW_TOKENS nodes) and run through the lean forward of
  `fast_llama`: a prefix shared by several sentences is computed once (BLiMP: 0.62 tree nodes per
  token) and the output head runs only where a next token is scored. `share_prefixes=False`, or a
  model `fast_llama` does not support, scores each sentence in its own row instead.
- Rows are sorted by length and right-padded; real tokens never attend to padding, so scores do not
  depend on the batching beyond float rounding.

Precision (`dtype`): "auto" runs the model under bf16 autocast on CUDA and in fp32 elsewhere;
"fp32" and "bf16" force one. log_softmax always runs in fp32.

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

import contextlib
import csv
import gzip
import json
import warnings
import zlib
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import fast_llama, prefix_tree

BLIMP_HUB_ID = "nyu-mll/blimp"
BLIMP_SINGLE_ERROR_HUB_ID = "liu-nlp/blimp-single-error"
MULTIBLIMP_HUB_ID = "jumelet/multiblimp"
MPARAREL_HUB_ID = "liu-nlp/minimal_pair_mpararel"

PAIR_COLUMNS = ["good", "bad", "paradigm", "field", "linguistics_term", "pair_id"]
PAIR_FORMATS = ("blimp", "multiblimp")
BREAKDOWN_COLUMNS = ("paradigm", "field", "phenomenon", "lang")
# summary key -> per-pair column that decides it
VARIANTS = {"accuracy": "correct", "accuracy_token_mean": "correct_token_mean",
            "accuracy_byte_norm": "correct_byte_norm"}

# Assumed column names for pair tables without a documented layout (mParaRel), first match wins.
GOOD_COLUMN_CANDIDATES = ("sentence_good", "good", "correct", "sen", "true_sentence")
BAD_COLUMN_CANDIDATES = ("sentence_bad", "bad", "incorrect", "wrong_sen", "false_sentence")
PARADIGM_COLUMN_CANDIDATES = ("UID", "paradigm", "relation", "predicate_id", "pid")
LANG_COLUMN_CANDIDATES = ("lang", "language")

_BLIMP_KEYS = {"sentence_good", "sentence_bad", "UID", "paradigm", "field", "linguistics_term",
               "pairID", "pair_id"}
_AGREEMENT = {"SV": "subject-verb agreement", "SP": "subject-participle agreement"}
_FEATURE = {"#": "number", "P": "person", "G": "gender"}


class PairsFormatError(ValueError):
    """A pairs file or Hub table that is not in the expected format (names the source and line)."""


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
        raise ValueError(f"unknown BLiMP paradigm(s) {missing} (not in {where})")


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
    raise ValueError(f"unknown pairs format {fmt!r}; expected one of {', '.join(PAIR_FORMATS)}")


# ---------------------------------------------------------------- precision and memory

# On CPU, batches whose activations outgrow the caches are slower, not faster: on the 2-core test
# machine the tiny model scored BLiMP 1.8x faster with a 64 MiB budget than with 2 GiB.
DEFAULT_CPU_BUDGET_GB = 0.0625
CUDA_FREE_FRACTION = 0.5
# Bytes per token and vocabulary entry: the logits, the fp32 copy of the scored rows, log_softmax.
LOGIT_BYTES = 12
# Nodes per packed prefix-tree row: longer rows share more, but attention grows with length^2.
TREE_ROW_TOKENS = 128
_DTYPE_NAMES = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "bf16": "bf16",
                "bfloat16": "bf16", torch.float32: "fp32", torch.bfloat16: "bf16"}


def _autocast(device: torch.device, dtype: str | torch.dtype | None) -> ContextManager:
    """bf16 autocast for bf16 (auto: on CUDA); fp32 switches any caller's autocast off."""
    name = _DTYPE_NAMES.get("auto" if dtype is None else dtype)
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, fp32 or bf16")
    if name == "auto":
        if device.type != "cuda":
            # fp32 unless the caller opted into autocast (eval_grid does for precision: bf16)
            return contextlib.nullcontext()
        name = "bf16"
    if name == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def memory_budget_bytes(device: str | torch.device, memory_budget_gb: float | None = None) -> int:
    """Activation budget: memory_budget_gb if given, else half the free CUDA memory, else 64 MiB."""
    if memory_budget_gb is not None:
        return int(memory_budget_gb * 2**30)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return int(DEFAULT_CPU_BUDGET_GB * 2**30)


def sequence_bytes(config: Any, length: int) -> int:
    """Estimated peak activation bytes of scoring one sequence of `length` tokens.

    Logits dominate (LOGIT_BYTES x vocab per token). Under inference_mode only one layer's
    activations are alive at a time: hidden states, q/k/v/o, the MLP's three intermediate
    projections, and eager attention's length x length scores per head, all counted in fp32.
    """
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    per_token = LOGIT_BYTES * config.vocab_size + 4 * (6 * hidden + 3 * intermediate)
    return length * per_token + 4 * config.num_attention_heads * length * length


def auto_batch_size(model: torch.nn.Module, length: int, memory_budget_gb: float | None = None,
                    device: str | torch.device | None = None) -> int:
    """The largest number of `length`-token sequences whose activations fit the budget (>= 1)."""
    device = device if device is not None else next(model.parameters()).device
    budget = memory_budget_bytes(device, memory_budget_gb)
    return max(1, budget // sequence_bytes(model.config, length))


def _is_auto(batch_size: int | str | None) -> bool:
    if batch_size is None or batch_size == "auto":
        return True
    if isinstance(batch_size, (int, np.integer)) and batch_size >= 1:
        return False
    raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")


def _plan_batches(model: torch.nn.Module, lengths: Sequence[int], batch_size: int | str | None,
                  device: torch.device, memory_budget_gb: float | None) -> list[list[int]]:
    """Indices per batch, longest first; 'auto' sizes each batch by its longest (first) sequence."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if not _is_auto(batch_size):
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    budget = memory_budget_bytes(device, memory_budget_gb)
    batches, start = [], 0
    while start < len(order):
        size = max(1, budget // sequence_bytes(model.config, lengths[order[start]]))
        batches.append(order[start:start + size])
        start += size
    return batches


# ---------------------------------------------------------------- scoring core

def _context_length(model: torch.nn.Module) -> int:
    return int(model.config.max_position_embeddings)


def _bos_id(tokenizer: Any) -> int:
    if tokenizer.bos_token_id is None:
        raise ValueError("the tokenizer has no bos_token; scoring conditions on BOS")
    return int(tokenizer.bos_token_id)


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """[BOS] + tokens of each text, no other special tokens."""
    bos = _bos_id(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [[bos] + list(ids) for ids in encoded]


def score_windows(model: torch.nn.Module, windows: Sequence[Sequence[int]],
                  n_scored: Sequence[int], batch_size: int | str | None,
                  device: str | torch.device = "cpu", progress: bool = True,
                  desc: str = "scoring", dtype: str | torch.dtype | None = None,
                  memory_budget_gb: float | None = None) -> np.ndarray:
    """Summed log-probability of the last n_scored[i] tokens of each window (float64).

    Windows are sorted by length and batched with right padding (batch_size sequences, or as
    many as fit the memory budget for "auto"/None), so results do not depend on batching.
    """
    device = torch.device(device)
    model.to(device).eval()
    out = np.zeros(len(windows), dtype=np.float64)
    batches = _plan_batches(model, [len(w) for w in windows], batch_size, device, memory_budget_gb)
    # Llama-family models go through the lean forward; anything else through its own forward.
    scorer = fast_llama.LlamaScorer(model) if fast_llama.unsupported_reason(model) is None else None
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, disable=not progress):
            out[batch] = _score_batch(model, scorer, [windows[i] for i in batch],
                                      [n_scored[i] for i in batch], device, dtype)
    return out


def _score_batch(model: torch.nn.Module, scorer: fast_llama.LlamaScorer | None,
                 windows: list[Sequence[int]], n_scored: list[int], device: torch.device,
                 dtype: str | torch.dtype | None) -> np.ndarray:
    width = max(len(w) for w in windows)
    ids = torch.tensor([list(w) + [0] * (width - len(w)) for w in windows], device=device)
    lengths = torch.tensor([len(w) for w in windows], device=device).unsqueeze(1)
    first = lengths - 1 - torch.tensor(n_scored, device=device).unsqueeze(1)
    # scored[r, p]: the target ids[r, p + 1] is one of the last n_scored[r] tokens of window r.
    positions = torch.arange(width - 1, device=device)
    scored = (positions >= first) & (positions < lengths - 1)
    with _autocast(device, dtype):
        if scorer is not None:
            token_logprobs = scorer.token_logprobs(ids, scored)
        else:
            attention = (torch.arange(width, device=device) < lengths).long()
            logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1]
            # log_softmax in float32, outside autocast, and only at the scored positions
            token_logprobs = -F.cross_entropy(logits[scored].float(), ids[:, 1:][scored],
                                              reduction="none")
    rows = torch.nonzero(scored)[:, 0]
    sums = torch.zeros(len(windows), dtype=torch.float64, device=device)
    sums.index_add_(0, rows, token_logprobs.double())
    return sums.cpu().numpy()


def score_sequences(model: torch.nn.Module, sequences: Sequence[Sequence[int]],
                    batch_size: int | str | None, device: str | torch.device = "cpu",
                    progress: bool = True, desc: str = "scoring",
                    dtype: str | torch.dtype | None = None,
                    memory_budget_gb: float | None = None,
                    max_row_tokens: int = TREE_ROW_TOKENS) -> np.ndarray:
    """Summed log-probability of every token after the first of each sequence (float64).

    Sequences are packed into prefix trees (`prefix_tree`), so a prefix shared by several
    sequences is computed once. A batch holds at most batch_size sequences (or, for "auto"/None,
    as many tree rows as fit the memory budget). Llama-family models only (`fast_llama`).
    """
    device = torch.device(device)
    model.to(device).eval()
    scorer = fast_llama.LlamaScorer(model)
    packing = prefix_tree.pack(sequences, max_row_tokens)
    out = np.zeros(len(sequences), dtype=np.float64)
    batches = _plan_tree_batches(model, packing.rows, batch_size, device, memory_budget_gb)
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, disable=not progress):
            members, sums = _score_tree_batch(scorer, packing, batch, device, dtype)
            out[members] = sums
    return out


def _plan_tree_batches(model: torch.nn.Module, rows: Sequence[prefix_tree.Row],
                       batch_size: int | str | None, device: torch.device,
                       memory_budget_gb: float | None) -> list[list[int]]:
    """Row indices per batch, longest rows first: at most batch_size sequences (at least one row),
    or for "auto" as many rows as fit the memory budget at the batch's longest row."""
    order = sorted(range(len(rows)), key=lambda r: -len(rows[r]))
    auto = _is_auto(batch_size)
    budget = memory_budget_bytes(device, memory_budget_gb) if auto else 0
    batches: list[list[int]] = []
    for r in order:
        if batches:
            batch = batches[-1]
            if auto:
                fits = (len(batch) + 1) * sequence_bytes(model.config, len(rows[batch[0]])) <= budget
            else:
                fits = sum(len(rows[b].members) for b in batch) + len(rows[r].members) <= batch_size
            if fits:
                batch.append(r)
                continue
        batches.append([r])
    return batches


def _score_tree_batch(scorer: fast_llama.LlamaScorer, packing: prefix_tree.Packing,
                      batch: list[int], device: torch.device,
                      dtype: str | torch.dtype | None) -> tuple[list[int], np.ndarray]:
    rows = [packing.rows[r] for r in batch]
    width = max(len(row) for row in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    depths = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row.tokens
        depths[r, : len(row)] = row.depths
    # Every node but a root is the next token of its parent; flat indices into (rows * width).
    parents = np.full((len(rows), width), -1, dtype=np.int64)
    for r, row in enumerate(rows):
        parents[r, : len(row)] = row.parents
    child = np.flatnonzero(parents >= 0)
    parent = parents.reshape(-1)[child] + (child // width) * width
    members, path_nodes, path_owner = [], [], []
    for r, row in enumerate(rows):
        for seq in row.members:
            path_nodes.append(np.asarray(packing.paths[seq][1:], dtype=np.int64) + r * width)
            path_owner.append(np.full(len(packing.paths[seq]) - 1, len(members), dtype=np.int64))
            members.append(seq)
    ids_t = torch.from_numpy(ids).to(device)
    with _autocast(device, dtype):
        edge = scorer.edge_logprobs(ids_t, torch.from_numpy(depths).to(device),
                                    prefix_tree.attention_mask(rows, width).to(device),
                                    torch.from_numpy(parent).to(device),
                                    ids_t.reshape(-1)[torch.from_numpy(child).to(device)])
    node_logprob = torch.zeros(len(rows) * width, dtype=torch.float64, device=device)
    node_logprob[torch.from_numpy(child).to(device)] = edge.double()
    sums = torch.zeros(len(members), dtype=torch.float64, device=device)
    sums.index_add_(0, torch.from_numpy(np.concatenate(path_owner)).to(device),
                    node_logprob[torch.from_numpy(np.concatenate(path_nodes)).to(device)])
    return members, sums.cpu().numpy()


# ---------------------------------------------------------------- sentences and pairs

def _sentence_scores(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[str],
                     batch_size: int | str | None, device: str | torch.device, progress: bool,
                     dtype: str | torch.dtype | None, memory_budget_gb: float | None,
                     share_prefixes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Summed log p(tokens | BOS) and the number of scored tokens of each sentence."""
    context = _context_length(model)
    encoded = _encode(tokenizer, sentences)
    too_long = sum(len(ids) > context for ids in encoded)
    if too_long:
        warnings.warn(f"{too_long} sentence(s) longer than the context ({context} tokens incl. "
                      f"BOS) were truncated; only their first {context - 1} tokens are scored")
        encoded = [ids[:context] for ids in encoded]
    n_tokens = np.array([len(ids) - 1 for ids in encoded], dtype=np.int64)
    if share_prefixes and fast_llama.unsupported_reason(model) is None:
        logprobs = score_sequences(model, encoded, batch_size, device, progress, "sentences",
                                   dtype, memory_budget_gb)
    else:
        logprobs = score_windows(model, encoded, n_tokens.tolist(), batch_size, device, progress,
                                 desc="sentences", dtype=dtype, memory_budget_gb=memory_budget_gb)
    return logprobs, n_tokens


def sentence_logprobs(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[str],
                      batch_size: int | str | None = "auto", device: str | torch.device = "cpu",
                      progress: bool = True, dtype: str | torch.dtype | None = None,
                      memory_budget_gb: float | None = None,
                      share_prefixes: bool = True) -> np.ndarray:
    """Summed log p(tokens | BOS) of each sentence (float64), BOS itself not scored."""
    return _sentence_scores(model, tokenizer, sentences, batch_size, device, progress, dtype,
                            memory_budget_gb, share_prefixes)[0]


def _per_unit(logprob: np.ndarray, units: np.ndarray) -> np.ndarray:
    out = np.full(len(logprob), np.nan)
    return np.divide(logprob, units, out=out, where=units > 0)


def _accuracies(scored: pd.DataFrame) -> dict[str, float]:
    return {metric: float(scored[column].mean()) for metric, column in VARIANTS.items()}


def score_pairs(model: torch.nn.Module, tokenizer: Any, pairs_df: pd.DataFrame,
                batch_size: int | str | None = "auto", device: str | torch.device = "cpu",
                progress: bool = True, dtype: str | torch.dtype | None = None,
                memory_budget_gb: float | None = None,
                share_prefixes: bool = True) -> tuple[pd.DataFrame, dict]:
    """Score minimal pairs (columns good, bad; optional paradigm, field, phenomenon, lang).

    Returns the pairs with, per side (good, bad): logp_, n_tokens_, n_bytes_; then delta
    (logp_good - logp_bad) and correct, correct_token_mean, correct_byte_norm. The summary has
    accuracy (summed log-probability, the paper's metric), accuracy_token_mean,
    accuracy_byte_norm, n_pairs; by_<column> (summed accuracy per value) and
    breakdowns[<column>][value] = {n_pairs, and the three accuracies}, for each column of
    BREAKDOWN_COLUMNS present.
    """
    unique = list(dict.fromkeys(list(pairs_df["good"]) + list(pairs_df["bad"])))
    logprobs, n_tokens = _sentence_scores(model, tokenizer, unique, batch_size, device, progress,
                                          dtype, memory_budget_gb, share_prefixes)
    table = pd.DataFrame({"logp": logprobs, "n_tokens": n_tokens,
                          "n_bytes": [len(s.encode("utf-8")) for s in unique]}, index=unique)
    scored = pairs_df.copy()
    for side in ("good", "bad"):
        looked_up = table.reindex(scored[side])
        for column in ("logp", "n_tokens", "n_bytes"):
            scored[f"{column}_{side}"] = looked_up[column].to_numpy()
    good, bad = scored["logp_good"].to_numpy(), scored["logp_bad"].to_numpy()
    scored["delta"] = good - bad
    scored["correct"] = good > bad
    scored["correct_token_mean"] = (_per_unit(good, scored["n_tokens_good"].to_numpy())
                                    > _per_unit(bad, scored["n_tokens_bad"].to_numpy()))
    scored["correct_byte_norm"] = (_per_unit(good, scored["n_bytes_good"].to_numpy())
                                   > _per_unit(bad, scored["n_bytes_bad"].to_numpy()))
    summary: dict[str, Any] = {**_accuracies(scored), "n_pairs": int(len(scored))}
    breakdowns = {}
    for column in BREAKDOWN_COLUMNS:
        if column not in scored or scored[column].isna().all():
            continue
        groups = list(scored.groupby(column, sort=True))
        summary[f"by_{column}"] = {str(k): float(g["correct"].mean()) for k, g in groups}
        breakdowns[column] = {str(k): {"n_pairs": int(len(g)), **_accuracies(g)} for k, g in groups}
    summary["breakdowns"] = breakdowns
    return scored, summary


# ---------------------------------------------------------------- bits per byte

def sliding_windows(n_ids: int, context: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_scored) windows over ids[0:n_ids] that predict every id after the first once.

    Stride is half the context; each window scores the ids not scored by the previous one, so every
    token is predicted with as much left context as its window allows (at least context // 2).
    """
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, got {context}")
    if n_ids <= context:
        return [(0, n_ids, n_ids - 1)]
    stride = max(1, context // 2)
    windows, scored_until, begin = [], 1, 0
    while scored_until < n_ids:
        end = min(begin + context, n_ids)
        windows.append((begin, end, end - scored_until))
        scored_until = end
        begin += stride
    return windows


def bits_per_byte(model: torch.nn.Module, tokenizer: Any, texts: Iterable[str],
                  context_len: int | None = None, batch_size: int | str | None = 16,
                  device: str | torch.device = "cpu", progress: bool = True,
                  dtype: str | torch.dtype | None = None,
                  memory_budget_gb: float | None = None) -> dict[str, float]:
    """Total NLL of all texts in bits per UTF-8 byte (tokenizer-independent).

    Each text is [BOS] + tokens and every token after BOS is predicted exactly once; texts longer
    than the context (default: the model's) use sliding windows with stride context // 2.
    Returns bpb, nll_nats (total), n_bytes, n_tokens (predicted tokens) and token_perplexity,
    exp(nll_nats / n_tokens): a perplexity per token of this model's tokenizer, so it is not
    comparable across tokenizers; bpb is.
    """
    texts = list(texts)
    context = context_len or _context_length(model)
    windows, n_scored = [], []
    for ids in _encode(tokenizer, texts):
        for begin, end, n in sliding_windows(len(ids), context):
            if n > 0:
                windows.append(ids[begin:end])
                n_scored.append(n)
    logprobs = score_windows(model, windows, n_scored, batch_size, device, progress, desc="bpb",
                             dtype=dtype, memory_budget_gb=memory_budget_gb)
    nll = -float(logprobs.sum())
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = int(sum(n_scored))
    return {
        "bpb": nll / np.log(2) / n_bytes if n_bytes else float("nan"),
        "nll_nats": nll,
        "n_bytes": n_bytes,
        "n_tokens": n_tokens,
        "token_perplexity": float(np.exp(nll / n_tokens)) if n_tokens else float("nan"),
    }
