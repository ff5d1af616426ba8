"""A released model standing in for a trained one (`models_from: hub`): the manifest step of the model
it replaces (`english/base_1x`, `cpt/2x/swe`, ...), done by fetching it (models/released.py)."""
from __future__ import annotations

from pathlib import Path

from .. import artifacts, fingerprints
from ..models import released
from ..params import Params
from . import layout


def step(p: Params, step: str, repo: str, revision: str | None, dst: Path, vocab_size: int | None,
         record=None, upstream: list[str] = (), optional: bool = False, log=print, **settings) -> str | None:
    """The manifest step `step` done by fetching `repo` into dst; returns its fingerprint.

    `record(dst)`: the training record (steps, tokens, FLOPs) to keep with it. `upstream`: 01_data's
    fingerprint, whose vocabulary and tokenizer the fetch checks and whose outputs (streams, held-out text)
    every later step reads with the fetched model. `optional`: a repo that may not exist is recorded as
    absent (so it is not asked for again) and None is returned."""
    params = {**p.subset(fingerprints.keys("fetch")), "repo_id": repo, "revision": revision, **settings,
              "tokens_per_step": p.tokens_per_step if record else None}
    with artifacts.Step(p.run_path, step, params, upstream, log=log) as s:
        if s.todo:
            log(f"[{step}] fetching {repo}" + (f"@{revision}" if revision else ""))
            info = released.fetch(repo, revision, dst, vocab_size, layout.of(p).data.tokenizer, missing_ok=optional)
            if info is None:
                log(f"[{step}] {repo} is not released (not on the Hub, or offline and not in the cache)")
                s.extra = {"repo_id": repo, "absent": True}
            else:
                s.extra = {**info, **(record(dst) if record else {})}
                s.outputs = [dst]
    entry = artifacts.Manifest(p.run_path).entry(step)
    return None if entry.get("absent") else entry["fingerprint"]
