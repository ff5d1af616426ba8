"""Run artifacts: atomic writes and the manifest that lets finished steps be skipped."""
from __future__ import annotations

from .manifest import (  # noqa: F401
    JOB_STEPS_ENV, Manifest, Step, VERIFY_ENV, atomic_dir, atomic_file, atomic_write_json, atomic_write_text, code_version, file_sha256, fingerprint, note_step, step_fingerprint, tree_hashes, verify_tree,
)
