"""Merge speed and peak memory against mergekit 0.1.5, run by hand (needs `pip install -e '.[test]'`):

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/merge_speed.py

Five models of the paper's 180M shape (PAPER_1X: 30 layers, hidden 576, 128,256-token vocabulary; a
random base plus a random task vector each, fp32, save_pretrained) and the base are merged with TIES
(weight 1.0 each, density 0.5, normalize true, fp32 out) twice, each time in a fresh process on the
same core with one thread: by `hyperllama merge` and by `mergekit-yaml` on the mergekit config that
`merging.mergekit_yaml` writes for the same merge. Wall time and peak RSS are those of the whole
process, imports included. Prints both, ours / mergekit's ratios, and how far the outputs differ.
The models (4.3 GB) are kept in --workdir and reused by later runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

from hyperllama_lib import merging
from hyperllama_lib.models import modeling

N_MODELS = 5
VENV_BIN = Path(sys.executable).parent
# Runs a command as its only child and reports the child's wall time and peak RSS.
# CPU time (user + sys) is also reported: unlike wall time it hardly changes when another process
# shares the core.
MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall, usage = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def make_models(root: Path) -> tuple[Path, list[Path]]:
    base_dir, dirs = root / "base", [root / f"lang{i}" for i in range(N_MODELS)]
    if all((d / "config.json").is_file() for d in [base_dir, *dirs]):
        return base_dir, dirs
    config = modeling.smollm2_config(**modeling.PAPER_1X)
    model = modeling.new_model(config, seed=0)
    model.save_pretrained(base_dir)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for i, d in enumerate(dirs):
        g = torch.Generator().manual_seed(1 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(base[name] + 0.01 * torch.randn(p.shape, generator=g))
        model.save_pretrained(d)
        print(f"saved {d}", flush=True)
    return base_dir, dirs


def measure(cmd: list[str]) -> dict:
    res = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out["code"] != 0:
        raise SystemExit(f"failed ({out['code']}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return out


def read(files: dict[str, Path], name: str) -> torch.Tensor:
    with safe_open(files[name], framework="pt") as f:
        return f.get_tensor(name)


def compare(ours: Path, theirs: Path, base: Path, dirs: list[Path], density: float = 0.5) -> dict:
    """Largest difference, and how many differing entries sit at a model's top-k threshold, where
    mergekit's argsort and our flat-index rule may keep different ones of equal magnitude."""
    a_files, b_files = merging.tensor_files(ours), merging.tensor_files(theirs)
    worst, differing, at_threshold = 0.0, 0, 0
    for name in a_files:
        diff = (read(a_files, name) - read(b_files, name)).abs().flatten()
        worst = max(worst, float(diff.max()))
        where = diff.nonzero().squeeze(1)
        differing += len(where)
        if len(where):
            b = read(merging.tensor_files(base), name).flatten()
            tied = torch.zeros(len(where), dtype=torch.bool)
            for d in dirs:
                delta = (read(merging.tensor_files(d), name).flatten() - b).abs()
                k = max(1, int(density * delta.numel()))
                tied |= delta[where] == torch.kthvalue(delta, delta.numel() - k + 1).values
            at_threshold += int(tied.sum())
    return {"max_abs_diff": worst, "differing_entries": differing, "differing_at_threshold_ties": at_threshold,
            "entries": sum(math.prod(s) for s in merging.tensor_shapes(ours).values()),
            "same_names": set(a_files) == set(b_files) - {"lm_head.weight"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hyperllama_merge_bench"))
    args = ap.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("warning: run with OMP_NUM_THREADS=1 (and taskset -c N) for single-threaded timings")
    root = args.workdir
    root.mkdir(parents=True, exist_ok=True)
    base, dirs = make_models(root)
    config = root / "mergekit_ties.yml"
    config.write_text(merging.mergekit_yaml("ties", dirs, base, dtype="float32", density=0.5, normalize=True))
    for path in sorted(root.rglob("*.safetensors")):  # both runs read from the page cache
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    out_ours, out_theirs = root / "out_ours", root / "out_mergekit"
    for out in (out_ours, out_theirs):
        shutil.rmtree(out, ignore_errors=True)

    ours_cmd = [str(VENV_BIN / "hyperllama"), "merge", "--method", "ties", "--base", str(base),
                "--out", str(out_ours), *map(str, dirs)]
    theirs_cmd = [str(VENV_BIN / "mergekit-yaml"), str(config), str(out_theirs), "--device", "cpu",
                  "--num-threads", "1", "--quiet"]
    print("ours:    ", " ".join(ours_cmd), flush=True)
    ours = measure(ours_cmd)
    print(f"  {ours['wall_s']:.1f} s ({ours['cpu_s']:.1f} s CPU), peak RSS {ours['peak_rss_mb']:.0f} MB", flush=True)
    print("mergekit:", " ".join(theirs_cmd), flush=True)
    theirs = measure(theirs_cmd)
    print(f"  {theirs['wall_s']:.1f} s ({theirs['cpu_s']:.1f} s CPU), peak RSS {theirs['peak_rss_mb']:.0f} MB",
          flush=True)
    baseline = measure([sys.executable, "-c", "import torch, transformers, safetensors"])

    diff = compare(out_ours, out_theirs, base, dirs)
    result = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "ours": ours, "mergekit": theirs,
              "python_torch_transformers_import": baseline,
              "wall_ratio": ours["wall_s"] / theirs["wall_s"], "cpu_ratio": ours["cpu_s"] / theirs["cpu_s"],
              "peak_rss_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"], **diff}
    print(json.dumps(result, indent=1))
    print(f"ours / mergekit: wall time {result['wall_ratio']:.2f}x (goal <= 0.5; CPU time "
          f"{result['cpu_ratio']:.2f}x), peak memory "
          f"{result['peak_rss_ratio']:.2f}x (goal < 1); outputs: max |difference| {diff['max_abs_diff']:.3g} "
          f"in {diff['differing_entries']:,} of {diff['entries']:,} entries, {diff['differing_at_threshold_ties']:,} of "
          "them at a top-k threshold tie")


if __name__ == "__main__":
    main()
