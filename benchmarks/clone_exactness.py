"""How exact is HyperCloning at the paper's shape? Run by hand: `.venv/bin/python benchmarks/clone_exactness.py`.

Clones the paper's 180M configuration (random init, fp32) to 572M and prints the largest logit
difference to the source, next to fp32's own noise floor: the same source model run on the same
tokens inside a different batch (a different BLAS blocking), which no implementation can beat.
"""
import argparse
import time

import torch

from hyperllama_lib import cloning, modeling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=30, help="30 = the paper's depth")
    ap.add_argument("--seq-len", type=int, default=64)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg = modeling.smollm2_config(**{**modeling.PAPER_1X, "num_layers": args.layers})
    model = modeling.new_model(cfg, seed=0)
    t = time.time()
    clone = cloning.hyperclone(model, factor=2)
    clone_s = time.time() - t
    counts = modeling.count_parameters(clone)["total"]
    ids = torch.randint(0, cfg.vocab_size, (2, args.seq_len), generator=torch.Generator().manual_seed(0))
    src = model(input_ids=ids).logits
    dst = clone(input_ids=ids).logits
    alone = model(input_ids=ids[:1]).logits  # same tokens, different batch shape
    diff = (src - dst).abs().max().item()
    floor = (src[:1] - alone).abs().max().item()
    print(f"source {modeling.count_parameters(model)['total']:,} -> clone {counts:,} parameters "
          f"(cloned in {clone_s:.1f}s)")
    print(f"max |logit| {src.abs().max().item():.3f}")
    print(f"max |logit difference| clone vs source: {diff:.2e} (relative {diff / src.abs().max().item():.1e})")
    print(f"fp32 noise floor (source, batch of 2 vs 1): {floor:.2e}")
    print(f"ratio clone / floor: {diff / max(floor, 1e-12):.1f}")


if __name__ == "__main__":
    main()
