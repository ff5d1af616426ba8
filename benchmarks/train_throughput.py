"""Training throughput and model FLOPs utilisation (MFU): our training path against a plain Hugging Face
Trainer on the same model, data, micro batch, sequence length and precision, in one run.

Run by hand:

    taskset -c 1 .venv/bin/python benchmarks/train_throughput.py --shape tiny --threads 1     # CPU
    .venv/bin/python benchmarks/train_throughput.py --shape 572m --seq-len 2048 --micro-batch 8   # GPU

Sides (each one optimiser step = one micro batch of `--micro-batch` x `--seq-len` tokens, no gradient
accumulation, gradient clipping at 1.0, labels = inputs):
- ours: `hyperllama_lib.training.train` itself on a packed token file (Params from params/<scale>.yaml,
  micro batch = global batch): AdamW from `training.make_optimizer` (fused on CUDA), `device.resolve(...).autocast()`
  (bf16 autocast with fp32 weights on GPU, fp32 on CPU), SDPA attention (`attn_implementation="sdpa"`)
  and torch.compile: compile=true through Params (training.train wraps the model in torch.compile,
  default mode); with an older training loop that has no `compile` key, this script calls `model.compile()`
  before handing the model over, and says so. `training.train` is called twice on the same model: a
  warm-up call of `--warmup-steps` steps (compilation happens here), then a timed call of `--steps` steps
  whose own `tokens_per_second` is the number reported (its clock covers the step loop only; setup, the
  resume key and the final save are outside it). The number of graphs compiled during the timed call is
  printed (0: no recompilation was timed).
- plain: `transformers.Trainer` with `TrainingArguments` and no tuning: optim "adamw_torch" (PyTorch
  AdamW, foreach, not fused), eager attention (`attn_implementation="eager"`), no torch.compile, bf16 via
  `bf16=True` on GPU (fp32 on CPU), the same LR, betas, eps, weight decay and clipping, default data
  loader (no workers). Timed from the end of step `--warmup-steps` to the end of step
  `--warmup-steps + --steps` (CUDA synchronised at both ends) with a TrainerCallback.
- trainer_defaults (with `--with-trainer-defaults`): the same Trainer with what transformers picks when
  nothing is said: its default optimizer (in transformers 5: "adamw_torch_fused") and default attention
  (SDPA); still no compile. Shows how much of the gap is torch.compile alone.

Both read the same synthetic packed token file (uniform random ids, seeded; `--tokens FILE` for a real
one). The model is the project's: `modeling.smollm2_config` + `modeling.new_model` (tiny: params/tiny.yaml's
shape with its 2,048-id BPE vocabulary; 180m: `modeling.PAPER_1X`; 572m: its x2 HyperCloning config,
`cloning.clone_config`, a HyperLlama with head factor 2).

MFU convention (printed with the numbers):
- model FLOPs per token = 6 x N + 12 x layers x (heads x head_dim) x seq_len, N = all parameters with the
  tied embedding counted once (it is also the output head's matmul). The second term is the attention
  score and value matmuls (forward + backward, no causal discount), as in PaLM's MFU. Also printed: 6 x N
  alone (the convention of the training loop's FLOP counts) and 6 x non-embedding N.
- MFU = tokens/s x FLOPs per token / peak FLOP/s. Peak: a documented dense constant per GPU (H100 SXM and
  H200 bf16: 989.4 TFLOP/s; H100 PCIe: 756; A100: 312), `--peak-tflops` to override; on CPU, fp32 matmul
  FLOP/s measured in the same run with the same threads ("measured matmul peak").

Goal (issue #7): at 572M, seq_len 2,048, bf16 on an H100: MFU >= 40% and ours >= 1.5x plain's tokens/s.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Dense (no sparsity) peak tensor-core FLOP/s at bf16, from the vendors' data sheets. Order matters: the
# first key found in torch.cuda.get_device_name() wins.
GPU_PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM5 / "H100 80GB HBM3"
    ("H200", 989.4e12),
    ("A100", 312e12),
]
SHAPES = ("tiny", "180m", "572m")
DEFAULTS = {  # shape -> (params scale file, seq_len, micro batch)
    "tiny": ("tiny", None, None),  # params/tiny.yaml's seq_len 128 and micro batch 16
    "180m": ("small", 2048, 8),
    "572m": ("small", 2048, 8),
}


# -- FLOPs arithmetic ------------------------------------------------------------------------------

def flops_per_token(n_params: int, layers: int, attn_dim: int, seq_len: int, attention: bool = True) -> int:
    """Training FLOPs per token: 6 N (+ 12 x layers x attn_dim x seq_len for attention scores and values)."""
    return 6 * n_params + (12 * layers * attn_dim * seq_len if attention else 0)


def mfu(tokens_per_second: float, flops_token: float, peak_flops: float) -> float:
    return tokens_per_second * flops_token / peak_flops


def gpu_peak_flops(device_name: str) -> float | None:
    """The documented dense bf16 peak for a GPU name, or None when it is not in the table."""
    for key, peak in GPU_PEAK_BF16:
        if key.lower() in device_name.lower():
            return peak
    return None


def measured_matmul_peak(n: int = 1024, seconds: float = 0.5, trials: int = 5) -> float:
    """Best fp32 n x n matmul FLOP/s on the CPU over `trials` runs of about `seconds` each."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds or reps == 0:
            torch.mm(a, b, out=out)
            reps += 1
        best = max(best, 2 * n ** 3 * reps / elapsed)
    return best


# -- model, data, params ---------------------------------------------------------------------------

def model_config(shape: str, p):
    from hyperllama_lib.models import cloning, modeling

    if shape == "tiny":
        return modeling.smollm2_config(vocab_size=p.bpe_vocab_size, hidden_size=p.hidden_size,
                                       num_layers=p.num_layers, num_heads=p.num_heads,
                                       num_kv_heads=p.num_kv_heads, head_dim=p.head_dim,
                                       intermediate_size=p.intermediate_size, hidden_act=p.hidden_act,
                                       max_position_embeddings=max(2048, p.seq_len))
    one_x = modeling.smollm2_config(**modeling.PAPER_1X, max_position_embeddings=max(2048, p.seq_len))
    return one_x if shape == "180m" else cloning.clone_config(one_x, factor=2)


def build_model(config, attn: str | None, seed: int):
    """The project's random init; attn None leaves transformers' default attention."""
    from hyperllama_lib.models import modeling

    config = copy.deepcopy(config)
    if attn is not None:
        config._attn_implementation = attn
    return modeling.new_model(config, seed)


def write_synthetic_tokens(path: Path, n_tokens: int, vocab_size: int, seed: int) -> None:
    import numpy as np

    from hyperllama_lib.corpus import packing

    ids = np.random.default_rng(seed).integers(0, vocab_size, size=n_tokens)
    packing.write_tokens(path, [ids.tolist()], vocab_size)


class _NoTokenizer:
    """training.train saves a tokenizer next to the final model; the benchmark has none to save."""

    def save_pretrained(self, path) -> None:
        pass


class _BlockDataset:
    """Packed blocks as Trainer examples (input_ids = labels), in the file's order."""

    def __init__(self, tokens_path: Path, seq_len: int):
        from hyperllama_lib.corpus.packing import PackedTokens

        self.data, self.seq_len = PackedTokens(tokens_path), seq_len

    def __len__(self) -> int:
        return self.data.num_blocks(self.seq_len)

    def __getitem__(self, i: int):
        import torch

        ids = torch.from_numpy(self.data.block(i, self.seq_len))
        return {"input_ids": ids, "labels": ids}


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- the two sides ---------------------------------------------------------------------------------

def run_ours(model, tokens: Path, p, steps: int, workdir: Path, name: str) -> dict:
    from hyperllama_lib import training

    out = workdir / name
    stage = training.Stage(name=name, tokens=tokens, out_dir=out, steps=steps, eval_texts={},
                           save_checkpoints=False)
    summary = training.train(model, _NoTokenizer(), stage, p, log=lambda *_: None)
    shutil.rmtree(out, ignore_errors=True)
    return {"steps": steps, "seconds": summary["seconds"], "tokens_per_second": summary["tokens_per_second"],
            "final_loss": summary["final_loss"]}


def run_trainer(model, tokens: Path, p, device, warmup: int, steps: int, workdir: Path, *,
                optim: str | None, bf16: bool, fp16: bool) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    marks: dict[int, float] = {}

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, warmup + steps):
                _sync(device)
                marks[state.global_step] = time.perf_counter()

    extra = {} if optim is None else {"optim": optim}
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"), max_steps=warmup + steps, per_device_train_batch_size=p.micro_batch_size,
        gradient_accumulation_steps=1, learning_rate=p.lr, weight_decay=p.weight_decay, adam_beta1=p.adam_beta1,
        adam_beta2=p.adam_beta2, adam_epsilon=p.adam_eps, max_grad_norm=p.grad_clip, bf16=bf16, fp16=fp16,
        use_cpu=device.type == "cpu", save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, seed=p.seed, dataloader_pin_memory=device.type == "cuda",
        **extra)
    threads = torch.get_num_threads()
    trainer = Trainer(model=model, args=args, train_dataset=_BlockDataset(tokens, p.seq_len),
                      callbacks=[StepTimer()])
    result = trainer.train()
    torch.set_num_threads(threads)
    used_optim = type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                      else trainer.optimizer).__name__
    fused = any(g.get("fused") for g in trainer.optimizer.param_groups)
    del trainer
    _free(device)
    seconds = marks[warmup + steps] - marks[warmup]
    return {"steps": steps, "seconds": round(seconds, 3),
            "tokens_per_second": round(steps * p.micro_batch_size * p.seq_len / seconds),
            "optimizer": f"{args.optim.value if hasattr(args.optim, 'value') else args.optim} ({used_optim}, "
                         f"fused={bool(fused)})",
            "train_loss": round(result.training_loss, 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="tiny")
    ap.add_argument("--seq-len", type=int, default=None, help="default: tiny 128 (params/tiny.yaml), else 2048")
    ap.add_argument("--micro-batch", type=int, default=None, help="sequences per step (default: tiny 16, else 8)")
    ap.add_argument("--steps", type=int, default=20, help="timed optimiser steps per side and round")
    ap.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds per side, alternating which goes "
                    "first; the fastest round of each side is reported")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-compile", action="store_true", help="ours without torch.compile")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="both sides (auto: bf16 autocast on GPU, fp32 on CPU; fp16 with loss scaling)")
    ap.add_argument("--with-trainer-defaults", action="store_true",
                    help="also time the Trainer with transformers' default optimizer and attention")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak FLOP/s of the device in TFLOP/s (default: the table for GPUs, measured on CPU)")
    ap.add_argument("--tokens", type=Path, default=None, help="a packed token file (default: synthetic)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import torch
    import transformers

    from hyperllama_lib import device as placement
    from hyperllama_lib import params
    from hyperllama_lib.models import modeling

    if args.threads:
        torch.set_num_threads(args.threads)
    scale, seq_default, micro_default = DEFAULTS[args.shape]
    base = params.load_params(scale, need_data=False)
    seq_len = args.seq_len or seq_default or base.seq_len
    micro = args.micro_batch or micro_default or base.micro_batch_size
    overrides = dict(seq_len=seq_len, micro_batch_size=micro, global_batch_size=micro, device=args.device,
                     precision=args.precision,
                     checkpoint_every_tokens=10 ** 15, train_eval_every_tokens=None, keep_checkpoints=0)
    if args.shape != "tiny":
        shape = modeling.PAPER_1X if args.shape == "180m" else modeling.PAPER_2X
        overrides.update(hidden_size=shape["hidden_size"], num_heads=shape["num_heads"],
                         num_kv_heads=shape["num_kv_heads"], head_dim=shape["head_dim"],
                         intermediate_size=shape["intermediate_size"])
    compile_via_params = "compile" in params.FIELDS
    if compile_via_params:
        overrides["compile"] = "false" if args.no_compile else "true"
    p = params.load_params(scale, overrides, need_data=False)
    where = placement.resolve(p.device, p.precision)
    device = where.device
    bf16, fp16 = where.precision == "bf16", where.precision == "fp16"
    precision = {"bf16": "bf16 autocast", "fp16": "fp16 autocast, loss-scaled", "fp32": "fp32"}[where.precision]
    config = model_config(args.shape, p)
    counts = modeling.count_parameters(config)
    attn_dim = config.num_attention_heads * config.head_dim

    workdir = Path(tempfile.mkdtemp(prefix="hyperllama_train_bench_"))
    try:
        tokens = args.tokens
        if tokens is None:
            tokens = workdir / "tokens.bin"
            n_tokens = (args.warmup_steps + args.steps) * micro * seq_len + seq_len
            write_synthetic_tokens(tokens, n_tokens, config.vocab_size, p.seed)

        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            peak = args.peak_tflops * 1e12 if args.peak_tflops else gpu_peak_flops(name)
            if peak is None:
                raise SystemExit(f"no documented peak for {name!r}: pass --peak-tflops")
            peak_label = f"{peak / 1e12:.1f} TFLOP/s, documented dense bf16 peak" + \
                ("" if bf16 else f" (the run is {precision}: MFU against the bf16 peak)")
        else:
            name = platform.processor() or platform.machine()
            peak = args.peak_tflops * 1e12 if args.peak_tflops else measured_matmul_peak()
            peak_label = (f"{peak / 1e9:.1f} GFLOP/s, " + ("given" if args.peak_tflops else
                          f"measured matmul peak (fp32 1024x1024 torch.mm, {torch.get_num_threads()} threads)"))
        print(f"device {device} ({name}); torch {torch.__version__}, transformers {transformers.__version__}; "
              f"threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}", flush=True)
        print(f"shape {args.shape}: N = {counts['total']:,} (tied embedding once), non-embedding "
              f"{counts['non_embedding']:,}; seq_len {seq_len}, micro batch {micro}, "
              f"{precision}; {args.warmup_steps} warm-up + {args.steps} timed steps",
              flush=True)

        ours_model = build_model(config, "sdpa", p.seed)
        compile_how = "off (--no-compile)"
        if not args.no_compile:
            if compile_via_params:
                compile_how = "params compile=true (applied by training.train)"
            else:
                ours_model.compile()
                compile_how = "model.compile() by this benchmark (Params has no compile key)"
        plain_model = build_model(config, "eager", p.seed)
        peers = {"plain": (plain_model, "adamw_torch")}
        if args.with_trainer_defaults:
            peers["trainer_defaults"] = (build_model(config, None, p.seed), None)

        t = time.perf_counter()
        run_ours(ours_model, tokens, p, args.warmup_steps, workdir, "warmup")
        print(f"ours warm-up ({args.warmup_steps} steps, torch.compile {compile_how}): "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        rounds: dict[str, list[dict]] = {"ours": [], **{k: [] for k in peers}}
        for r in range(args.repeats):
            order = ["ours", *peers] if r % 2 == 0 else [*peers, "ours"]
            for side in order:
                if side == "ours":
                    graphs = compiled_graphs()
                    res = run_ours(ours_model, tokens, p, args.steps, workdir, f"timed{r}")
                    res["graphs_compiled_while_timed"] = compiled_graphs() - graphs  # 0: no recompilation
                else:
                    model, optim = peers[side]
                    res = run_trainer(model, tokens, p, device, args.warmup_steps, args.steps, workdir,
                                      optim=optim, bf16=bf16, fp16=fp16)
                rounds[side].append(res)
                print(f"round {r + 1} {side:>16}: {res['tokens_per_second']:>12,} tok/s ({res['seconds']:.2f} s)",
                      flush=True)
                _free(device)

        if device.type == "cpu" and not args.peak_tflops:  # again after the timing; the better one is the peak
            peak = max(peak, measured_matmul_peak())
            peak_label = (f"{peak / 1e9:.1f} GFLOP/s, measured matmul peak (fp32 1024x1024 torch.mm, "
                          f"{torch.get_num_threads()} threads, best of before and after the timed rounds)")
        conventions = {
            "6N+attn": flops_per_token(counts["total"], config.num_hidden_layers, attn_dim, seq_len),
            "6N": flops_per_token(counts["total"], config.num_hidden_layers, attn_dim, seq_len, attention=False),
            "6N_non_embedding": flops_per_token(counts["non_embedding"], config.num_hidden_layers, attn_dim,
                                                seq_len, attention=False),
        }
        best = {side: max(rs, key=lambda x: x["tokens_per_second"]) for side, rs in rounds.items()}
        result = {
            "date": time.strftime("%Y-%m-%d"), "device": str(device), "device_name": name,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "shape": args.shape, "seq_len": seq_len, "micro_batch": micro,
            "precision": precision, "warmup_steps": args.warmup_steps,
            "steps": args.steps, "repeats": args.repeats, "params_total": counts["total"],
            "params_non_embedding": counts["non_embedding"], "flops_per_token": conventions,
            "peak_flops": peak, "peak": peak_label, "ours_compile": compile_how,
            "setups": {
                "ours": f"training.train: AdamW fused={device.type == 'cuda'}, attn sdpa, torch.compile "
                        f"{compile_how}",
                "plain": "transformers.Trainer, optim adamw_torch (not fused), attn eager, no torch.compile",
                "trainer_defaults": "transformers.Trainer, its default optim and attention, no torch.compile"},
            "rounds": rounds,
        }
        for side, res in best.items():
            result[side] = {**res, "mfu": {k: mfu(res["tokens_per_second"], f, peak) for k, f in conventions.items()}}
        for peer in peers:
            result[f"ratio_ours_over_{peer}"] = best["ours"]["tokens_per_second"] / best[peer]["tokens_per_second"]
            result[f"round_ratios_ours_over_{peer}"] = [
                round(o["tokens_per_second"] / q["tokens_per_second"], 3) for o, q in zip(rounds["ours"], rounds[peer])]
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")

        print(f"\nMFU convention: FLOPs/token = 6N + 12 x layers x attn_dim x seq_len = "
              f"{conventions['6N+attn'] / 1e6:,.3f} MFLOP (N = {counts['total']:,}, tied embedding once); "
              f"peak {peak_label}")
        for side in best:
            m = result[side]["mfu"]
            print(f"{side:>16}: {best[side]['tokens_per_second']:>12,} tok/s  MFU {100 * m['6N+attn']:6.2f}% "
                  f"(6N only {100 * m['6N']:.2f}%, 6N non-embedding {100 * m['6N_non_embedding']:.2f}%)")
        for peer in peers:
            print(f"ours / {peer}: {result[f'ratio_ours_over_{peer}']:.2f}x tokens/s (fastest rounds; round by "
                  f"round: {', '.join(f'{x:.2f}' for x in result[f'round_ratios_ours_over_{peer}'])})")
        print("goal (572m, seq_len 2048, bf16, H100): MFU >= 40% and ours >= 1.5x plain"
              + ("" if args.shape == "572m" and device.type == "cuda" else "; not this configuration"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
