"""How exact is HyperCloning at the paper's shape? Run by hand: `.venv/bin/python benchmarks/clone_exactness.py`.

Clones the paper's 180M configuration (random init) to 572M and compares logits on the same tokens:
- in float64, clone vs source (not pure float64: transformers' RMSNorm and RoPE compute in float32);
- in float32, clone vs source: what `hyperllama clone` users see;
- fp32's own rounding floor: the float32 source against the float64 source. A clone computed in
  float32 cannot be closer to its source than a few times this floor (different matrix sizes mean
  different summation orders).
"""
import argparse
import time

import torch

from hyperllama_lib.models import cloning, modeling


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
    ids = torch.randint(0, cfg.vocab_size, (2, args.seq_len), generator=torch.Generator().manual_seed(0))
    src32, dst32 = model(input_ids=ids).logits, clone(input_ids=ids).logits
    src64, dst64 = model.double()(input_ids=ids).logits, clone.double()(input_ids=ids).logits

    def mx(a, b):
        return (a.double() - b.double()).abs().max().item()

    print(f"source {modeling.count_parameters(model)['total']:,} -> clone "
          f"{modeling.count_parameters(clone)['total']:,} parameters (cloned in {clone_s:.1f}s), "
          f"max |logit| {src32.abs().max().item():.2f}")
    print(f"float64 clone vs source:            {mx(dst64, src64):.2e}")
    print(f"float32 clone vs source:            {mx(dst32, src32):.2e}")
    print(f"float32 source vs float64 source:   {mx(src32, src64):.2e}  (fp32 rounding floor)")
    print(f"float32 clone  vs float64 source:   {mx(dst32, src64):.2e}")


if __name__ == "__main__":
    main()
