"""A LoRA training step against a full continued-pretraining (CPT) step: step time, peak memory and
optimiser-state size, run by hand (not a test):

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lora_speed.py --shape 180m
    .venv/bin/python benchmarks/lora_speed.py --shape 572m --device cuda --seq-len 2048 --micro-batch 8

Models: the paper's 180M shape (`modeling.PAPER_1X` via `smollm2_config` + `new_model`, seed 0) and its
572M shape made the paper's way, `cloning.hyperclone(model_1x, 2)` (a HyperLlama whose tied head has
normalisation factor 2). Both are written once to --workdir (save_pretrained) and reused by later runs;
every measurement loads one with `modeling.load_model` in a fresh process.

Sides (each step: one micro batch of `--micro-batch` x `--seq-len` uniform random token ids, labels =
inputs, loss.backward, gradient clipping at 1.0 over the trained parameters, optimiser step, gradients
set to None; fp32 on CPU, bf16 autocast with fp32 weights on CUDA; SDPA attention):
- lora: `peft.get_peft_model` with LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
  lora_dropout=0.0): every attention and MLP projection, not the tied embedding / head, which stay
  frozen like every other base weight. AdamW over the trainable (LoRA) parameters only.
- full: every parameter trained, AdamW over all of them.
AdamW is `training.make_optimizer`'s (betas 0.9/0.95, eps 1e-8, weight decay 0.01 on matrices; foreach on
CPU, fused on CUDA), so a full step is the training loop's step.

Each side runs `--repeats` times, each time in a fresh process, alternating which side goes first;
a process loads the model, builds its side, resets the kernel's peak-RSS mark (/proc/self/clear_refs),
runs `--warmup-steps` untimed steps and `--steps` timed ones. Reported per side: median step time (over
all timed steps of all its processes), peak memory during the steps (peak RSS, ru_maxrss after the reset:
the resident model and the import of torch included, model loading excluded; on CUDA
torch.cuda.max_memory_allocated), optimiser-state bytes (exp_avg + exp_avg_sq after a step) and trained
parameters; then LoRA / full ratios against the goals (optimiser state <= 5%, peak memory <= 0.6x, step
time <= 0.8x). The 1-minute load average is printed before and after (shared 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

GOALS = {"optimizer_state": 0.05, "peak_memory": 0.6, "step_time": 0.8}
SIDES = ("lora", "full")
SHAPES = ("180m", "572m", "tiny")
TINY = dict(vocab_size=2048, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=16,
            intermediate_size=128)  # only to check the script quickly
ADAMW = SimpleNamespace(lr=3e-4, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, weight_decay=0.01)


def model_dir(workdir: Path, shape: str) -> Path:
    return workdir / f"model_{shape}"


def make_model(workdir: Path, shape: str) -> Path:
    from hyperllama_lib.models import cloning, modeling

    out = model_dir(workdir, shape)
    if (out / "config.json").is_file():
        return out
    one_x = modeling.smollm2_config(**(TINY if shape == "tiny" else modeling.PAPER_1X))
    model = modeling.new_model(one_x, seed=0)
    if shape == "572m":
        model = cloning.hyperclone(model, 2)
    model.save_pretrained(out)
    print(f"saved {out}", flush=True)
    return out


def lora_model(model):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
    return get_peft_model(model, config)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(state[key].nbytes for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:  # "5" resets the process's peak RSS (VmHWM, which ru_maxrss reads), Linux >= 4.0
        Path("/proc/self/clear_refs").write_text("5")


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(side: str, path: Path, device: torch.device, micro_batch: int, seq_len: int,
           warmup: int, steps: int) -> dict:
    from hyperllama_lib.models import modeling
    from hyperllama_lib.training import loop

    load_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = modeling.load_model(path, device=str(device))
    load_peak_mb = max(load_peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    model_params, vocab_size = modeling.count_parameters(model)["total"], model.config.vocab_size
    if side == "lora":
        model = lora_model(model)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = loop.make_optimizer(model, ADAMW, device)
    batch = torch.randint(0, vocab_size, (micro_batch, seq_len),
                          generator=torch.Generator().manual_seed(0)).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    reset_peak(device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return {"side": side, "step_s": times, "peak_mb": peak_mb(device), "load_peak_rss_mb": load_peak_mb,
            "optimizer_state_bytes": optimizer_state_bytes(optimizer),
            "trained_params": sum(p.numel() for p in trained), "model_params": model_params,
            "loss": float(loss), "threads": torch.get_num_threads()}


def run_side(side: str, path: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--model-dir", str(path), "--device", args.device,
           "--micro-batch", str(args.micro_batch), "--seq-len", str(args.seq_len),
           "--warmup-steps", str(args.warmup_steps), "--steps", str(args.steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{side} worker failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def load_average() -> float:
    return os.getloadavg()[0]


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for side, rs in runs.items():
        out[side] = {"median_step_s": statistics.median(t for r in rs for t in r["step_s"]),
                     "step_s_per_round": [statistics.median(r["step_s"]) for r in rs],
                     "peak_mb": max(r["peak_mb"] for r in rs), "peak_mb_per_round": [r["peak_mb"] for r in rs],
                     "optimizer_state_bytes": rs[0]["optimizer_state_bytes"],
                     "trained_params": rs[0]["trained_params"], "model_params": rs[0]["model_params"],
                     "load_peak_rss_mb": max(r["load_peak_rss_mb"] for r in rs)}
    lora, full = out["lora"], out["full"]
    out["ratios"] = {"optimizer_state": lora["optimizer_state_bytes"] / full["optimizer_state_bytes"],
                     "peak_memory": lora["peak_mb"] / full["peak_mb"],
                     "step_time": lora["median_step_s"] / full["median_step_s"],
                     "step_time_per_round": [a / b for a, b in zip(lora["step_s_per_round"],
                                                                    full["step_s_per_round"])]}
    return out


def print_table(summary: dict) -> None:
    print(f"{'':6} {'trained params':>15} {'optimiser state':>16} {'peak memory':>12} {'median step':>12}")
    for side in SIDES:
        s = summary[side]
        print(f"{side:6} {s['trained_params']:>15,} {s['optimizer_state_bytes'] / 2**20:>13,.1f} MB "
              f"{s['peak_mb']:>9,.0f} MB {s['median_step_s']:>10.3f} s")
    for key, goal in GOALS.items():
        ratio = summary["ratios"][key]
        print(f"lora / full {key}: {ratio:.3f} (goal <= {goal}): {'met' if ratio <= goal else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="180m")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per side")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hyperllama_lora_bench"))
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model_dir, device, args.micro_batch, args.seq_len,
                                args.warmup_steps, args.steps)))
        return
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = make_model(args.workdir, args.shape)
    print(f"shape {args.shape}, {args.device}, micro batch {args.micro_batch} x {args.seq_len} tokens, "
          f"{args.warmup_steps} warm-up + {args.steps} timed steps, {args.repeats} rounds; "
          f"torch {torch.__version__}; load average (1 min) {load_average():.2f}", flush=True)
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for r in range(args.repeats):
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            res = run_side(side, path, args)
            runs[side].append(res)
            print(f"round {r + 1} {side}: median step {statistics.median(res['step_s']):.3f} s "
                  f"(steps {', '.join(f'{t:.3f}' for t in res['step_s'])}), peak {res['peak_mb']:,.0f} MB, "
                  f"{res['threads']} threads, load average {load_average():.2f}", flush=True)
    summary = summarise(runs)
    summary.update(shape=args.shape, device=args.device, micro_batch=args.micro_batch, seq_len=args.seq_len,
                   date=time.strftime("%Y-%m-%d"), torch=torch.__version__, load_average_end=load_average())
    print(json.dumps(summary, indent=1))
    print_table(summary)


if __name__ == "__main__":
    main()
