"""Every error a user can cause, under one base class that renders as one line.

The message of each says what is wrong, where, and what to do. Notebooks show it as one line
(IPython calls `_render_traceback_`), and every `hyperllama` command prints it as one line and exits
with status 2 (`cli.main`). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class HyperllamaError(Exception):
    """Base of the errors a user can cause: bad parameters or files, missing inputs, full disks."""

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{type(self).__name__}: {text}" if text else type(self).__name__

    def _render_traceback_(self) -> list[str]:
        return [self.one_line()]


class ParamError(HyperllamaError, ValueError):
    """Bad parameters: an unknown key, language, setup, method or scale, or a value out of range."""


class MissingInputError(HyperllamaError, RuntimeError):
    """A step's inputs do not exist yet; the message says which notebook to run first."""


class RunBusyError(HyperllamaError, RuntimeError):
    """Another reproduction, or a notebook it started, still runs in the run directory."""


class DataError(HyperllamaError, ValueError):
    """A data file or folder is missing or malformed, or holds too little text for the parameters."""


class PackedTokensError(HyperllamaError, ValueError):
    """A packed token file or its sidecar is missing, truncated or corrupted."""


class ModelFolderError(HyperllamaError, ValueError):
    """A model folder is missing, incomplete or corrupted; the message names the file."""


class ReleasedModelError(HyperllamaError, ValueError):
    """A released model cannot be fetched or used here; the message names the repo."""


class MergeError(HyperllamaError, ValueError):
    """Models or settings that cannot be merged."""


class PairsFormatError(HyperllamaError, ValueError):
    """A pairs file or Hub table that is not in the expected format (names the source and line)."""


class ConlluError(HyperllamaError, ValueError):
    """A CoNLL-U or UniMorph file that cannot be read (names the file, and the line where known)."""


class TrainingError(HyperllamaError, RuntimeError):
    """Training cannot go on; the message says where and what to do."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """The loss became NaN or infinite."""


class TooLittleDataError(TrainingError, ValueError):
    """A stage's token stream holds less than one step."""


class DiskSpaceError(TrainingError, OSError):
    """The disk cannot hold what a step is about to write (checkpoints, resume states, merged models)."""


class JupyterSetupError(HyperllamaError, RuntimeError):
    """The notebook kernel cannot be registered, or JupyterLab is not installed."""
