"""The authors' released models on the Hub, used instead of training them (`models_from: hub`).

02_upscale fetches the 1x and 2x English bases and HyperClones the fetched 1x base into the 1x_cloned
base, as it does in training mode; 03_cpt fetches the adapted models. A fetch is a manifest step with
the name and output folder of the step it stands for, so 04_merge and 05_eval use the models unchanged.

Only config, safetensors and tokenizer files are downloaded: never pickled .bin weights, never remote
code. The English repo ids are the authors'. The adapted models' ids follow `released_repo_pattern`,
our guess at the authors' naming (check it on the Hub), unless `released_repos` names a model.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
from pathlib import Path

from transformers import AutoConfig

from .. import languages
from ..artifacts import atomic, checkpoints
from ..errors import ModelFolderError, ReleasedModelError  # noqa: F401  (defined in errors.py)
from ..params import Params
from . import modeling

ENGLISH_REPOS = {"1x": "liu-nlp/HyperLlama-180M-english-1x", "2x": "liu-nlp/HyperLlama-572M-english-2x"}
SIZES = {"1x": "180M", "1x_cloned": "572M", "2x": "572M"}
ALLOW_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def pattern_fields(setup: str, lang: str) -> dict[str, str]:
    name = languages.MULTILINGUAL if lang == languages.MULTILINGUAL else languages.name(lang)
    return {"size": SIZES[setup], "setup": setup, "lang": lang, "language": name}


def repo_for(p: Params, setup: str, lang: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of the released `setup` model trained on `lang` ("eng": the English base)."""
    spec = p.released_repos.get(f"{setup}/{lang}")
    if spec is None and lang == languages.ENGLISH:
        if setup not in ENGLISH_REPOS:
            raise ReleasedModelError(f"no released English {setup} base; it is cloned from the 1x base")
        spec = ENGLISH_REPOS[setup]
    if spec is None:
        spec = p.released_repo_pattern.format(**pattern_fields(setup, lang))
    repo, _, revision = spec.partition("@")
    return repo, revision or None


def _wanted(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOW_PATTERNS)


def _link_or_copy(src: Path, dst: Path) -> None:
    # a hard link to the Hub cache costs no space; across file systems it has to be a copy
    try:
        os.link(src.resolve(), dst)
    except OSError:
        shutil.copy2(src, dst)


def place(src: Path, dst: Path, repo: str, vocab_size: int | None = None) -> dict:
    """Put the allowed files of a downloaded snapshot at dst after checking them; return config.json."""
    with atomic.replace_dir(dst) as tmp:
        for f in sorted(Path(src).iterdir()):
            if f.is_file() and _wanted(f.name):
                _link_or_copy(f, tmp / f.name)
        try:
            config = checkpoints.check_model_folder(tmp)
        except ModelFolderError as e:
            raise ReleasedModelError(f"{repo}: {str(e).replace(str(tmp), 'the download')}") from None
        if vocab_size is not None and config.get("vocab_size") != vocab_size:
            raise ReleasedModelError(
                f"{repo}: vocabulary of {config.get('vocab_size')} ids, but 01_data's tokenizer has {vocab_size}; "
                "the released models need tokenizer: llama3 (rerun 01_data with it)")
    return config


def fetch(repo: str, revision: str | None, dst: Path, vocab_size: int | None = None) -> dict:
    """Download a released model (config, safetensors, tokenizer only) to dst; return its provenance."""
    from huggingface_hub import snapshot_download  # imported late: only hub runs need it

    try:
        folder = Path(snapshot_download(repo_id=repo, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except OSError as e:  # huggingface_hub's errors: no such repo or revision, gated, offline, HTTP
        where = repo + (f"@{revision}" if revision else "")
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ReleasedModelError(f"{where}: cannot download ({type(e).__name__}: {reason}); check the name in "
                                 "released_repos or released_repo_pattern, the network, and HF_TOKEN") from None
    config = place(folder, dst, repo, vocab_size)
    # the Hub cache names each snapshot folder after its commit
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return {"repo_id": repo, "revision": revision or "main", "commit": commit, "model_type": config["model_type"]}


def training_record(model_dir: Path, steps: int, tokens_per_step: int) -> dict:
    """The steps, tokens and FLOPs that training would record, for the recipe the model was trained with."""
    modeling.register()
    counts = modeling.count_parameters(AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False))
    tokens = steps * tokens_per_step
    return {"steps": steps, "tokens": tokens, "flops_total": 6 * counts["total"] * tokens,
            "flops_non_embedding": 6 * counts["non_embedding"] * tokens, "params_total": counts["total"],
            "params_non_embedding": counts["non_embedding"], "seconds": 0.0, "final_bpb": {}}
