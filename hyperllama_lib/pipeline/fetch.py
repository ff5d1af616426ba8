"""A released model standing in for a trained one (`models_from: hub`): the manifest step of the model
it replaces (`english/base_1x`, `cpt/2x/swe`, ...), done by fetching it (models/released.py)."""
from __future__ import annotations

from pathlib import Path

from .. import artifacts, fingerprints
from ..models import released
from ..params import Params


def step(p: Params, step: str, setup: str, lang: str, dst: Path, vocab_size: int | None,
               steps: int | None = None, upstream: list[str] = (), log=print) -> str:
    """The manifest step `step` done by fetching the released model into dst; returns its fingerprint.
    `upstream`: 01_data's fingerprint, whose vocabulary the fetch checks and whose outputs (tokenizer,
    streams, held-out text) every later step reads with the fetched model."""
    repo, revision = released.repo_for(p, setup, lang)
    params = {**p.subset(fingerprints.keys("fetch")), "repo_id": repo, "revision": revision, "setup": setup,
              "lang": lang, "steps": steps, "tokens_per_step": p.tokens_per_step if steps else None}
    with artifacts.Step(p.run_path, step, params, upstream, log=log) as s:
        if s.todo:
            log(f"[{step}] fetching {repo}" + (f"@{revision}" if revision else ""))
            s.extra = released.fetch(repo, revision, dst, vocab_size)
            if steps:
                s.extra.update(released.training_record(dst, steps, p.tokens_per_step))
            s.outputs = [dst]
    return s.fp
