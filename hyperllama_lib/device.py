"""Where a model runs and in which precision: the one rule for training, evaluation, the command line
and the processes torchrun starts.

- device "auto": CUDA when available, else the CPU. Under torchrun (several processes) "cuda" is the
  process's own GPU, cuda:LOCAL_RANK. Other names ("cpu", "cuda:1") are taken as given.
- precision "auto": bf16 autocast on CUDA (fp32 master weights: the paper's bf16 with fp32
  accumulation), fp32 elsewhere. "bf16" and "fp16" autocast to that type on any device; fp16 (GPUs
  without bf16, e.g. a T4) needs the loss scaling of a GradScaler when training. An explicit "fp32"
  switches off an enclosing autocast, while fp32 chosen by "auto" leaves a caller's autocast on.
- compile "auto": torch.compile on CUDA only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from .errors import ParamError

# precision names -> fp32 | bf16 | fp16 (scoring's dtype argument also takes torch dtypes)
PRECISIONS = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
              "fp16": "fp16", "float16": "fp16", torch.float32: "fp32", torch.bfloat16: "bf16",
              torch.float16: "fp16"}
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """What `resolve` chose."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    explicit: bool = True  # False when "auto" chose the precision
    compile: bool = False  # whether training runs the model through torch.compile

    def autocast(self) -> ContextManager:
        """The precision as a context for forward passes (and the backward that follows them)."""
        if self.precision in _AUTOCAST_DTYPES:
            return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])
        if self.explicit:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return contextlib.nullcontext()

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling."""
        return self.precision == "fp16"


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        where = torch.device(name)
    except RuntimeError:
        raise ParamError(f"device {name!r} is not a device; valid choices: auto, cpu, cuda, cuda:N") from None
    if where.type == "cuda" and (where.index or 0) >= torch.cuda.device_count():
        raise ParamError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         "set device to auto or cpu")
    if name == "cuda":
        from .training import distributed  # imported late: the training package imports this module

        if distributed.world_size() > 1:
            return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def resolve(device: str | torch.device = "auto", precision: str | torch.dtype | None = "auto",
            compile: str = "auto") -> Placement:
    """The device, precision and compilation of `device`, `precision` (None: auto) and `compile`
    (auto, true or false), by the rules of the module docstring."""
    where = _device(device)
    name = PRECISIONS.get("auto" if precision is None else precision)
    if name is None:
        raise ParamError(f"unknown precision {precision!r}; expected auto, fp32, bf16 or fp16")
    explicit = name != "auto"
    if not explicit:
        name = "bf16" if where.type == "cuda" else "fp32"
    return Placement(where, name, explicit, compile == "true" or (compile == "auto" and where.type == "cuda"))
