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
logits (batch x length x vocab) plus one layer's activations (see `sequence_bytes`). Prefix-tree
batches (below) are limited by the layers' activations per node instead (`tree_limits`), and their
output head runs in slices whose logits fit half the budget (`head_rows`), so that a large
vocabulary does not shrink the trees.
- Sentences (`sentence_logprobs`, `score_pairs`) under a Llama-family model are packed into prefix
  trees (`prefix_tree`) and run through the lean forward of `fast_llama`: a prefix shared by
  several sentences is computed once (BLiMP: about 0.62 tree nodes per token), the layers run on
  tree nodes without padding, and the output head runs once per node that has a child.
  `share_prefixes=False`, or a model `fast_llama` does not support, scores each sentence in its
  own row instead: rows sorted by length and right-padded.
- Either way a token sees exactly its own sequence's prefix, so scores do not depend on the
  batching beyond float rounding.
- On a CPU with several torch threads, that many batches run side by side, one thread each
  (`_map_batches`).

Precision (`dtype`): "auto" runs the model under bf16 autocast on CUDA and in fp32 elsewhere (a
caller's autocast stays on); "fp32", "bf16" and "fp16" force one (`hyperllama_lib.device`).
log_softmax always runs in fp32.

Pair loaders (BLiMP, MultiBLiMP, mParaRel files and Hub datasets) are in `pair_sources`.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence, Sized

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..device import Placement
from ..device import resolve as resolve_placement
from ..errors import ModelFolderError, ParamError
from ..progress import tqdm
from . import fast_llama, prefix_tree

BREAKDOWN_COLUMNS = ("paradigm", "field", "phenomenon", "lang")
# summary key -> per-pair column that decides it
VARIANTS = {"accuracy": "correct", "accuracy_token_mean": "correct_token_mean",
            "accuracy_byte_norm": "correct_byte_norm"}


# ---------------------------------------------------------------- memory

# On CPU, batches whose activations outgrow the caches are slower, not faster: on the 2-core test
# machine the tiny model scored BLiMP 1.8x faster with a 64 MiB budget than with 2 GiB.
DEFAULT_CPU_BUDGET_GB = 0.0625
CUDA_FREE_FRACTION = 0.5
# Bytes per token and vocabulary entry: the logits, the fp32 copy of the scored rows, log_softmax.
LOGIT_BYTES = 12
# A slice of the output head streams the whole head matrix, so it is never thinner than this.
MIN_HEAD_ROWS = 64
# Prefix-tree nodes per attention chunk (`prefix_tree`): attention costs chunk x (depth + chunk)
# per chunk; tuned on BLiMP with the tiny model (benchmarks/blimp_speed.py).
ATTENTION_CHUNK = 32


def memory_budget_bytes(device: str | torch.device, memory_budget_gb: float | None = None) -> int:
    """Activation budget: memory_budget_gb if given, else half the free CUDA memory, else 64 MiB."""
    if memory_budget_gb is not None:
        return int(memory_budget_gb * 2**30)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return int(DEFAULT_CPU_BUDGET_GB * 2**30)


def _layer_bytes_per_token(config: Any) -> int:
    """fp32 bytes of one layer's activations per token (only one layer's are alive at a time under
    inference_mode): hidden states, q/k/v/o and the MLP's three intermediate projections."""
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    return 4 * (6 * hidden + 3 * intermediate)


def sequence_bytes(config: Any, length: int) -> int:
    """Estimated peak activation bytes of scoring one sequence of `length` tokens.

    Logits dominate (LOGIT_BYTES x vocab per token), then one layer's activations
    (`_layer_bytes_per_token`) and eager attention's length x length scores per head, in fp32.
    """
    per_token = LOGIT_BYTES * config.vocab_size + _layer_bytes_per_token(config)
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
    raise ParamError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")


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
        raise ModelFolderError("the tokenizer has no bos_token; scoring conditions on BOS")
    return int(tokenizer.bos_token_id)


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """[BOS] + tokens of each text, no other special tokens."""
    bos = _bos_id(tokenizer)
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if hasattr(backend, "encode_batch_fast"):
        # what tokenizer(texts, add_special_tokens=False) returns, without building offsets
        return [[bos] + enc.ids for enc in backend.encode_batch_fast(list(texts),
                                                                      add_special_tokens=False)]
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
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
    where = resolve_placement(device, dtype)
    device = where.device
    model.to(device).eval()
    out = np.zeros(len(windows), dtype=np.float64)
    batches = _plan_batches(model, [len(w) for w in windows], batch_size, device, memory_budget_gb)
    # Llama-family models go through the lean forward; anything else through its own forward.
    scorer = fast_llama.LlamaScorer(model) if fast_llama.unsupported_reason(model) is None else None

    def work(batch: list[int]) -> np.ndarray:
        return _score_batch(model, scorer, [windows[i] for i in batch],
                            [n_scored[i] for i in batch], where)

    for batch, sums in zip(batches, _map_batches(work, batches, device, progress, desc)):
        out[batch] = sums
    return out


def _map_batches(work: Callable[[Any], Any], batches: Sized, device: torch.device, progress: bool,
                 desc: str) -> list:
    """[work(batch) for batch in batches], under inference_mode; batches are iterated once.

    On a CPU with several torch threads, whole batches run side by side, one thread each: a small
    model leaves most intra-op threads idle, and batch-level parallelism keeps every core busy
    (BLiMP with the tiny model: 1.7x on 2 cores, against 1.5x from 2 intra-op threads). Each
    batch then computes exactly as it would alone on one thread. Every worker holds one batch's
    activations, so peak memory is the thread count times one batch's.
    """
    workers = min(torch.get_num_threads(), len(batches)) if device.type == "cpu" else 1

    def run(batch: Any) -> Any:
        with torch.inference_mode():
            return work(batch)

    # Without progress, no tqdm object at all: even a disabled one takes tqdm's process-shared lock.
    bar = tqdm(total=len(batches), desc=desc) if progress else None
    results: list = []
    previous = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        if pool is not None:
            torch.set_num_threads(1)
        for result in pool.map(run, batches) if pool is not None else map(run, batches):
            results.append(result)
            if bar is not None:
                bar.update()
    finally:
        if pool is not None:
            pool.shutdown()
        torch.set_num_threads(previous)
        if bar is not None:
            bar.close()
    return results


def _score_batch(model: torch.nn.Module, scorer: fast_llama.LlamaScorer | None,
                 windows: list[Sequence[int]], n_scored: list[int], where: Placement) -> np.ndarray:
    device = where.device
    width = max(len(w) for w in windows)
    ids = torch.tensor([list(w) + [0] * (width - len(w)) for w in windows], device=device)
    lengths = torch.tensor([len(w) for w in windows], device=device).unsqueeze(1)
    first = lengths - 1 - torch.tensor(n_scored, device=device).unsqueeze(1)
    # scored[r, p]: the target ids[r, p + 1] is one of the last n_scored[r] tokens of window r.
    positions = torch.arange(width - 1, device=device)
    scored = (positions >= first) & (positions < lengths - 1)
    with where.autocast():
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
                    attention_chunk: int = ATTENTION_CHUNK) -> np.ndarray:
    """Summed log-probability of every token after the first of each sequence (float64).

    Sequences are packed into prefix trees (`prefix_tree`), so a prefix shared by several
    sequences is computed once. A batch holds at most batch_size sequences (or, for "auto"/None,
    as many tree nodes as fit the memory budget). Llama-family models only (`fast_llama`).
    """
    where = resolve_placement(device, dtype)
    device = where.device
    model.to(device).eval()
    scorer = fast_llama.LlamaScorer(model)
    limits = tree_limits(model, batch_size, device, memory_budget_gb, attention_chunk)
    rows = head_rows(model.config, device, memory_budget_gb)
    batches = prefix_tree.pack(sequences, attention_chunk, **limits)
    out = np.zeros(len(sequences), dtype=np.float64)

    def work(batch: prefix_tree.TreeBatch) -> tuple[np.ndarray, np.ndarray]:
        return batch.members, _score_tree_batch(scorer, batch, where, rows)

    # the batches are built while earlier ones are scored (`prefix_tree.Packing` is lazy)
    for members, sums in _map_batches(work, batches, device, progress, desc):
        out[members] = sums
    return out


def tree_node_bytes(config: Any, attention_chunk: int = ATTENTION_CHUNK) -> int:
    """Estimated peak activation bytes of one prefix-tree node in the layers (fp32): as in
    `sequence_bytes` without the logits, and attention scores over about 2 x chunk keys per head
    (its chunk and the first node's ancestors). The logits are bounded by `head_rows` instead."""
    return _layer_bytes_per_token(config) + 4 * config.num_attention_heads * 2 * attention_chunk


def head_rows(config: Any, device: str | torch.device, memory_budget_gb: float | None = None) -> int:
    """Tree nodes whose vocabulary-wide logits (LOGIT_BYTES x vocab each) fill half the memory
    budget, at least MIN_HEAD_ROWS: the output head runs in slices of that many rows."""
    per_row = LOGIT_BYTES * config.vocab_size
    return max(MIN_HEAD_ROWS, memory_budget_bytes(device, memory_budget_gb) // 2 // per_row)


def tree_limits(model: torch.nn.Module, batch_size: int | str | None, device: str | torch.device,
                memory_budget_gb: float | None = None,
                attention_chunk: int = ATTENTION_CHUNK) -> dict[str, int]:
    """`prefix_tree.pack`'s batch limits: max_sequences = batch_size, or for "auto"/None as many
    tree nodes (max_nodes) as a quarter of the memory budget holds. The head's slices take half
    (`head_rows`), and the rest is slack. A quarter measured best among 1/2, 1/4 and 1/8 on the CPU,
    with 1 and 2 threads: the tiny model scored BLiMP 1.1x faster with 2 threads and 4% slower with
    one, and the paper's 180M shape 1.6x faster, than with the logits counted per node (before
    the head was sliced)."""
    if not _is_auto(batch_size):
        return {"max_sequences": int(batch_size)}
    budget = memory_budget_bytes(device, memory_budget_gb) // 4
    return {"max_nodes": max(1, budget // tree_node_bytes(model.config, attention_chunk))}


def _score_tree_batch(scorer: fast_llama.LlamaScorer, batch: prefix_tree.TreeBatch,
                      where: Placement, head_rows: int | None = None) -> np.ndarray:
    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(where.device)

    if len(batch.tokens) == 0:  # only empty sequences
        return np.zeros(len(batch.members), dtype=np.float64)
    with where.autocast():
        edge = scorer.tree_logprobs(tensor(batch.tokens), tensor(batch.depths),
                                    tensor(batch.heads), tensor(batch.head_of), batch.chunk,
                                    tensor(batch.keys), tensor(batch.mask).unsqueeze(1),
                                    head_rows)
    # A member's score sums its path's edges; path entries of -1 (past its end) pick the 0 added.
    edge = torch.cat([edge.double(), edge.new_zeros(1, dtype=torch.float64)])
    return edge[tensor(batch.paths)].sum(dim=1).cpu().numpy()


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
