"""Causal-LM training as in the authors' recipe: AdamW (0.9, 0.95), eps 1e-8, weight decay 0.01,
clip 1.0, linear warm-up, constant, linear decay to 0 over the last ~20% of steps; a fresh optimiser
and schedule for every stage; checkpoints at fixed token intervals with held-out bits per byte.

Data: one packed token stream per stage, already mixed and shuffled at document level by 01_data
(for the seed it is ordered by curriculum phase). Step s takes the next `global_batch_size` blocks of
`seq_len` tokens in order, wrapping around if a stage asks for more steps than the stream holds.

FLOPs convention: 6 x parameters x tokens (forward + backward, attention quadratic term ignored),
recorded twice: with all parameters (tied embedding counted once) and without embedding parameters.
"""
from __future__ import annotations

import contextlib
import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import artifacts, evaluation, modeling
from .packing import PackedTokens
from .params import Params


def resolve_device(p: Params) -> torch.device:
    if p.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(p.device)


def autocast(p: Params, device: torch.device):
    """bf16 autocast with fp32 master weights on GPU (the paper's bf16 + fp32 accumulation); fp32 on CPU."""
    use_bf16 = p.precision == "bf16" or (p.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_factor(step: int, total_steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Warm-up / constant / linear decay to 0 ("WSD"), as a multiplier of the peak LR for `step` (0-based)."""
    warmup = min(warmup_steps, max(total_steps - 1, 0))
    decay_start = total_steps - max(1, round(decay_fraction * total_steps)) if decay_fraction > 0 else total_steps
    decay_start = max(decay_start, warmup)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step < decay_start:
        return 1.0
    return max(0.0, (total_steps - step) / (total_steps - decay_start + 1))


def make_optimizer(model: torch.nn.Module, p: Params, device: torch.device) -> torch.optim.AdamW:
    # Decay matrices (embedding included, as nanoGPT does), not norm weights or biases.
    params = [q for q in model.parameters() if q.requires_grad]
    groups = [
        {"params": [q for q in params if q.dim() >= 2], "weight_decay": p.weight_decay},
        {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=p.lr, betas=(p.adam_beta1, p.adam_beta2), eps=p.adam_eps,
                             fused=device.type == "cuda")


@dataclass
class Stage:
    """One training stage: a model continues on one packed stream for `steps` optimiser steps."""
    name: str
    tokens: Path  # packed token file (.bin)
    out_dir: Path  # gets final/, checkpoints/step_N/, train_log.csv, curve.csv
    steps: int | None = None  # None: one pass over the stream
    eval_texts: dict[str, list[str]] = field(default_factory=dict)  # lang -> held-out texts for bpb
    save_checkpoints: bool = True


def stream_steps(tokens: Path, p: Params) -> int:
    """Optimiser steps in one pass over a packed stream."""
    return PackedTokens(tokens).num_blocks(p.seq_len) // p.global_batch_size


def _batch(data: PackedTokens, first_block: int, n: int, seq_len: int, n_blocks: int) -> torch.Tensor:
    rows = [data.block((first_block + i) % n_blocks, seq_len) for i in range(n)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _save(model, tokenizer, dst: Path) -> None:
    with artifacts.atomic_dir(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def _eval_bpb(model, tokenizer, stage: Stage, p: Params, device) -> dict[str, float]:
    model.eval()
    with autocast(p, device):
        out = {lang: evaluation.bits_per_byte(model, tokenizer, texts, context_len=p.seq_len,
                                              batch_size=p.eval_batch_size, device=device,
                                              progress=False)["bpb"]
               for lang, texts in stage.eval_texts.items()}
    model.train()
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    import io
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    artifacts.atomic_write_text(path, buf.getvalue())


def train(model, tokenizer, stage: Stage, p: Params, log=print) -> dict:
    """Train `model` in place for one stage; returns a summary (steps, tokens, FLOPs, final bpb)."""
    device = resolve_device(p)
    data = PackedTokens(stage.tokens)
    n_blocks = data.num_blocks(p.seq_len)
    if n_blocks == 0:
        raise ValueError(f"{stage.tokens} holds fewer than {p.seq_len} tokens: no training block")
    total = stage.steps if stage.steps is not None else n_blocks // p.global_batch_size
    if total < 1:
        raise ValueError(f"stage {stage.name}: {n_blocks} blocks of {p.seq_len} tokens are fewer than "
                         f"one batch of {p.global_batch_size}; lower global_batch_size or add data")
    torch.manual_seed(p.seed)
    model.to(device).train()
    opt = make_optimizer(model, p, device)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, p.warmup_steps, p.decay_fraction))
    counts = modeling.count_parameters(model)
    save_every = max(1, round(p.checkpoint_every_tokens / p.tokens_per_step))
    eval_every = max(1, round((p.train_eval_every_tokens or p.checkpoint_every_tokens) / p.tokens_per_step))
    log_rows, curve_rows = [], []

    def checkpoint(step: int, save: bool) -> None:
        tokens = step * p.tokens_per_step
        bpb = _eval_bpb(model, tokenizer, stage, p, device)
        for lang, value in bpb.items():
            curve_rows.append({"stage": stage.name, "step": step, "tokens": tokens,
                               "flops_total": 6 * counts["total"] * tokens,
                               "flops_non_embedding": 6 * counts["non_embedding"] * tokens,
                               "lang": lang, "bpb": value})
        if save and stage.save_checkpoints and 0 < step < total:
            _save(model, tokenizer, stage.out_dir / "checkpoints" / f"step_{step:06d}")

    checkpoint(0, save=False)
    started = time.time()
    bar = tqdm(range(total), desc=stage.name, unit="step", mininterval=2.0)
    for step in bar:
        loss_sum = 0.0
        for micro in range(p.grad_accum):
            first = (step * p.grad_accum + micro) * p.micro_batch_size
            ids = _batch(data, first, p.micro_batch_size, p.seq_len, n_blocks).to(device)
            with autocast(p, device):
                loss = model(input_ids=ids, labels=ids).loss / p.grad_accum
            loss.backward()
            loss_sum += loss.item()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"stage {stage.name}: loss is {loss_sum} at step {step + 1}; "
                                     "the last good checkpoint is kept; lower lr or check the data")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        log_rows.append({"step": done, "tokens": done * p.tokens_per_step, "loss": round(loss_sum, 6),
                         "lr": opt.param_groups[0]["lr"] if done < total else 0.0,
                         "grad_norm": round(float(grad_norm), 6)})
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        if done % eval_every == 0 or done % save_every == 0 or done == total:
            checkpoint(done, save=done % save_every == 0)
    elapsed = time.time() - started
    model.eval()
    _save(model, tokenizer, stage.out_dir / "final")
    _write_csv(stage.out_dir / "train_log.csv", log_rows)
    _write_csv(stage.out_dir / "curve.csv", curve_rows)
    tokens = total * p.tokens_per_step
    summary = {"stage": stage.name, "steps": total, "tokens": tokens,
               "flops_total": 6 * counts["total"] * tokens,
               "flops_non_embedding": 6 * counts["non_embedding"] * tokens,
               "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
               "seconds": round(elapsed, 2), "tokens_per_second": round(tokens / max(elapsed, 1e-9)),
               "final_loss": log_rows[-1]["loss"],
               "final_bpb": {r["lang"]: r["bpb"] for r in curve_rows if r["step"] == total}}
    artifacts.atomic_write_json(stage.out_dir / "summary.json", summary)
    log(f"[{stage.name}] {total} steps, {tokens:,} tokens in {elapsed:.1f}s "
        f"({summary['tokens_per_second']:,} tok/s), final loss {summary['final_loss']:.3f}")
    return summary
