"""Training: the loop, resume states, data-parallel processes and device choice."""
from __future__ import annotations

from .loop import (  # noqa: F401
    DiskSpaceError, NonFiniteLossError, RESUME_DIR, Stage, TooLittleDataError, TrainingError, autocast, lr_factor, make_optimizer, remove_resume_states, resolve_device, train,
)
