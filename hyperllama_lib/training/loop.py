"""Causal-LM training as in the authors' recipe: AdamW (0.9, 0.95), eps 1e-8, weight decay 0.01,
clip 1.0, linear warm-up, constant, linear decay to 0 over the last ~20% of steps; a fresh optimiser
and schedule for every stage; checkpoints at fixed token intervals with held-out bits per byte.

Data: one packed token stream per stage, already mixed and shuffled at document level by 01_data
(for the seed it is ordered by curriculum phase). Step s takes the next `global_batch_size` blocks of
`seq_len` tokens in order, wrapping around if a stage asks for more steps than the stream holds.

Resume: at every checkpoint a resume state is written next to the checkpoint (`resume.py`); a killed
run started again continues from its newest valid state, and on CPU ends with the same bytes as an
uninterrupted run. Device, precision and compilation follow `hyperllama_lib.device`.

FLOPs convention: 6 x parameters x tokens (forward + backward, attention quadratic term ignored),
recorded twice: with all parameters (tied embedding counted once) and without embedding parameters.
"""
from __future__ import annotations

import csv
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import evaluation
from ..artifacts import atomic
from ..corpus.packing import PackedTokens
from ..device import Placement
from ..device import resolve as resolve_placement
from ..errors import DiskSpaceError, NonFiniteLossError, TooLittleDataError, TrainingError  # noqa: F401  (defined in errors.py)
from ..models import modeling
from ..params import ParamError, Params
from ..progress import tqdm
from . import adapters, distributed, resume
from .stage_folder import StageFolder

FP16_INIT_SCALE = 2.0 ** 16  # GradScaler's first loss scale (halved on every overflow)


def placement(p: Params) -> Placement:
    """Where and in which precision a stage trains (`hyperllama_lib.device`)."""
    return resolve_placement(p.device, p.precision, p.compile)


def grad_scaler(where: Placement, model):
    """Loss scaling for fp16 (None otherwise); sharded gradients need the scaler that agrees across ranks."""
    if not where.needs_grad_scaler:
        return None
    if distributed.sharded(model):
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
        return ShardedGradScaler(where.device.type, init_scale=FP16_INIT_SCALE)
    return torch.amp.GradScaler(where.device.type, init_scale=FP16_INIT_SCALE)


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


def make_optimizer(model: torch.nn.Module, p: Params, device: torch.device, lr: float | None = None) -> torch.optim.AdamW:
    # Decay matrices (embedding included, as nanoGPT does), not norm weights or biases.
    params = [q for q in model.parameters() if q.requires_grad]
    groups = [
        {"params": [q for q in params if q.dim() >= 2], "weight_decay": p.weight_decay},
        {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=p.lr if lr is None else lr, betas=(p.adam_beta1, p.adam_beta2), eps=p.adam_eps,
                             fused=device.type == "cuda")


@dataclass
class Stage:
    """One training stage: a model continues on one packed stream for `steps` optimiser steps."""
    name: str
    tokens: Path  # packed token file (.bin)
    out_dir: Path  # its StageFolder: final/, checkpoints/step_N/, train_log.csv, curve.csv, summary.json
    steps: int | None = None  # None: one pass over the stream
    eval_texts: dict[str, list[str]] = field(default_factory=dict)  # lang -> held-out texts for bpb
    save_checkpoints: bool = True
    lr: float | None = None  # peak learning rate; None: p.lr (LoRA stages: p.lora_lr)


def _batch(data: PackedTokens, first_block: int, n: int, seq_len: int, n_blocks: int) -> torch.Tensor:
    rows = [data.block((first_block + i) % n_blocks, seq_len) for i in range(n)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _save(model, tokenizer, dst: Path, step: int = 0, state_dict: dict | None = None) -> None:
    """Save the plain (never compiled or wrapped) model; `state_dict` holds gathered weights under FSDP."""
    with resume.disk_full_is_clear(dst, step), atomic.replace_dir(dst) as tmp:
        # save_pretrained empties the dict it is given
        model.save_pretrained(tmp, safe_serialization=True, state_dict=None if state_dict is None else dict(state_dict))
        tokenizer.save_pretrained(tmp)


def check_disk(stage: Stage, p: Params, model, checkpoints_left: int) -> None:
    """Stop before training when the free disk cannot hold what the stage will write."""
    model_bytes = sum(q.numel() * 4 for q in model.parameters())  # fp32 safetensors
    kept = 0 if not stage.save_checkpoints else \
        checkpoints_left if p.keep_checkpoints is None else min(checkpoints_left, p.keep_checkpoints)
    # checkpoints, the final model, and resume states (weights + two AdamW moments) with one being written
    need = int(1.1 * model_bytes * (kept + 1 + 3 * (p.keep_resume_states + 1)))
    where = stage.out_dir
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need:
        raise DiskSpaceError(
            f"stage {stage.name} needs about {need / 2**20:,.1f} MiB free on {where} ({kept} checkpoints, the "
            f"final model and {p.keep_resume_states} resume state(s) of a {model_bytes / 2**20:,.1f} MiB model), "
            f"only {free / 2**20:,.1f} MiB are free: free space, set keep_checkpoints, or choose another run_dir")


def _unsharded(model, device):
    """Under FSDP an unsharded copy on every rank (the scorer reads weights, which FSDP only gathers
    inside forward); else the model itself."""
    if not distributed.sharded(model):
        return model
    full = distributed.full_parameters(model, everywhere=True)
    with torch.random.fork_rng(devices=[]):  # initialising the copy must not move the training RNG
        copy = modeling.model_class(model.config)(model.config).float()
    copy.load_state_dict(full, strict=False)  # strict=False: the tied head is not a parameter of its own
    return copy.to(device)


def _eval_bpb(model, tokenizer, stage: Stage, p: Params, where: Placement) -> dict[str, float]:
    model.eval()
    scored = _unsharded(model, where.device)
    # the stage's own precision: scoring's "auto" would choose bf16 on any GPU (a T4 trains in fp16)
    out = {lang: evaluation.bits_per_byte(scored, tokenizer, texts, context_len=p.seq_len,
                                          batch_size=p.eval_batch_size, device=where.device,
                                          progress=False, dtype=where.precision)["bpb"]
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
    atomic.write_text(path, buf.getvalue())


def _micro_batches_per_rank(p: Params) -> int:
    """Each rank's share of a step's micro-batches (all of them with one process)."""
    world = distributed.world_size()
    if p.global_batch_size % (p.micro_batch_size * world):
        raise ParamError(f"global_batch_size {p.global_batch_size} is not a multiple of micro_batch_size "
                         f"{p.micro_batch_size} x {world} processes; change one so that every process gets "
                         "whole micro-batches")
    return p.grad_accum // world


def _prepare(model, p: Params, where: Placement, lr: float | None):
    """(the module forward/backward runs through, the optimiser): DDP or FSDP across processes, compiled
    if asked. `model` itself stays the plain module that is evaluated and saved."""
    model.to(where.device).train()
    train_model = distributed.wrap(model, p.distributed, where.device)
    opt = make_optimizer(model, p, where.device, lr)  # after wrapping: FSDP swaps in sharded parameters
    if where.compile:
        train_model = torch.compile(train_model)
    return train_model, opt


def _grad_norm(model, clip: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a replicated DTensor


def train(model, tokenizer, stage: Stage, p: Params, log=print) -> dict:
    """Train `model` in place for one stage; returns a summary (steps, tokens, FLOPs, final bpb).

    Continues from the stage's newest valid resume state when there is one (see the module docstring).
    Under torchrun every process calls this with the same arguments; each computes its share of every
    step's micro-batches, and rank 0 alone writes files.
    """
    distributed.init(p.device)
    main = distributed.is_main()
    log = log if main else (lambda message: None)
    where = placement(p)
    device = where.device
    data = PackedTokens(stage.tokens)
    n_blocks = data.num_blocks(p.seq_len)
    if n_blocks == 0:
        raise TooLittleDataError(f"stage {stage.name}: {stage.tokens} holds {data.n_tokens} tokens, fewer than "
                                 f"one block of seq_len {p.seq_len}: no training block; add text or lower seq_len")
    total = stage.steps if stage.steps is not None else n_blocks // p.global_batch_size
    if total < 1:
        raise TooLittleDataError(f"stage {stage.name}: {n_blocks} blocks of {p.seq_len} tokens are fewer than "
                                 f"one batch of {p.global_batch_size}; lower global_batch_size or add data")
    accum = _micro_batches_per_rank(p)
    torch.manual_seed(p.seed)
    key = resume.resume_key(model, stage, p, total, data)
    train_model, opt = _prepare(model, p, where, stage.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, p.warmup_steps, p.decay_fraction))
    scaler = grad_scaler(where, model)
    lora = adapters.is_peft(model)
    counts = modeling.count_parameters(adapters.folded(model) if lora else model)
    trainable = adapters.trainable_count(model)
    per_token_total, per_token_non_embedding = adapters.step_flops(counts, trainable, full=not lora)
    save_every = max(1, round(p.checkpoint_every_tokens / p.tokens_per_step))
    eval_every = max(1, round((p.train_eval_every_tokens or p.checkpoint_every_tokens) / p.tokens_per_step))
    folder = StageFolder(stage.out_dir)
    resume_root = folder.resume
    if main:
        resume.remove_leftovers(stage.out_dir)
    log_rows, curve_rows, start = [], [], 0
    state = resume.find(resume_root, key, stage.name, log)
    if state is not None:
        resume.restore(state, model, opt, sched, scaler)
        start, log_rows, curve_rows = state["step"], state["log_rows"], state["curve_rows"]
        log(f"[{stage.name}] resuming from step {start} of {total} ({state['folder']})")
    del state
    distributed.barrier()  # every rank has read its state before rank 0 removes any
    if main:
        resume.remove_unused(resume_root, start)
        check_disk(stage, p, model, len(range(save_every * (start // save_every + 1), total, save_every)))

    def checkpoint(step: int, save: bool) -> None:
        tokens = step * p.tokens_per_step
        plain = adapters.folded(model)  # the fast scorer reads plain Llama weights
        bpb = _eval_bpb(plain, tokenizer, stage, p, where)
        model.train()
        for lang, value in bpb.items():
            curve_rows.append({"stage": stage.name, "step": step, "tokens": tokens,
                               "flops_total": per_token_total * tokens,
                               "flops_non_embedding": per_token_non_embedding * tokens,
                               "lang": lang, "bpb": value})
        if save and 0 < step < total:
            parameters = distributed.full_parameters(model)  # collectives under FSDP: every rank takes part
            opt_state = distributed.full_optimizer_state(model, opt)
            if main:
                if stage.save_checkpoints and p.keep_checkpoints != 0:
                    _save(plain, tokenizer, folder.checkpoint(step), step,
                          parameters if distributed.sharded(model) else None)
                    resume.prune(folder.checkpoints, p.keep_checkpoints)
                resume.save(resume_root, step, key, parameters, opt_state, sched, scaler, log_rows, curve_rows)
                resume.prune(resume_root, p.keep_resume_states)
            distributed.barrier()

    if start == 0:
        checkpoint(0, save=False)
    started = time.time()
    bar = tqdm(range(start, total), initial=start, total=total, desc=stage.name, unit="step", mininterval=2.0,
               disable=not main)
    first_of_rank = distributed.rank() * accum
    skipped = sum(r.get("skipped", 0) for r in log_rows)
    for step in bar:
        loss_sum = 0.0
        for micro in range(accum):
            first = (step * p.grad_accum + first_of_rank + micro) * p.micro_batch_size
            ids = _batch(data, first, p.micro_batch_size, p.seq_len, n_blocks).to(device)
            with distributed.sync_grads(train_model, last=micro == accum - 1):
                with where.autocast():
                    loss = train_model(input_ids=ids, labels=ids).loss / accum
                (loss if scaler is None else scaler.scale(loss)).backward()
            loss_sum += loss.item()
        loss_sum = distributed.mean(loss_sum, device)
        if scaler is not None:
            scaler.unscale_(opt)
        grad_norm = _grad_norm(model, p.grad_clip)
        # fp16 overflows are expected now and then: the scaler skips that update and lowers its scale
        if not math.isfinite(loss_sum) or (not math.isfinite(grad_norm) and scaler is None):
            what = f"loss is {loss_sum}" if not math.isfinite(loss_sum) else f"gradient norm is {grad_norm}"
            kept = resume.step_folders(resume_root)
            raise NonFiniteLossError(
                f"stage {stage.name}: {what} at step {step + 1}; training stopped before the update, "
                + (f"the last good checkpoint ({kept[-1].name}) is kept" if kept else "no checkpoint was saved yet")
                + "; lower lr or check the data")
        done = step + 1
        fp16 = {}
        if scaler is None:
            opt.step()
        else:
            fp16 = {"loss_scale": scaler.get_scale(), "skipped": int(not math.isfinite(grad_norm))}
            scaler.step(opt)
            scaler.update()
            if fp16["skipped"]:
                skipped += 1
                log(f"[{stage.name}] fp16 gradient overflow at step {done}: update skipped, loss scale "
                    f"{fp16['loss_scale']:g} -> {scaler.get_scale():g}")
        sched.step()
        opt.zero_grad(set_to_none=True)
        log_rows.append({"step": done, "tokens": done * p.tokens_per_step, "loss": round(loss_sum, 6),
                         "lr": opt.param_groups[0]["lr"] if done < total else 0.0,
                         "grad_norm": round(grad_norm, 6), **fp16})
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        if done % eval_every == 0 or done % save_every == 0 or done == total:
            checkpoint(done, save=done % save_every == 0)
    elapsed = time.time() - started
    model.eval()
    final = distributed.full_parameters(model) if distributed.sharded(model) else None
    tokens = total * p.tokens_per_step
    summary = {"stage": stage.name, "steps": total, "tokens": tokens,
               "flops_total": per_token_total * tokens,
               "flops_non_embedding": per_token_non_embedding * tokens,
               "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
               "params_trainable": trainable,
               "seconds": round(elapsed, 2), "tokens_per_second": round((total - start) * p.tokens_per_step
                                                                        / max(elapsed, 1e-9)),
               "resumed_from_step": start, "processes": distributed.world_size(),
               "final_loss": log_rows[-1]["loss"],
               "final_bpb": {r["lang"]: r["bpb"] for r in curve_rows if r["step"] == total}}
    if scaler is not None:
        summary["skipped_steps"] = skipped
    if main:
        _save(adapters.folded(model), tokenizer, folder.final, total, final)
        if lora:
            adapters.save_adapter(model, folder.adapter)
        _write_csv(folder.train_log, log_rows)
        _write_csv(folder.curve, curve_rows)
        atomic.write_json(folder.summary, summary)
    distributed.barrier()  # the next stage (on every rank) may load what rank 0 just wrote
    log(f"[{stage.name}] {total} steps, {tokens:,} tokens in {elapsed:.1f}s "
        f"({summary['tokens_per_second']:,} tok/s), final loss {summary['final_loss']:.3f}")
    return summary
