"""Merging: the streaming engine, the registry of methods (methods/) and Fisher information."""
from __future__ import annotations

from .engine import (  # noqa: F401
    DTYPES,
    METHODS,
    MergeError,
    check_compatible,
    get_method,
    merge_models,
    merge_state_dicts,
    merge_tensors,
    mergekit_yaml,
    resolve_params,
    tensor_files,
    tensor_seed,
    tensor_shapes,
)
