"""Evaluation: minimal-pair accuracy (BLiMP-style) and bits per byte.

Scoring conventions (as in the paper): a sentence's score is the summed log-probability of its
tokens conditioned on BOS, i.e. the model reads [BOS] + tokens and every token after BOS is scored;
a pair is correct when logp(good) > logp(bad) (a tie counts as wrong).

Sentences longer than the model context (config.max_position_embeddings) are truncated to the
context with a warning: only the first context - 1 tokens after BOS are scored.
"""
from __future__ import annotations

import gzip
import json
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

BLIMP_HUB_ID = "nyu-mll/blimp"
PAIR_COLUMNS = ["good", "bad", "paradigm", "field", "linguistics_term", "pair_id"]


# ---------------------------------------------------------------- minimal pairs

def _record_to_row(record: dict, index: int) -> dict:
    return {
        "good": record["sentence_good"],
        "bad": record["sentence_bad"],
        "paradigm": record["UID"],
        "field": record["field"],
        "linguistics_term": record["linguistics_term"],
        "pair_id": int(record["pairID"]) if "pairID" in record else index,
    }


def _subsample(rows: list[dict], paradigm: str, max_pairs: int | None, seed: int) -> list[dict]:
    """The first `max_pairs` of a seeded permutation, kept in file order; per-paradigm stream."""
    if max_pairs is None or max_pairs >= len(rows):
        return rows
    rng = np.random.default_rng([seed, zlib.crc32(paradigm.encode())])
    keep = np.sort(rng.permutation(len(rows))[:max_pairs])
    return [rows[i] for i in keep]


def _read_jsonl_gz(path: Path) -> list[dict]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(_record_to_row(json.loads(line), len(rows)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: malformed JSON ({err.msg})") from None
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {lineno}: not a BLiMP record ({err!r})") from None
    return rows


def _to_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def load_blimp_local(data_dir: str | Path, paradigms: Sequence[str] | None = None,
                     max_pairs_per_paradigm: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Read `<data_dir>/blimp/*.jsonl.gz` (or `<data_dir>/*.jsonl.gz`), paradigms in sorted order."""
    data_dir = Path(data_dir)
    folder = data_dir / "blimp" if (data_dir / "blimp").is_dir() else data_dir
    files = {p.name.removesuffix(".jsonl.gz"): p for p in sorted(folder.glob("*.jsonl.gz"))}
    if not files:
        raise FileNotFoundError(f"no BLiMP files (*.jsonl.gz) under {folder}")
    wanted = sorted(files) if paradigms is None else list(paradigms)
    missing = [p for p in wanted if p not in files]
    if missing:
        raise ValueError(f"unknown BLiMP paradigm(s) {missing} (not in {folder})")
    rows = []
    for paradigm in wanted:
        rows += _subsample(_read_jsonl_gz(files[paradigm]), paradigm, max_pairs_per_paradigm, seed)
    return _to_frame(rows)


def load_blimp_hub(paradigms: Sequence[str] | None = None,
                   max_pairs_per_paradigm: int | None = None, seed: int = 0,
                   cache_dir: str | None = None) -> pd.DataFrame:
    """Same as load_blimp_local, from the Hub dataset `nyu-mll/blimp` (one config per paradigm)."""
    import datasets  # imported late: slow, and only needed with Hub access

    if paradigms is None:
        paradigms = sorted(datasets.get_dataset_config_names(BLIMP_HUB_ID))
    rows = []
    for paradigm in paradigms:
        ds = datasets.load_dataset(BLIMP_HUB_ID, paradigm, split="train", cache_dir=cache_dir)
        records = [_record_to_row(r, i) for i, r in enumerate(ds)]
        rows += _subsample(records, paradigm, max_pairs_per_paradigm, seed)
    return _to_frame(rows)


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
                  n_scored: Sequence[int], batch_size: int, device: str | torch.device = "cpu",
                  progress: bool = True, desc: str = "scoring") -> np.ndarray:
    """Summed log-probability of the last n_scored[i] tokens of each window (float64).

    Windows are sorted by length and batched with right padding, so real tokens never attend to
    padding and results do not depend on batch size or padding.
    """
    model.to(device).eval()
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
    out = np.zeros(len(windows), dtype=np.float64)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, disable=not progress):
            out[batch] = _score_batch(model, [windows[i] for i in batch],
                                      [n_scored[i] for i in batch], device)
    return out


def _score_batch(model: torch.nn.Module, windows: list[Sequence[int]], n_scored: list[int],
                 device: str | torch.device) -> np.ndarray:
    width = max(len(w) for w in windows)
    ids = torch.tensor([list(w) + [0] * (width - len(w)) for w in windows], device=device)
    lengths = torch.tensor([len(w) for w in windows], device=device).unsqueeze(1)
    first = lengths - 1 - torch.tensor(n_scored, device=device).unsqueeze(1)
    attention = (torch.arange(width, device=device) < lengths).long()
    # scored[r, p]: the target ids[r, p + 1] is one of the last n_scored[r] tokens of window r.
    positions = torch.arange(width - 1, device=device)
    scored = (positions >= first) & (positions < lengths - 1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    # Only the scored positions go through log_softmax, in float32.
    logprobs = F.log_softmax(logits[scored].float(), dim=-1)
    token_logprobs = logprobs.gather(1, ids[:, 1:][scored].unsqueeze(1)).squeeze(1)
    rows = torch.nonzero(scored)[:, 0]
    sums = torch.zeros(len(windows), dtype=torch.float64, device=device)
    sums.index_add_(0, rows, token_logprobs.double())
    return sums.cpu().numpy()


# ---------------------------------------------------------------- sentences and pairs

def sentence_logprobs(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[str],
                      batch_size: int = 64, device: str | torch.device = "cpu",
                      progress: bool = True) -> np.ndarray:
    """Summed log p(tokens | BOS) of each sentence (float64), BOS itself not scored."""
    context = _context_length(model)
    encoded = _encode(tokenizer, sentences)
    too_long = sum(len(ids) > context for ids in encoded)
    if too_long:
        warnings.warn(f"{too_long} sentence(s) longer than the context ({context} tokens incl. "
                      f"BOS) were truncated; only their first {context - 1} tokens are scored")
        encoded = [ids[:context] for ids in encoded]
    return score_windows(model, encoded, [len(ids) - 1 for ids in encoded], batch_size, device,
                         progress, desc="sentences")


def score_pairs(model: torch.nn.Module, tokenizer: Any, pairs_df: pd.DataFrame,
                batch_size: int = 64, device: str | torch.device = "cpu",
                progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Score minimal pairs (columns good, bad; optional paradigm, field).

    Returns the pairs with logp_good, logp_bad, correct added, and a summary with the overall
    accuracy, n_pairs and accuracy by paradigm and by field (for the columns present).
    """
    unique = list(dict.fromkeys(list(pairs_df["good"]) + list(pairs_df["bad"])))
    scores = dict(zip(unique, sentence_logprobs(model, tokenizer, unique, batch_size, device,
                                                progress)))
    scored = pairs_df.copy()
    scored["logp_good"] = scored["good"].map(scores).astype(np.float64)
    scored["logp_bad"] = scored["bad"].map(scores).astype(np.float64)
    scored["correct"] = scored["logp_good"] > scored["logp_bad"]
    summary: dict[str, Any] = {"accuracy": float(scored["correct"].mean()),
                               "n_pairs": int(len(scored))}
    for column in ("paradigm", "field"):
        if column in scored:
            by = scored.groupby(column, sort=True)["correct"].mean()
            summary[f"by_{column}"] = {str(k): float(v) for k, v in by.items()}
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
                  context_len: int | None = None, batch_size: int = 16,
                  device: str | torch.device = "cpu", progress: bool = True) -> dict[str, float]:
    """Total NLL of all texts in bits per UTF-8 byte (tokenizer-independent).

    Each text is [BOS] + tokens and every token after BOS is predicted exactly once; texts longer
    than the context (default: the model's) use sliding windows with stride context // 2.
    """
    texts = list(texts)
    context = context_len or _context_length(model)
    windows, n_scored = [], []
    for ids in _encode(tokenizer, texts):
        for begin, end, n in sliding_windows(len(ids), context):
            if n > 0:
                windows.append(ids[begin:end])
                n_scored.append(n)
    logprobs = score_windows(model, windows, n_scored, batch_size, device, progress, desc="bpb")
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
