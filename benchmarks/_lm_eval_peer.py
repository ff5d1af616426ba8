"""lm-evaluation-harness as a peer for our minimal-pair scorer (used by the benchmark and a test).

The peer is lm-eval's own `multiple_choice` task path, as a user gets it: a task YAML over a local
JSON-lines file (`dataset_path: json`), choices [good, bad], gold 0, an empty context and
`target_delimiter: ""` (the settings of lm-eval's `multiblimp` task; its `blimp` task puts a space
before each sentence), run with `lm_eval.simple_evaluate` on an `HFLM` wrapping the same model
object, with `log_samples=True` for the per-pair decisions.

Conditioning: with an empty context, `TemplateLM.loglikelihood` encodes the choice with
`add_special_tokens=False` and uses `[prefix_token_id]` as the context; `HFLM.prefix_token_id` is
the tokenizer's `bos_token_id` when set. So each sentence is scored as log p(tokens | BOS), BOS
once, exactly as `hyperllama_lib.evaluation` does (`check_conditioning` asserts this).

lm-eval's `acc` takes `argmax` over the choices' log-likelihoods, so an exact tie counts as
correct there (the first choice wins) and as wrong in ours. Real BLiMP has 7 pairs whose good and
bad sentences are the same string, so on the full set exactly those 7 decisions differ (0.0104
points); `compare` counts them and the near-ties.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TASK_NAME = "hyperllama_minimal_pairs"

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
  cache_dir: {cache_dir}
test_split: test
output_type: multiple_choice
doc_to_text: ""
target_delimiter: ""
doc_to_target: 0
doc_to_choice: "{{{{[good, bad]}}}}"
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0
"""


def quiet_lm_eval() -> None:
    """lm-eval logs every request batch at INFO/WARNING; keep the output readable."""
    for name in ("lm_eval", "lm-eval", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)


def write_task(pairs_df: pd.DataFrame, workdir: str | Path) -> Path:
    """Write the pairs as JSON lines plus a task YAML into `workdir`; return the task folder."""
    workdir = Path(workdir).resolve()
    task_dir = workdir / "task"
    task_dir.mkdir(parents=True, exist_ok=True)
    data_file = workdir / "pairs.jsonl"
    with open(data_file, "w", encoding="utf-8") as f:
        for idx, (good, bad) in enumerate(zip(pairs_df["good"], pairs_df["bad"])):
            f.write(json.dumps({"idx": idx, "good": good, "bad": bad}, ensure_ascii=False) + "\n")
    (task_dir / f"{TASK_NAME}.yaml").write_text(TASK_YAML.format(
        task=TASK_NAME, data_file=json.dumps(str(data_file)),
        cache_dir=json.dumps(str(workdir / "hf_datasets_cache"))), encoding="utf-8")
    return task_dir


def make_hflm(model: Any, tokenizer: Any, batch_size: int):
    """An HFLM around an already loaded model (on its device) and tokenizer, no BOS override."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def check_conditioning(lm: Any, sentence: str) -> list[int]:
    """The (context, continuation) token ids lm-eval scores for `sentence` with an empty context.

    Asserts that the context is exactly [BOS] and the continuation the sentence's ids without any
    special token, i.e. one BOS, the same input our scorer builds.
    """
    tok = lm.tokenizer
    assert tok.bos_token_id is not None, "the tokenizer has no BOS token"
    assert lm.prefix_token_id == tok.bos_token_id, (lm.prefix_token_id, tok.bos_token_id)
    captured = []
    original = lm._loglikelihood_tokens

    def capture(requests, **kwargs):
        captured.extend(requests)
        return [(0.0, False)] * len(requests)

    from lm_eval.api.instance import Instance

    lm._loglikelihood_tokens = capture
    try:
        lm.loglikelihood([Instance("loglikelihood", {}, ("", sentence), 0)], disable_tqdm=True)
    finally:
        lm._loglikelihood_tokens = original
    (_, context_enc, continuation_enc), = captured
    expected = tok(sentence, add_special_tokens=False)["input_ids"]
    assert context_enc == [tok.bos_token_id], context_enc
    assert continuation_enc == expected, (continuation_enc, expected)
    return [tok.bos_token_id] + list(continuation_enc)


def run_lm_eval(lm: Any, pairs_df: pd.DataFrame, workdir: str | Path) -> dict[str, Any]:
    """lm-eval's `acc` and per-pair decisions on `pairs_df` (in its order), with timings.

    Returns acc, correct (bool array), logp_good, logp_bad (float arrays), seconds_total (the
    whole simple_evaluate call: task and dataset building, requests, scoring, metrics) and
    seconds_loglikelihood (only inside `lm.loglikelihood`: tokenization plus model scoring).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    quiet_lm_eval()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    task_dir = write_task(pairs_df, workdir)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)

    spent = []
    original = lm.loglikelihood

    def timed(requests, *args, **kwargs):
        start = time.perf_counter()
        out = original(requests, *args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    lm.loglikelihood = timed
    try:
        start = time.perf_counter()
        results = lm_eval.simple_evaluate(model=lm, tasks=[TASK_NAME], task_manager=manager,
                                          log_samples=True, bootstrap_iters=0, use_cache=None,
                                          write_out=False, verbosity="ERROR")
        seconds_total = time.perf_counter() - start
    finally:
        del lm.loglikelihood  # back to the class method
    n = len(pairs_df)
    correct = np.zeros(n, dtype=bool)
    logp = np.full((n, 2), np.nan)
    seen = np.zeros(n, dtype=bool)
    for sample in results["samples"][TASK_NAME]:
        idx = int(sample["doc"]["idx"])
        if sample["arguments"][0][0] != "":  # (context, continuation) of the good choice
            raise AssertionError(f"lm-eval context is not empty: {sample['arguments'][0]!r}")
        lls = [float(r[0]) for r in sample["filtered_resps"]]
        logp[idx] = lls
        correct[idx] = bool(sample["acc"])
        seen[idx] = True
    if not seen.all():
        raise AssertionError(f"lm-eval returned {int(seen.sum())} of {n} pairs")
    acc = float(results["results"][TASK_NAME]["acc,none"])
    if abs(acc - correct.mean()) > 1e-9:
        raise AssertionError(f"lm-eval acc {acc} is not the mean of its per-sample acc")
    return {"acc": acc, "correct": correct, "logp_good": logp[:, 0], "logp_bad": logp[:, 1],
            "seconds_total": seconds_total, "seconds_loglikelihood": float(sum(spent)),
            "version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None}


def compare(ours: pd.DataFrame, peer: dict[str, Any], near_tie: float = 1e-4) -> dict[str, Any]:
    """Agreement of per-pair decisions and accuracies; near-ties and log-prob differences."""
    ours_correct = ours["correct"].to_numpy(dtype=bool)
    ours_margin = (ours["logp_good"] - ours["logp_bad"]).to_numpy()
    peer_margin = peer["logp_good"] - peer["logp_bad"]
    same = ours_correct == peer["correct"]
    # BLiMP has pairs whose good and bad sentences are the same string: an exact tie, wrong for
    # us and correct for lm-eval (argmax keeps the first choice).
    identical = (ours["good"] == ours["bad"]).to_numpy()
    max_logp_diff = float(np.max(np.abs(np.concatenate([
        ours["logp_good"].to_numpy() - peer["logp_good"],
        ours["logp_bad"].to_numpy() - peer["logp_bad"]])))) if len(ours) else 0.0
    return {
        "n_pairs": int(len(ours)),
        "acc_ours": float(ours_correct.mean()),
        "acc_lm_eval": float(peer["acc"]),
        "acc_diff": float(ours_correct.mean() - peer["acc"]),
        "agreement": float(same.mean()),
        "n_disagree": int((~same).sum()),
        "n_identical_pairs": int(identical.sum()),
        "n_disagree_not_identical": int((~same & ~identical).sum()),
        "n_near_ties": int((np.abs(ours_margin) < near_tie).sum()),
        "n_near_ties_lm_eval": int((np.abs(peer_margin) < near_tie).sum()),
        "max_abs_logp_diff": max_logp_diff,
    }
