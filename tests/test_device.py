"""The one rule for device, precision and compilation (hyperllama_lib.device)."""
from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

from hyperllama_lib import device
from hyperllama_lib.errors import ParamError
from hyperllama_lib.training import distributed


def test_auto_is_cuda_when_available_and_bf16_autocast_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    on_gpu = device.resolve()
    assert (on_gpu.device, on_gpu.precision, on_gpu.compile) == (torch.device("cuda"), "bf16", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constructing a CUDA autocast without CUDA warns
        cast, off = on_gpu.autocast(), device.resolve("cuda", "fp32").autocast()
    assert isinstance(cast, torch.autocast) and cast.fast_dtype == torch.bfloat16
    assert isinstance(off, torch.autocast) and not off._enabled  # explicit fp32 switches autocast off
    on_cpu = device.resolve()
    assert (on_cpu.device, on_cpu.precision, on_cpu.compile) == (torch.device("cpu"), "fp32", False)
    assert isinstance(on_cpu.autocast(), contextlib.nullcontext)  # "auto" leaves a caller's autocast on


def test_under_torchrun_cuda_is_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.resolve("auto").device == torch.device("cuda", 1)
    assert device.resolve("cuda:0").device == torch.device("cuda", 0)  # a named GPU stays as named
    assert device.resolve("cpu").device == torch.device("cpu")


def test_devices_that_are_not_here_are_param_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ParamError, match="1 CUDA device"):
        device.resolve("cuda:1")
    with pytest.raises(ParamError, match="not a device"):
        device.resolve("gpu")


@pytest.mark.parametrize("name, precision, dtype", [
    ("fp16", "fp16", torch.float16), ("bf16", "bf16", torch.bfloat16), ("bfloat16", "bf16", torch.bfloat16),
    (torch.bfloat16, "bf16", torch.bfloat16), ("float32", "fp32", None), (torch.float32, "fp32", None),
])
def test_precision_names(name, precision, dtype):
    placement = device.resolve("cpu", name)
    assert placement.precision == precision and placement.needs_grad_scaler == (precision == "fp16")
    cast = placement.autocast()
    if dtype is None:
        assert isinstance(cast, torch.autocast) and not cast._enabled
    else:
        assert isinstance(cast, torch.autocast) and cast.fast_dtype == dtype and cast._enabled


def test_compile_and_unknown_precision():
    assert device.resolve("cpu", compile="true").compile and not device.resolve("cpu", compile="false").compile
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        device.resolve("cpu", "fp8")
