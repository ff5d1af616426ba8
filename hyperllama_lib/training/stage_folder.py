"""The folder of one training stage: what the training loop writes there, under which names. The loop
writes it; the pipeline's run layout (pipeline/layout.py) and 05_eval read it through this class."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STEP_PREFIX = "step_"


def step_name(step: int) -> str:
    """The folder name of a checkpoint or resume state: step_000120."""
    return f"{STEP_PREFIX}{step:06d}"


def step_of(folder: Path) -> int:
    return int(Path(folder).name.removeprefix(STEP_PREFIX))


def step_folders(folder: Path) -> list[Path]:
    """The step_N folders in `folder`, oldest first (none when it does not exist)."""
    return sorted(Path(folder).glob(f"{STEP_PREFIX}*")) if Path(folder).is_dir() else []


@dataclass(frozen=True)
class StageFolder:
    root: Path

    @property
    def final(self) -> Path:
        """The model at the end of the stage (a save_pretrained folder)."""
        return self.root / "final"

    @property
    def adapter(self) -> Path:
        """A LoRA stage's adapter in peft's format (final/ and the checkpoints hold it folded in)."""
        return self.root / "adapter"

    @property
    def checkpoints(self) -> Path:
        """checkpoints/step_N: the model every `checkpoint_every_tokens` (05_eval scores each)."""
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    @property
    def resume(self) -> Path:
        """resume/step_N: weights, AdamW state and RNG states to continue a killed run (training/resume.py)."""
        return self.root / "resume"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.csv"

    @property
    def curve(self) -> Path:
        """Held-out bits per byte during training, one row per evaluation and language."""
        return self.root / "curve.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"
