"""Training: the loop, resume states and data-parallel processes (device choice: `hyperllama_lib.device`)."""
from __future__ import annotations

from .loop import (  # noqa: F401
    DiskSpaceError,
    NonFiniteLossError,
    Stage,
    TooLittleDataError,
    TrainingError,
    lr_factor,
    make_optimizer,
    placement,
    train,
)
from .resume import remove_resume_states  # noqa: F401
from .stage_folder import StageFolder  # noqa: F401
