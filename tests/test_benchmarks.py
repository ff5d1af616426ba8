"""The arithmetic behind benchmarks/train_throughput.py's MFU (model FLOPs per token, GPU peak table)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import train_throughput as tt  # noqa: E402


def test_flops_per_token_paper_shapes():
    # 572M (PAPER_2X): 30 layers, 18 heads x 64 = 1,152; N from README (tied embedding counted once)
    n = 572_494_464
    assert tt.flops_per_token(n, 30, 1152, 2048, attention=False) == 6 * n == 3_434_966_784
    assert tt.flops_per_token(n, 30, 1152, 2048) == 3_434_966_784 + 12 * 30 * 1152 * 2048
    # 180M: 9 heads x 64 = 576; the attention term grows linearly with seq_len
    one = tt.flops_per_token(180_078_912, 30, 576, 1024)
    two = tt.flops_per_token(180_078_912, 30, 576, 2048)
    assert two - one == 12 * 30 * 576 * 1024


def test_mfu_and_peak_table():
    # 40% of an H100 SXM at 572M / 2,048 tokens is about 93,000 tokens/s
    peak = tt.gpu_peak_flops("NVIDIA H100 80GB HBM3")
    assert peak == 989.4e12
    per_token = tt.flops_per_token(572_494_464, 30, 1152, 2048)
    assert tt.mfu(0.4 * peak / per_token, per_token, peak) == pytest.approx(0.4)
    assert tt.gpu_peak_flops("NVIDIA H100 PCIe") == 756e12  # not the SXM number
    assert tt.gpu_peak_flops("NVIDIA H200") == 989.4e12
    assert tt.gpu_peak_flops("Tesla T4") is None  # unknown: the script asks for --peak-tflops
