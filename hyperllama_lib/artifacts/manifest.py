"""Run directories and the manifest that lets finished steps be skipped.

`manifest.json` has one entry per finished step: fingerprint, parameters, outputs, their content
hashes and the code version. A step is done when the manifest has its entry with the same fingerprint
and its outputs match the content hashes recorded with it (see `verify_tree`); otherwise it is redone.
The fingerprint hashes the step's parameters and the fingerprints of the steps it reads.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from .. import __version__
from . import atomic

MANIFEST = "manifest.json"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Output hashes. Every file is hashed in full when a step is recorded. When a finished step is about to
# be skipped, files up to FULL_HASH_MAX_BYTES (every file of the smoke and tiny scales) are hashed again;
# bigger ones (paper-scale weights and token streams) are trusted when size and mtime are unchanged and
# re-hashed otherwise. HYPERLLAMA_VERIFY=full re-hashes everything.
FULL_HASH_MAX_BYTES = 256 << 20
VERIFY_ENV = "HYPERLLAMA_VERIFY"


def _files(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(".", path)]
    # hidden names are temporaries of atomic writes and locks, never outputs
    return sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*")
                  if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts))


def tree_hashes(path: Path) -> dict[str, list]:
    """{relative path: [size, sha256, mtime_ns]} for a file (key ".") or every file in a folder."""
    out = {}
    for rel, f in _files(Path(path)):
        st = f.stat()
        out[rel] = [st.st_size, file_sha256(f), st.st_mtime_ns]
    return out


def verify_tree(path: Path, recorded: dict[str, list], full: bool | None = None) -> str | None:
    """None when `path` holds exactly the recorded files with the recorded content, else what differs."""
    path = Path(path)
    if not path.exists():
        return f"{path} is missing"
    if full is None:
        full = os.environ.get(VERIFY_ENV, "") == "full"
    found = dict(_files(path))
    for rel in sorted(set(recorded) | set(found)):
        shown = path if rel == "." else path / rel
        if rel not in found:
            return f"{shown} is missing"
        if rel not in recorded:
            return f"{shown} is not in the manifest"
        size, sha, mtime = recorded[rel]
        st = found[rel].stat()
        if st.st_size != size:
            return f"{shown} has {st.st_size} bytes, the manifest says {size}"
        fast = not full and st.st_size > FULL_HASH_MAX_BYTES and st.st_mtime_ns == mtime
        if not fast and file_sha256(found[rel]) != sha:
            return f"{shown} differs from the manifest (sha256)"
    return None


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_version() -> str:
    """Package version plus the git commit (and '+dirty' for uncommitted changes) when available."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hyperllama_lib"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return f"{__version__}+{commit}{'.dirty' if dirty else ''}" if commit else __version__


class Manifest:
    """The run's manifest.json; read-modify-write under a file lock, written atomically."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"steps": {}}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
                raise ValueError("no 'steps' object")
            return data
        except (ValueError, UnicodeDecodeError) as e:
            # Nothing recorded in it can be trusted: every step is redone, and the next record replaces it.
            aside = self.path.with_name(MANIFEST + ".corrupt")
            if not aside.exists():
                shutil.copy2(self.path, aside)
            warnings.warn(f"{self.path} is unreadable ({e}); every step will be redone "
                          f"(the bad file is kept as {aside.name})", stacklevel=2)
            return {"steps": {}}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def entry(self, step: str) -> dict[str, Any] | None:
        return self.read()["steps"].get(step)

    def check(self, step: str, fp: str) -> str | None:
        """None when `step` is done with fingerprint `fp` and its outputs match their recorded hashes;
        else why not ("not run" when there is no entry for this fingerprint)."""
        e = self.entry(step)
        if not e or e.get("fingerprint") != fp:
            return "not run"
        hashes = e.get("hashes")
        for out in e.get("outputs", []):
            path = self.run_dir / out
            if hashes is None:  # manifests written before hashes were recorded: existence only
                if not path.exists():
                    return f"{path} is missing"
            elif out not in hashes:
                return f"the manifest has no hash for {out}"
            elif problem := verify_tree(path, hashes[out]):
                return problem
        return None

    def record(self, step: str, fp: str, params: dict[str, Any], outputs: list[Path],
               started: float, extra: dict[str, Any] | None = None) -> None:
        rel = [self.relative(o) for o in outputs]
        entry = {
            "fingerprint": fp,
            "params": params,
            "outputs": rel,
            "hashes": {r: tree_hashes(self.run_dir / r) for r in rel},
            "code_version": code_version(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "duration_s": round(time.time() - started, 2),
            **(extra or {}),
        }
        with self._locked():
            data = self.read()
            data["steps"][step] = entry
            atomic.write_json(self.path, data)

    def relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            raise ValueError(f"output {path} lies outside the run directory {self.run_dir}") from None



class Step:
    """Run a unit of work once: `with Step(...) as s: if s.todo: ...; s.outputs = [...]`."""

    def __init__(self, run_dir: Path, name: str, params: dict[str, Any], upstream: list[str] = (),
                 log=print):
        self.manifest = Manifest(run_dir)
        self.name = name
        self.params = params
        self.fp = fingerprint(name, params, sorted(upstream))
        self.problem = self.manifest.check(name, self.fp)
        self.todo = self.problem is not None
        self.outputs: list[Path] = []
        self.extra: dict[str, Any] = {}
        self.log = log
        note_step(name, self.fp)

    def __enter__(self) -> "Step":
        self.started = time.time()
        if self.problem not in (None, "not run"):
            self.log(f"[{self.name}] the manifest does not match the files: {self.problem}; redoing the step")
        self.log(f"[{self.name}] " + ("running" if self.todo else "up to date, skipped"))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from ..training import distributed

        if exc_type is None and self.todo and distributed.is_main():
            self.manifest.record(self.name, self.fp, self.params, self.outputs, self.started, self.extra)
            self.log(f"[{self.name}] done in {time.time() - self.started:.1f}s")
        if exc_type is None:
            distributed.barrier()  # under torchrun the other processes go on once rank 0 has recorded the step


# The grid runner (pipeline/runner.py) sets this to a file per job: every step a job runs or finds done is noted
# there, so a later run can tell whether the job's results are still in place.
JOB_STEPS_ENV = "HYPERLLAMA_JOB_STEPS"


def note_step(name: str, fp: str) -> None:
    path = os.environ.get(JOB_STEPS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{name}\t{fp}\n")


def step_fingerprint(run_dir: Path, name: str) -> str | None:
    e = Manifest(run_dir).entry(name)
    return e["fingerprint"] if e else None
