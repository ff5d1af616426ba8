"""The whole pipeline at `small` scale (the paper's 180M/572M shapes, the Llama-3 tokenizer, bf16 on a
GPU), cut to a few steps per stage and two languages, to check it runs end to end and to read rough
training throughput. Run by hand on a GPU machine:

    HYPERLLAMA_DATA=/path/to/shared/data python benchmarks/small_pipeline_check.py [--run-dir DIR]
"""
import argparse
import json
import time

import pandas as pd
import torch

from hyperllama_lib import params
from hyperllama_lib.pipeline import analysis, cpt, data, evaluate, merge, upscale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="/tmp/run_small")
    args = ap.parse_args()
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__} on {device}")
    p = params.load_params("small", {
        "run_dir": args.run_dir, "publish_dir": f"{args.run_dir}/published", "langs": ["est", "fao"],
        "seed_steps": 30, "base_steps": 12, "cpt_steps": {"est": 12, "fao": 12, "multilingual": 12},
        "checkpoint_every_tokens": 6 * 32 * 1024, "blimp_pairs_per_paradigm": 10,
        "eval_max_bytes": 20000, "train_eval_max_bytes": 20000})
    seconds = {}

    def timed(name, fn):
        t = time.time()
        out = fn()
        seconds[name] = round(time.time() - t, 1)
        return out

    print(timed("data", lambda: data.prepare(p)).to_string())
    print(timed("upscale", lambda: upscale.run(p)).to_string())
    print(timed("cpt", lambda: pd.concat([cpt.run(p, lang) for lang in ["est", "fao", "multilingual"]])).to_string())
    timed("merge", lambda: merge.run(p))
    results = timed("eval", lambda: evaluate.run(p))
    print(results.pivot_table(index=["setup", "kind", "trained_on"], columns=["benchmark", "lang"],
                              values="value").round(3).to_string())
    timed("analysis", lambda: analysis.run(p, log=lambda m: None))
    for name in ["seed", "base_1x", "base_2x"]:
        s = json.loads((p.run_path / "models" / "english" / name / "summary.json").read_text())
        print(f"{name}: {s['params_total']:,} parameters, {s['tokens_per_second']:,} tokens/s (checkpoint evals included)")
    print("seconds per step:", seconds)


if __name__ == "__main__":
    main()
