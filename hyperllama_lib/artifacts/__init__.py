"""Run artifacts: atomic writes (atomic), model folders and safetensors files (checkpoints), and the
manifest that lets finished steps be skipped (manifest)."""
from __future__ import annotations

from . import atomic  # noqa: F401
from .manifest import (  # noqa: F401
    JOB_STEPS_ENV,
    VERIFY_ENV,
    Manifest,
    Step,
    code_version,
    file_sha256,
    fingerprint,
    note_step,
    step_fingerprint,
    tree_hashes,
    verify_tree,
)
