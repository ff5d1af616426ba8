"""BLiMP scoring speed and agreement: our scorer against lm-evaluation-harness, in one run.

Run by hand (needs `pip install "lm-eval[hf]"` in the venv):

    .venv/bin/python benchmarks/blimp_speed.py                       # full BLiMP, tiny English base
    .venv/bin/python benchmarks/blimp_speed.py --model DIR --batch-size 64 --device cuda
    .venv/bin/python benchmarks/blimp_speed.py --paper-shape --max-pairs-per-paradigm 20   # 180M

Both score the same pairs with the same model object, batch size and device:
- ours: `hyperllama_lib.evaluation.score_pairs` (summed log p(sentence | BOS); tie = wrong);
- lm-eval: its multiple_choice task path over [good, bad] with an empty context and
  `target_delimiter: ""` (as its multiblimp task), `HFLM(pretrained=<the model>)`,
  `simple_evaluate(log_samples=True)`; the empty context is lm-eval's `prefix_token_id`, which is
  the tokenizer's BOS, so both score [BOS] + sentence (checked before timing).

With `--batch-size auto` each side uses its own automatic size: lm-eval's probe (run once, untimed; it
picks its maximum, 64, on a CPU) and our memory budget (64 MiB on a CPU). Ours packs sentences into
prefix trees (`hyperllama_lib.evaluation.prefix_tree`); `--no-share-prefixes` turns that off.

Only scoring is timed, never model or data loading. Ours: the `score_pairs` call (tokenization,
batching, forward passes, pair decisions). lm-eval: the time spent inside `lm.loglikelihood`
(tokenization, batching, forward passes), which is what the speed ratio uses; the whole
`simple_evaluate` call (plus building the task, its dataset and requests, and metrics) is printed
too. Both are warmed up first. The pairs are timed in `--chunks` pieces (default 10), ours and
lm-eval alternating which goes first, and the times are summed, so that load from other processes
hits both alike; with `--repeats N` the fastest round of each is used and every round's ratio is
printed. The 1-minute load average is printed: above the number of CPUs, timings are unreliable
(on a shared 2-core machine, `--threads 1` avoids the worst of it: two OpenMP threads competing
with another busy process can slow a scorer several-fold).

Precision: `--dtype fp32` (default) scores the fp32 model on both sides, which is what the agreement
goal needs; `--dtype bf16` casts the model to bf16 for both (a GPU speed run). lm-eval then takes the
log-softmax of bf16 logits and ours of float32 logits, so their decisions differ more.

`--paper-shape` scores with a randomly initialised model of the paper's 180M shape and the Llama-3
tokenizer instead (speed does not depend on the weights). The run also prints how much arithmetic
each side does: our tree nodes (layers) and head rows per token against lm-eval's padded positions,
and the ratio of their matrix-product FLOPs, which is the ceiling of the speed ratio wherever both
sides are compute-bound (a large model on a CPU).

Goal (issue #3): ours >= 3x lm-eval's pairs/s, >= 99.9% identical decisions, |acc diff| <= 0.001.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
DEFAULT_MODEL = REPO / "runs" / "tiny" / "models" / "english" / "base_1x" / "final"


def default_data() -> Path:
    return Path(os.environ.get("HYPERLLAMA_DATA", REPO.parent / "shared" / "data")).resolve()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                    help="save_pretrained folder with its tokenizer (default: the tiny English "
                         "base_1x, runs/tiny/models/english/base_1x/final)")
    ap.add_argument("--paper-shape", action="store_true",
                    help="instead of --model: a randomly initialised model of the paper's 180M shape "
                         "(modeling.PAPER_1X) with the Llama-3 tokenizer")
    ap.add_argument("--data", type=Path, default=None,
                    help="data folder holding blimp/*.jsonl.gz (default: $HYPERLLAMA_DATA or "
                         "../shared/data)")
    ap.add_argument("--batch-size", type=lambda v: v if v == "auto" else int(v), default=32,
                    help="sentences per forward for both, or 'auto' for both (each picks its own: "
                         "lm-eval probes up to 64, ours fills a memory budget)")
    ap.add_argument("--no-share-prefixes", action="store_true",
                    help="ours without prefix-tree packing (each sentence in its own row)")
    ap.add_argument("--max-pairs-per-paradigm", type=int, default=None,
                    help="subsample each paradigm (default: all, the full 67,000 pairs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="fp32 (default): both score the fp32 model in fp32. bf16: both score the "
                         "model cast to bf16 (lm-eval uses the cast model as given; ours runs it "
                         "with dtype='bf16')")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: "
                    "torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds per scorer")
    ap.add_argument("--chunks", type=int, default=10,
                    help="the pairs are timed in this many chunks, ours and lm-eval alternating "
                         "first, so that load from other processes hits both alike (default 10)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hyperllama_lib  # noqa: F401  (registers the hyperllama model type)
    from hyperllama_lib.evaluation import pair_sources
    from hyperllama_lib.evaluation import scoring as ev

    try:
        import _lm_eval_peer as peer
        import lm_eval
        peer.make_hflm  # noqa: B018
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as err:
        sys.exit(f"lm-eval with its [hf] extra is needed: .venv/bin/pip install 'lm-eval[hf]' ({err})")

    if not args.paper_shape and not args.model.is_dir():
        sys.exit(f"no model folder at {args.model}: run the tiny reproduction or pass --model DIR")
    data = args.data or default_data()
    if args.threads:
        torch.set_num_threads(args.threads)
    peer.quiet_lm_eval()

    pairs = pair_sources.load_blimp_local(data, max_pairs_per_paradigm=args.max_pairs_per_paradigm)
    if args.paper_shape:
        from hyperllama_lib.corpus import tokenizer as tok_lib
        from hyperllama_lib.models import modeling

        new_tokenizer = tok_lib.llama3_tokenizer
        tok = new_tokenizer()
        model = modeling.new_model(modeling.smollm2_config(
            **modeling.PAPER_1X, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id), seed=0)
        model_name = "random paper 1x shape (modeling.PAPER_1X, Llama-3 tokenizer)"
    else:
        def new_tokenizer():
            return AutoTokenizer.from_pretrained(args.model)

        model = AutoModelForCausalLM.from_pretrained(args.model)
        model_name = str(args.model)
    model = model.to(args.device).eval()
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    tok_ours = new_tokenizer()
    lm = peer.make_hflm(model, new_tokenizer(), args.batch_size)
    peer_batch_size = args.batch_size
    if args.batch_size == "auto":
        # lm-eval re-runs its batch-size probe (forward passes at full context) on every call;
        # probe once here, untimed, and give it the size found, so only scoring is compared.
        peer_batch_size = int(lm._detect_batch_size())
        lm = peer.make_hflm(model, new_tokenizer(), peer_batch_size)
    peer.check_conditioning(lm, pairs["good"].iloc[0])
    n = len(pairs)
    work = arithmetic(model, tok_ours, pairs, args.batch_size, peer_batch_size, args.device,
                      not args.no_share_prefixes)
    print(f"model {model_name} ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{n:,} pairs, batch size {args.batch_size} (lm-eval: {peer_batch_size}), device "
          f"{args.device}, {args.dtype}, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}, lm-eval "
          f"{getattr(lm_eval, '__version__', '?')}", flush=True)
    print(f"arithmetic per token (tokens incl. BOS): ours {work['ours_layer_rows_per_token']:.3f} "
          f"layer rows and {work['ours_head_rows_per_token']:.3f} head rows, lm-eval "
          f"{work['lm_eval_rows_per_token']:.3f} of both; matrix-product FLOPs lm-eval / ours "
          f"{work['flop_ratio']:.2f}x (the speed-ratio ceiling where both are compute-bound)",
          flush=True)

    def run_ours(df):
        start = time.perf_counter()
        scored, summary = ev.score_pairs(model, tok_ours, df, batch_size=args.batch_size,
                                         device=args.device, dtype=args.dtype, progress=False,
                                         share_prefixes=not args.no_share_prefixes)
        return scored, time.perf_counter() - start

    chunks = [c for c in np.array_split(np.arange(n), max(1, min(args.chunks, n))) if len(c)]
    with tempfile.TemporaryDirectory(prefix="blimp_speed_") as tmp:
        warm = pairs.iloc[:256].reset_index(drop=True)
        run_ours(warm)
        peer.run_lm_eval(lm, warm, Path(tmp) / "warmup")

        loads = [os.getloadavg()[0]]
        ours_times, peer_ll_times, peer_total_times = [], [], []
        for r in range(args.repeats):
            t_ours = t_ll = t_total = 0.0
            ours_parts, peer_parts = [], []
            for k, idx in enumerate(chunks):
                part = pairs.iloc[idx].reset_index(drop=True)
                # Alternate who goes first, so a burst of load elsewhere hits both alike.
                for who in (("ours", "peer") if (r + k) % 2 == 0 else ("peer", "ours")):
                    if who == "ours":
                        scored, seconds = run_ours(part)
                        ours_parts.append(scored)
                        t_ours += seconds
                    else:
                        res = peer.run_lm_eval(lm, part, Path(tmp) / f"r{r}c{k}")
                        peer_parts.append(res)
                        t_ll += res["seconds_loglikelihood"]
                        t_total += res["seconds_total"]
                loads.append(os.getloadavg()[0])
            ours_times.append(t_ours)
            peer_ll_times.append(t_ll)
            peer_total_times.append(t_total)
            print(f"round {r + 1}: ours {n / t_ours:,.0f} pairs/s, lm-eval {n / t_ll:,.0f} "
                  f"pairs/s (scoring) / {n / t_total:,.0f} (whole simple_evaluate), ratio "
                  f"{t_ll / t_ours:.2f}x", flush=True)

    ours = pd.concat(ours_parts, ignore_index=True)
    result = {key: np.concatenate([p[key] for p in peer_parts])
              for key in ("correct", "logp_good", "logp_bad")}
    result["acc"] = float(result["correct"].mean())
    stats = peer.compare(ours, result)
    ours_pps = n / min(ours_times)
    peer_pps = n / min(peer_ll_times)
    peer_total_pps = n / min(peer_total_times)
    out = {
        "model": model_name, "n_pairs": n, "batch_size": args.batch_size,
        "share_prefixes": not args.no_share_prefixes, "lm_eval_batch_size": peer_batch_size,
        "device": args.device, "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "ours_seconds": ours_times, "lm_eval_loglikelihood_seconds": peer_ll_times,
        "lm_eval_simple_evaluate_seconds": peer_total_times,
        "ours_pairs_per_s": ours_pps, "lm_eval_pairs_per_s": peer_pps,
        "lm_eval_end_to_end_pairs_per_s": peer_total_pps,
        "speed_ratio": ours_pps / peer_pps, "speed_ratio_end_to_end": ours_pps / peer_total_pps,
        "chunks": len(chunks), "load_average_1min": loads, **work, **stats,
    }
    print()
    print(f"ours:     {ours_pps:10,.0f} pairs/s   acc {stats['acc_ours']:.4f}")
    print(f"lm-eval:  {peer_pps:10,.0f} pairs/s   acc {stats['acc_lm_eval']:.4f}   "
          f"(whole simple_evaluate: {peer_total_pps:,.0f} pairs/s)")
    print(f"speed ratio ours / lm-eval: {out['speed_ratio']:.2f}x (goal >= 3x); against the "
          f"whole simple_evaluate {out['speed_ratio_end_to_end']:.2f}x")
    print(f"same decision on {stats['agreement']:.4%} of pairs ({stats['n_disagree']} differ, "
          f"{stats['n_disagree_not_identical']} of them with good != bad; BLiMP has "
          f"{stats['n_identical_pairs']} pairs with good == bad: a tie, wrong for us, right for "
          f"lm-eval's argmax), acc difference {stats['acc_diff'] * 100:+.3f} points")
    print(f"pairs with |logp good - logp bad| < 1e-4: {stats['n_near_ties']}; "
          f"max |logp ours - lm-eval| {stats['max_abs_logp_diff']:.1e}")
    print(f"1-min load average during timing: {min(loads):.2f} to {max(loads):.2f} "
          f"({os.cpu_count()} CPUs; above the number of CPUs, timings are unreliable)")
    ok = (out["speed_ratio"] >= 3 and stats["agreement"] >= 0.999
          and abs(stats["acc_diff"]) <= 0.001)
    print("goal met" if ok else "goal NOT met")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


def arithmetic(model, tokenizer, pairs, batch_size, peer_batch_size, device, share_prefixes: bool) -> dict:
    """Rows each side runs through the layers and the output head, per token, and the ratio of
    their matrix-product FLOPs (attention scores left out: short sentences).

    Ours: every distinct sentence once, as prefix-tree nodes (layers) and parents (head), batched
    as `score_pairs` batches them. lm-eval: every request's [BOS] + sentence minus its last token,
    sorted longest first and right-padded to its batch's longest, through layers and head alike.
    """
    from hyperllama_lib.evaluation import prefix_tree
    from hyperllama_lib.evaluation import scoring as ev
    from hyperllama_lib.models import modeling

    sentences = list(dict.fromkeys(list(pairs["good"]) + list(pairs["bad"])))
    encoded = ev._encode(tokenizer, sentences)
    tokens = sum(len(ids) for ids in encoded)
    if share_prefixes:
        limits = ev.tree_limits(model, batch_size, device)
        batches = list(prefix_tree.pack(encoded, ev.ATTENTION_CHUNK, **limits))
        layer_rows = sum(len(b.tokens) for b in batches)
        head_rows = sum(len(b.heads) for b in batches)
    else:  # rows sorted by length and right-padded; the head only where a token is scored
        lengths = sorted((len(ids) for ids in encoded), reverse=True)
        size = int(batch_size) if str(batch_size).isdigit() else len(lengths)
        layer_rows = sum(lengths[i] * len(lengths[i:i + size]) for i in range(0, len(lengths), size))
        head_rows = tokens - len(encoded)
    by_sentence = dict(zip(sentences, (len(ids) - 1 for ids in encoded)))
    requests = sorted((by_sentence[s] for s in list(pairs["good"]) + list(pairs["bad"])), reverse=True)
    peer_tokens = sum(r + 1 for r in requests)
    peer_rows = sum(requests[i] * len(requests[i:i + peer_batch_size])
                    for i in range(0, len(requests), peer_batch_size))
    counts = modeling.count_parameters(model)
    layer_flops = 2 * counts["non_embedding"]
    head_flops = 2 * model.config.vocab_size * model.config.hidden_size
    ours_flops = layer_rows * layer_flops + head_rows * head_flops
    peer_flops = peer_rows * (layer_flops + head_flops)
    return {"ours_layer_rows_per_token": layer_rows / tokens,
            "ours_head_rows_per_token": head_rows / tokens,
            "lm_eval_rows_per_token": peer_rows / peer_tokens,
            "flop_ratio": peer_flops / ours_flops}


if __name__ == "__main__":
    main()
