"""Resume states, and which step folders a stage keeps.

At every checkpoint a resume state is written next to the checkpoint, atomically, as
`resume/step_N/`: model.safetensors (the parameters), train_state.safetensors (AdamW's tensors and
torch's RNG state) and state.json (step, scheduler, optimiser settings, Python and NumPy RNG states,
the log and curve rows so far, sha256 of both tensor files, and the resume key). No pickle. The key
hashes the stage, its steps, the token stream, the training parameters, the held-out texts and the
initial weights, so a state is only used by the run that made it. A killed run started again
continues from its newest valid state, and on CPU ends with the same bytes as an uninterrupted run
(the data position is a function of the step; held-out evaluation draws no random numbers).
`remove_resume_states` deletes them once the caller has recorded the finished step.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import artifacts, fingerprints
from ..artifacts import atomic
from ..errors import DiskSpaceError, TrainingError
from ..params import Params
from . import distributed
from .stage_folder import StageFolder, step_folders, step_name, step_of

if TYPE_CHECKING:
    from ..corpus.packing import PackedTokens
    from .loop import Stage

RESUME_FORMAT = 1
# Parameters that change what a stage computes (the table: fingerprints.py).
RESUME_KEYS = fingerprints.keys("resume")


@contextlib.contextmanager
def disk_full_is_clear(what: Path, step: int):
    """A full disk while writing a checkpoint or resume state becomes a DiskSpaceError that says so."""
    try:
        yield
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise DiskSpaceError(f"disk full while writing {what} at step {step}; nothing half-written is left "
                             "and the last good checkpoint is kept: free disk space and run again") from None


def resume_key(model, stage: Stage, p: Params, total: int, data: PackedTokens) -> str:
    """What a resume state must match: stage, steps, token stream, parameters, held-out texts, initial weights."""
    weights = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return artifacts.fingerprint(RESUME_FORMAT, stage.name, total, data.n_tokens, data.meta.get("sha256"),
                                 p.subset(RESUME_KEYS), stage.eval_texts, weights.hexdigest())


def save(root: Path, step: int, key: str, parameters: dict, opt_state: dict, sched, scaler,
         log_rows, curve_rows) -> None:
    dst = root / step_name(step)
    with disk_full_is_clear(dst, step), atomic.replace_dir(dst) as tmp:
        save_file(parameters, tmp / "model.safetensors")
        tensors = {f"optim.{i}.{k}": v.detach().cpu().contiguous()
                   for i, per_param in opt_state["state"].items() for k, v in per_param.items()}
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors.update({f"rng.cuda.{i}": r for i, r in enumerate(torch.cuda.get_rng_state_all())})
        save_file(tensors, tmp / "train_state.safetensors")
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"format": RESUME_FORMAT, "key": key, "step": step,
                 "files": {f: artifacts.file_sha256(tmp / f) for f in ("model.safetensors", "train_state.safetensors")},
                 "param_groups": opt_state["param_groups"], "scheduler": sched.state_dict(),
                 "rng": {"python": random.getstate(), "numpy": [keys.tolist(), pos, has_gauss, gauss]},
                 "log_rows": log_rows, "curve_rows": curve_rows}
        if scaler is not None:
            state["grad_scaler"] = scaler.state_dict()
        (tmp / "state.json").write_text(json.dumps(state))


def read(folder: Path, key: str) -> tuple[dict | None, str]:
    """(state, "") for a valid state made with `key`, else (None, why not)."""
    try:
        state = json.loads((folder / "state.json").read_text())
        if state.get("format") != RESUME_FORMAT or state.get("key") != key:
            return None, "made by another run (different parameters, data or initial weights)"
        for name, sha in state["files"].items():
            if artifacts.file_sha256(folder / name) != sha:
                return None, f"{name} differs from its recorded sha256"
        state["model"] = load_file(folder / "model.safetensors")
        state["tensors"] = load_file(folder / "train_state.safetensors")
        return state, ""
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"


def restore(state: dict, model, opt, sched, scaler) -> None:
    if {n for n, _ in model.named_parameters()} != set(state["model"]):
        raise TrainingError("resume state does not match the model's parameters")
    tensors = state["tensors"]
    per_param: dict[int, dict] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, i, k = name.split(".", 2)
            per_param.setdefault(int(i), {})[k] = t
    groups = [{**g, "betas": tuple(g["betas"])} for g in state["param_groups"]]
    distributed.load_full_state(model, opt, state["model"], {"state": per_param, "param_groups": groups})
    sched.load_state_dict(state["scheduler"])
    if scaler is not None and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def find(resume_root: Path, key: str, stage: str, log) -> dict | None:
    """The newest valid resume state, chosen by rank 0 and read by every rank."""
    state = chosen = None
    if distributed.is_main():
        for folder in reversed(step_folders(resume_root)):
            state, why = read(folder, key)
            if state is not None:
                chosen = str(folder)
                break
            log(f"[{stage}] not resuming from {folder}: {why}")
    chosen = distributed.broadcast(chosen)
    if chosen is not None and state is None:
        state, why = read(Path(chosen), key)
        if state is None:
            raise TrainingError(f"rank {distributed.rank()} cannot read the resume state {chosen}: {why}")
    if state is not None:
        state["folder"] = chosen
    return state


def remove_unused(resume_root: Path, start: int) -> None:
    """Delete the states of other runs, or newer than step `start` that the run resumes from."""
    for folder in step_folders(resume_root):
        if step_of(folder) > start or not start:
            shutil.rmtree(folder)


def prune(folder: Path, keep: int | None) -> None:
    """Keep the newest `keep` step_* folders (None: all)."""
    if keep is not None:
        for old in step_folders(folder)[: max(len(step_folders(folder)) - keep, 0)]:
            shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(out_dir: Path) -> None:
    """Temporaries of atomic writes that a killed run left behind (hidden *.tmp and *.old-* names)."""
    stage = StageFolder(Path(out_dir))
    for folder in (stage.root, stage.checkpoints, stage.resume):
        for f in folder.glob(".*") if folder.is_dir() else []:
            if f.name.endswith(".tmp") or ".old-" in f.name:
                shutil.rmtree(f) if f.is_dir() else f.unlink()


def remove_resume_states(out_dir: Path) -> None:
    """Delete a stage's resume states; call once its finished step is recorded."""
    if distributed.is_main():
        shutil.rmtree(StageFolder(Path(out_dir)).resume, ignore_errors=True)
