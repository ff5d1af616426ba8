"""The tables of a Hub dataset repository, fetched with huggingface_hub and read with pandas.

Used for the paper's own evaluation sets, whose layouts could not be checked offline
(`liu-nlp/blimp-single-error`, `liu-nlp/minimal_pair_mpararel`; pair_sources turns their rows into
pairs) and for the released MultiBLiMP files. Fetching goes through `huggingface_hub.snapshot_download`
(or `hf_hub_download` for a single file), never `datasets.load_dataset`: one mechanism, which serves an
offline cache (HF_HUB_OFFLINE=1, HF_HUB_CACHE) as it serves the Hub, runs no loading script, and is what
tests replace.

What a repository may hold (what `datasets`' push_to_hub writes, `<config>/<split>-*.parquet` or
`data/<split>-*.parquet`, and the common hand-made layouts; a README's `configs:` list is not read):
- table files: .parquet, .jsonl (.jsonl.gz), .json (a list of records, an object of columns, an object
  with one list of records, or JSON lines), .csv and .tsv (.gz too; header row, values kept as text);
  dataset metadata (dataset_info.json, state.json, ...) and other files are not tables;
- configs: the folders above a file (a leading `data/` is not one), so `<config>/<split>-*.parquet`,
  `data/<config>/<split>-*.parquet`, `<config>/<split>/*.parquet` and `<config>/<name>.tsv` all name the
  config; a file at the top (or directly in `data/`) is config "default" when it is named after a split,
  else its own name is the config (`adjunct_island.jsonl`, `en.jsonl`);
- splits: a file named `<split>`, `<split>-...` or `<split>_...`, or in a folder of that name, with
  split names train, validation (also valid, dev) and test. Evaluation takes ONE split per config, the
  first of test, validation, train, then the files named after no split: the held-out split when a set
  has one, and the whole table when it has only "train" (as BLiMP does).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from ..errors import DataError, PairsFormatError

TABLE_KINDS = {".parquet": "parquet", ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json",
               ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv"}
TABLE_PATTERNS = [f"*{suffix}" for suffix in TABLE_KINDS]  # snapshot_download's allow_patterns
SPLITS = {"test": "test", "validation": "validation", "valid": "validation", "dev": "validation",
          "train": "train"}
SPLIT_PREFERENCE = ("test", "validation", "train", None)  # None: files named after no split
METADATA_FILES = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json"}
_SPLIT_STEM = re.compile(r"^(train|test|validation|valid|dev)(?:[-_.].*)?$", re.IGNORECASE)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def fetch_repo(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """The local snapshot of a dataset repo's table files (downloaded, or from the HF cache)."""
    from huggingface_hub import snapshot_download  # imported late: only needed with Hub access

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                      allow_patterns=TABLE_PATTERNS))
    except Exception as err:  # offline, no such repo, gated...: whatever the Hub says, in one line
        raise DataError(f"cannot fetch the dataset {repo_id} from the Hub ({_one_line(err)}); check the "
                        "connection (or HF_HUB_CACHE for an offline cache), or set eval_source: local") from None


def fetch_file(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """One file of a dataset repo (downloaded, or from the HF cache)."""
    from huggingface_hub import hf_hub_download  # imported late: only needed with Hub access

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset",
                                    cache_dir=cache_dir, revision=revision))
    except Exception as err:  # as fetch_repo
        raise DataError(f"cannot fetch {filename} of the dataset {repo_id} from the Hub ({_one_line(err)}); "
                        "check the connection (or HF_HUB_CACHE for an offline cache), or set eval_source: "
                        "local") from None


@dataclass(frozen=True)
class TableFile:
    repo_id: str
    root: Path  # the snapshot folder
    path: str  # inside the repo, with "/"
    config: str
    split: str | None

    @property
    def where(self) -> str:
        """How error messages name the file: the repo and the path inside it."""
        return f"{self.repo_id}: {self.path}"

    @property
    def name(self) -> str:
        """The file name without its table suffixes (e.g. "test-00000-of-00001", "P36", "data")."""
        return _strip_suffix(PurePosixPath(self.path).name)

    def read(self) -> pd.DataFrame:
        return read_table(self.root / self.path, self.where)


def _strip_suffix(name: str) -> str:
    for suffix in sorted(TABLE_KINDS, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _kind(name: str) -> str | None:
    lower = name.lower()
    return next((kind for suffix, kind in sorted(TABLE_KINDS.items(), key=lambda kv: -len(kv[0]))
                 if lower.endswith(suffix)), None)


def is_split_name(name: str) -> bool:
    """Whether a file or folder name names a split ("test", "train-00000-of-00001", "dev_0")."""
    return bool(_SPLIT_STEM.match(name))


def _config_and_split(path: PurePosixPath) -> tuple[str, str | None]:
    """The config and split a file of a dataset repo belongs to (see the module doc)."""
    folders = list(path.parts[:-1])
    if folders and folders[0] == "data":
        folders = folders[1:]
    stem = _strip_suffix(path.name)
    match = _SPLIT_STEM.match(stem)
    split = SPLITS[match.group(1).lower()] if match else None
    if split is None and folders and folders[-1].lower() in SPLITS:
        split = SPLITS[folders.pop().lower()]
        return "/".join(folders) or stem, split
    return "/".join(folders) or (stem if split is None else "default"), split


def repo_tables(root: Path, repo_id: str) -> list[TableFile]:
    """The files of each config's chosen split (see the module doc), by config, then path."""
    paths = sorted(PurePosixPath(f.relative_to(root).as_posix()) for f in Path(root).rglob("*")
                   if f.is_file() and _kind(f.name) and f.name not in METADATA_FILES
                   and not any(part.startswith(".") for part in f.relative_to(root).parts))
    if not paths:
        raise PairsFormatError(f"{repo_id}: no table files in the dataset (looked for "
                               f"{', '.join(TABLE_KINDS)}) under {root}")
    by_config: dict[str, dict[str | None, list[str]]] = {}
    for path in paths:
        config, split = _config_and_split(path)
        by_config.setdefault(config, {}).setdefault(split, []).append(str(path))
    files = []
    for config in sorted(by_config):
        split = next(s for s in SPLIT_PREFERENCE if s in by_config[config])
        files += [TableFile(repo_id, Path(root), path, config, split) for path in by_config[config][split]]
    return files


# ---------------------------------------------------------------- reading one file

def _json_table(path: Path, where: str) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return pd.read_json(path, lines=True, dtype=False)  # JSON lines under a .json name
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(data) == 1 and len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            data = lists[0]  # {"data": [records]}
        elif not (lists and len(lists) == len(data)):
            raise PairsFormatError(f"{where}: a JSON object that is not a table (keys: "
                                   f"{', '.join(map(str, list(data)[:20]))})")
    if isinstance(data, list) and not all(isinstance(r, dict) for r in data):
        raise PairsFormatError(f"{where}: a JSON list whose items are not records (objects)")
    return pd.DataFrame(data)


def read_table(path: Path, where: str) -> pd.DataFrame:
    """A table file as a DataFrame; csv/tsv values stay text ("NA" is a word, not a missing value)."""
    kind = _kind(path.name)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if kind == "json":
            return _json_table(path, where)
        if kind in ("csv", "tsv"):
            return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False)
    except PairsFormatError:
        raise
    except Exception as err:  # pyarrow, json and csv each raise their own kind
        raise PairsFormatError(f"{where}: unreadable as {kind} ({_one_line(err)})") from None
    raise PairsFormatError(f"{where}: not a table file (expected one of {', '.join(TABLE_KINDS)})")


def columns_text(columns: Sequence) -> str:
    return ", ".join(map(str, columns)) or "none"
