"""The reproduction as a grid of notebook jobs, run with papermill in dependency order.

    data (01) -> upscale (02) -> cpt/<setup>/<lang> (03; each target language and multilingual)
              -> merge/<setup> (04) -> eval/<setup>/<group> (05; base, each CPT model, merges) -> analysis (06)

Each job is one papermill run of a notebook, its executed copy kept in <run>/notebooks/ (with an
HTML rendering and a log), its record in <run>/grid/<label>.json. A job is skipped when its last run
succeeded with the same parameters, no job it depends on ran after it, and every manifest step it
ran or found done still verifies (outputs present, content hashes unchanged). After a failure the
jobs that do not depend on it still run; the next run does only what is missing or failed.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import artifacts, jupyter_kernel, languages
from ..errors import RunBusyError
from ..params import REPO_ROOT, ParamError, Params, load_params
from . import layout

NOTEBOOKS = REPO_ROOT / "notebooks"


@dataclass(frozen=True)
class Job:
    name: str  # data, upscale, cpt/2x/est, merge/2x, eval/2x/base (or eval/2x), analysis
    notebook: str  # 01_data ... 06_analysis
    parameters: dict = field(default_factory=dict, hash=False)  # papermill parameters of this job
    deps: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """File name of its executed notebook: 03_cpt-2x-est."""
        return "-".join([self.notebook, *self.name.split("/")[1:]])


def plan_jobs(p: Params) -> list[Job]:
    """Every job of a reproduction at p's scale, languages and setups, in dependency order."""
    langs = list(p.langs)
    jobs = [Job("data", "01_data"), Job("upscale", "02_upscale", deps=("data",))]
    if p.models_from == "hub":  # fetching is no work for a kernel of its own: one job per language
        jobs += [Job(f"cpt/{lang}", "03_cpt", {"lang": lang}, ("upscale",)) for lang in [languages.MULTILINGUAL, *langs]]
    for setup in p.setups if p.models_from == "train" else []:
        # multilingual first: the longest job, so --jobs N overlaps it with the rest
        per_setup = [languages.EACH] if p.cpt_jobs == "per_setup" else langs
        jobs += [Job(f"cpt/{setup}/{lang}", "03_cpt", {"lang": lang, "setups": [setup]}, ("upscale",))
                 for lang in [languages.MULTILINGUAL, *per_setup]]
    merges = bool(p.merge_methods)
    if merges:
        jobs += [Job(f"merge/{setup}", "04_merge", {"setups": [setup]},
                     tuple(dict.fromkeys(_cpt_job(p, setup, lang) for lang in langs))) for setup in p.setups]
    evals = [job for setup in p.setups for job in _eval_jobs(p, setup, merges)]
    return jobs + evals + [Job("analysis", "06_analysis", deps=tuple(j.name for j in evals))]


def _cpt_job(p: Params, setup: str, lang: str) -> str:
    """The job that makes the CPT model of (setup, lang)."""
    if p.models_from == "hub":
        return f"cpt/{lang}"
    grouped = p.cpt_jobs == "per_setup" and lang != languages.MULTILINGUAL
    return f"cpt/{setup}/{languages.EACH if grouped else lang}"


def _eval_jobs(p: Params, setup: str, merges: bool) -> list[Job]:
    """05_eval of one setup: a job per model group (its base, each CPT model with its checkpoints, the
    merges), or with `eval_jobs: per_setup` one job for all of them (small scales, where a notebook
    kernel's ~10 s of imports costs more than evaluating a model)."""
    groups = [("base", "upscale")] + [(lang, _cpt_job(p, setup, lang)) for lang in [languages.MULTILINGUAL, *p.langs]]
    groups += [("merged", f"merge/{setup}")] if merges else []
    if p.eval_jobs == "per_setup":
        return [Job(f"eval/{setup}", "05_eval", {"setups": [setup]}, tuple(dict.fromkeys(dep for _, dep in groups)))]
    return [Job(f"eval/{setup}/{group}", "05_eval", {"setups": [setup], "eval_models": group}, (dep,))
            for group, dep in groups]


def alone(jobs: list[Job]) -> set[str]:
    """The jobs that can never run beside another: every other job comes before or after them."""
    deps = {job.name: set(job.deps) for job in jobs}
    before = {}
    for job in jobs:  # dependency order: a job's deps have their ancestors already
        before[job.name] = set().union(*(before.get(d, set()) | {d} for d in job.deps)) if job.deps else set()
    names = set(deps)
    return {n for n in names if names - {n} <= before[n] | {m for m in names if n in before[m]}}


def select_jobs(jobs: list[Job], patterns: list[str] | None) -> list[Job]:
    """The jobs whose names match any glob pattern (e.g. "cpt/2x/*"), with everything they need."""
    if not patterns:
        return jobs
    by_name = {job.name: job for job in jobs}
    wanted = {job.name for job in jobs if any(fnmatch.fnmatchcase(job.name, pat) for pat in patterns)}
    if not wanted:
        raise ParamError(f"no step matches {', '.join(patterns)}; steps: {', '.join(by_name)}")
    todo = list(wanted)
    while todo:
        for dep in by_name[todo.pop()].deps:
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [job for job in jobs if job.name in wanted]


# -- commands --------------------------------------------------------------------------------------

def notebook_parameters(p: Params, overrides: dict, job: Job) -> dict:
    return {"scale": p.scale, **overrides, **job.parameters}


def executed_path(p: Params, job: Job) -> Path:
    return layout.of(p).executed_notebook(job.label)


def _shown(path: Path) -> str:
    """Paths inside the repository relative to it (commands run from the repository root)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def papermill_args(p: Params, overrides: dict, job: Job, notebooks: Path = NOTEBOOKS) -> list[str]:
    """papermill's arguments for a job; scalars as -p, lists, mappings and nulls as -y YAML."""
    args = [_shown(notebooks / f"{job.notebook}.ipynb"), _shown(executed_path(p, job))]
    for key, value in notebook_parameters(p, overrides, job).items():
        if value is None or isinstance(value, (list, tuple, dict)):
            args += ["-y", yaml.safe_dump({key: value}, default_flow_style=True, width=10_000).strip()]
        else:
            args += ["-p", key, str(value)]
    return args


def plan_commands(p: Params, overrides: dict, only: list[str] | None = None) -> list[str]:
    """The papermill command lines of a reproduction, in dependency order (run from the repository root)."""
    return [shlex.join(["papermill", *papermill_args(p, overrides, job)])
            for job in select_jobs(plan_jobs(p), only)]


# -- records and states ----------------------------------------------------------------------------

def record_path(p: Params, job: Job) -> Path:
    return layout.of(p).job_record(job.label)


def read_record(p: Params, job: Job) -> dict | None:
    try:
        return json.loads(record_path(p, job).read_text())
    except (FileNotFoundError, ValueError):
        return None


def parameters_fingerprint(p: Params, overrides: dict, job: Job) -> str:
    """Everything the job's notebook will see: the scale's YAML with the overrides and job parameters."""
    values = notebook_parameters(p, overrides, job)
    resolved = load_params(values.pop("scale"), values, need_data=False)
    return artifacts.fingerprint(job.notebook, resolved.to_dict())


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def why_not_done(p: Params, overrides: dict, job: Job, records: dict[str, dict | None]) -> str | None:
    """None when the job's last run is still valid, else the reason to run it (again)."""
    rec = records.get(job.name)
    if rec is None:
        return "never run"
    if rec["state"] == "running":
        return "running" if _alive(rec.get("pid")) else "interrupted"
    if rec["state"] != "done":
        return rec["state"]
    if rec["parameters_fingerprint"] != parameters_fingerprint(p, overrides, job):
        return "parameters changed"
    for dep in job.deps:
        dep_rec = records.get(dep)
        if dep_rec is None or dep_rec.get("finished", 0) > rec["started"]:
            return f"{dep} ran after it"
    manifest = artifacts.Manifest(p.run_path)
    for step, fp in rec.get("steps", {}).items():
        if problem := manifest.check(step, fp):
            return f"step {step}: {problem}"
    return None


def job_table(p: Params, overrides: dict, only: list[str] | None = None) -> list[dict]:
    """One row per job: name, parameters, state, why, duration, executed notebook."""
    jobs = select_jobs(plan_jobs(p), only)
    records = {job.name: read_record(p, job) for job in jobs}
    rows = []
    for job in jobs:
        rec = records[job.name]
        why = why_not_done(p, overrides, job, records)
        if why is None:
            state = "done"
        elif why in ("running", "failed", "interrupted", "never run"):
            state = {"never run": "pending"}.get(why, why)
        else:
            state = "stale"
        shown = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in job.parameters.items())
        rows.append({"step": job.name, "parameters": shown, "state": state,
                     "why": "" if state in ("done", "pending", "running") else
                     (rec.get("error", "") if state == "failed" else why),
                     "duration_s": round(rec["duration_s"]) if rec and rec.get("duration_s") is not None else None,
                     "notebook": _shown(executed_path(p, job)) if rec else ""})
    return rows


# -- running ---------------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


@contextlib.contextmanager
def run_lock(p: Params):
    """One reproduction per run directory at a time. The lock's file is inherited by the papermill
    processes, so it stays held while any of them (even orphaned by a killed runner) still runs."""
    layout.of(p).grid.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.of(p).grid / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusyError(f"another reproduction is running in {p.run_path} (or its notebooks still "
                               "are); wait for it to finish") from None
        yield fd
    finally:
        os.close(fd)


def _error_of(executed: Path, log_file: Path) -> str:
    """The exception a failed notebook ended with, else the last line of its log."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        book = json.loads(executed.read_text())
        for cell in book["cells"]:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    return f"{out['ename']}: {out['evalue']}".splitlines()[0][:300]
    with contextlib.suppress(OSError):
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return "failed"


def render_html(executed: Path) -> Path | None:
    """The executed notebook as HTML beside it (None when it cannot be rendered)."""
    try:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_filename(str(executed))
    except Exception:  # a half-written or missing notebook has no rendering; its log remains
        return None
    out = executed.with_suffix(".html")
    artifacts.atomic.write_text(out, body)
    return out


class Runner:
    """Runs the grid (or the `only` part of it, or a given list of jobs) with `parallel` jobs at once."""

    def __init__(self, p: Params, overrides: dict, parallel: int = 1, only: list[str] | None = None, log=print,
                 jobs: list[Job] | None = None, notebooks: Path = NOTEBOOKS):
        self.p, self.overrides, self.n_jobs, self.log = p, overrides, max(1, parallel), log
        self.jobs = select_jobs(jobs if jobs is not None else plan_jobs(p), only)
        self.notebooks = notebooks
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.interrupted = False
        self.alone = alone(self.jobs)

    def _env(self, job: Job) -> dict:
        # the environment's own kernel (not a user-level one of the same name), and text progress bars
        env = {**jupyter_kernel.environment(plain_progress=True), artifacts.JOB_STEPS_ENV: str(self._steps_file(job)),
               "PYTHONUNBUFFERED": "1"}
        if self.n_jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
            # parallel jobs share the cores instead of each starting one thread per core; a job that never
            # runs beside another (01_data, 02_upscale, 06_analysis) gets them all
            share = 1 if job.name in self.alone else self.n_jobs
            threads = str(max(1, (os.cpu_count() or 1) // share))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        return env

    def _steps_file(self, job: Job) -> Path:
        return layout.of(self.p).job_record(job.label).with_suffix(".steps")

    def execute(self, job: Job, lock_fd: int) -> bool:
        p = self.p
        executed = executed_path(p, job)
        executed.parent.mkdir(parents=True, exist_ok=True)
        log_file = executed.with_suffix(".log")
        steps_file = self._steps_file(job)
        steps_file.unlink(missing_ok=True)
        started = time.time()
        rec = {"job": job.name, "notebook": job.notebook, "parameters": notebook_parameters(p, self.overrides, job),
               "parameters_fingerprint": parameters_fingerprint(p, self.overrides, job), "state": "running",
               "pid": os.getpid(), "started": started, "executed": str(executed)}
        artifacts.atomic.write_json(record_path(p, job), rec)
        cmd = [sys.executable, "-m", "papermill", *papermill_args(p, self.overrides, job, self.notebooks),
               "--cwd", str(self.notebooks), "--kernel", jupyter_kernel.KERNEL_NAME, "--log-output", "--no-progress-bar"]
        with open(log_file, "w") as log:
            with self.lock:
                if self.interrupted:
                    return False
                proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        env=self._env(job), pass_fds=(lock_fd,), start_new_session=True)
                self.procs[job.name] = proc
            code = proc.wait()
            with self.lock:
                self.procs.pop(job.name, None)
        ok = code == 0 and not self.interrupted
        steps = {}
        if steps_file.exists():
            for line in steps_file.read_text().splitlines():
                name, _, fp = line.partition("\t")
                steps[name] = fp
        html = render_html(executed)
        rec.update(state="done" if ok else ("interrupted" if self.interrupted else "failed"), finished=time.time(),
                   duration_s=round(time.time() - started, 1), steps=steps, returncode=code,
                   html=str(html) if html else None, log=str(log_file))
        if not ok:
            rec["error"] = "interrupted" if self.interrupted else _error_of(executed, log_file)
        artifacts.atomic.write_json(record_path(p, job), rec)
        return ok

    def stop_children(self) -> None:
        with self.lock:
            self.interrupted = True
            for proc in self.procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)

    def run(self) -> int:
        jobs = self.jobs
        status: dict[str, str] = {}  # ran | skipped | failed | blocked
        records = {job.name: read_record(self.p, job) for job in jobs}
        pending = list(jobs)
        t0 = time.time()
        jupyter_kernel.register()  # a no-op where the environment's setup (make env, make lab) registered it
        with run_lock(self.p) as lock_fd, ThreadPoolExecutor(self.n_jobs) as pool:
            running = {}
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                while pending or running:
                    pending = self._launch_ready(pending, running, status, records, pool, lock_fd)
                    if not running:
                        if pending:
                            raise RuntimeError(f"jobs wait on jobs not in the grid: {[j.name for j in pending]}")
                        continue
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = running.pop(future)
                        ok = future.result()
                        status[job.name] = "ran" if ok else "failed"
                        records[job.name] = read_record(self.p, job)
                        rec = records[job.name]
                        if ok:
                            self.log(f"[grid] {job.name} done in {rec['duration_s']:.0f}s")
                        else:
                            self.log(f"[grid] {job.name} FAILED: {rec.get('error')} (executed notebook: "
                                     f"{executed_path(self.p, job)})")
            except Interrupted:
                self.stop_children()
                wait(running)
                self.log("[grid] interrupted; finished jobs are kept, the next run goes on from there")
                return 130
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return self._summary(jobs, status, time.time() - t0)

    def _on_signal(self, signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    def _launch_ready(self, pending, running, status, records, pool, lock_fd) -> list[Job]:
        """Start what can start (or skip what is done); return the jobs still waiting."""
        progressed = True
        while progressed:
            progressed = False
            for job in list(pending):
                dep_states = [status.get(d) for d in job.deps]
                if any(s in ("failed", "blocked") for s in dep_states):
                    status[job.name] = "blocked"
                    self.log(f"[grid] {job.name} not run: a job it needs failed")
                elif all(s in ("ran", "skipped") for s in dep_states):
                    if "ran" not in dep_states and why_not_done(self.p, self.overrides, job, records) is None:
                        status[job.name] = "skipped"
                        self.log(f"[grid] {job.name} up to date, skipped")
                    elif len(running) < self.n_jobs:
                        self.log(f"[grid] {job.name} running -> {_shown(executed_path(self.p, job))}")
                        running[pool.submit(self.execute, job, lock_fd)] = job
                    else:
                        continue
                else:
                    continue
                pending.remove(job)
                progressed = True
        return pending

    def _summary(self, jobs: list[Job], status: dict[str, str], seconds: float) -> int:
        counts = {s: sum(1 for v in status.values() if v == s) for s in ("ran", "skipped", "failed", "blocked")}
        self.log(f"[grid] {len(jobs)} jobs in {seconds:.0f}s: {counts['ran']} ran, {counts['skipped']} up to date, "
                 f"{counts['failed']} failed, {counts['blocked']} not run because of a failure")
        failed = [job for job in jobs if status.get(job.name) == "failed"]
        for job in failed:
            rec = read_record(self.p, job) or {}
            self.log(f"[grid]   FAILED {job.name}: {rec.get('error')}\n"
                     f"[grid]     executed notebook: {executed_path(self.p, job)}\n"
                     f"[grid]     log: {executed_path(self.p, job).with_suffix('.log')}")
        if failed:
            self.log("[grid] fix the cause and run the same command again: finished jobs are skipped")
        return 1 if failed else 0
