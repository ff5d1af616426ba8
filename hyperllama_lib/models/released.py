"""The authors' released models on the Hub, used instead of training them (`models_from: hub`).

The Hub ids are the authors' published spelling (../shared/paper/FACTS.md): lower case, the setup with
a hyphen (`liu-nlp/hyperllama-572m-estonian-1x-cloned`). The Hub matches ids case-insensitively, but its
local cache (and offline snapshots, mirrors) key on the exact spelling, so no other form is used.

The released kinds and the run models they stand for:
    180m-english-1x                       base_1x: the 180M English base (the 1x setup adapts it)
    572m-english-1x-cloned                base_2x: the trained 572M English base, i.e. the seed HyperCloned
                                          and trained on (the 2x setup adapts it; the authors' 2x training
                                          configs start from a folder of that name: an inference). The
                                          authors' merges also take it as base_model (merge_base: authors)
    572m-english-2x                       the base_model of the authors' five-language 2x TIES and
                                          DARE-TIES merges only (merge_base: authors)
    {180m|572m}-{language}-{setup}        cpt/<setup>/<lang>, the adapted models (15), and with language
                                          "multilingual" the jointly trained models (3)
    572m-{language}-{setup}-matching-1x   the 1x_cloned (and, if released, 2x) checkpoint whose training
                                          FLOPs match the final 1x model: our reading of the name, which
                                          nothing public confirms. Fetched where it exists
The 1x_cloned base is the fetched 1x base HyperCloned here (02_upscale), as in training mode.

Only config, safetensors and tokenizer files are downloaded: never pickled .bin weights, never remote
code. `released_repos` overrides any id ("<setup>/<lang>" -> "owner/name[@revision]").
"""
from __future__ import annotations

import filecmp
import fnmatch
import functools
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import languages
from ..artifacts import atomic, checkpoints
from ..errors import ModelFolderError, ReleasedModelError  # noqa: F401  (defined in errors.py)
from ..params import Params
from . import modeling

OWNER = "liu-nlp"
SIZES = {"1x": "180m", "1x_cloned": "572m", "2x": "572m"}
SETUP_NAMES = {"1x": "1x", "1x_cloned": "1x-cloned", "2x": "2x"}  # as the ids spell them
# the English models, by the run setup whose base they are
ENGLISH_REPOS = {"1x": f"{OWNER}/hyperllama-180m-english-1x", "2x": f"{OWNER}/hyperllama-572m-english-1x-cloned"}
AUTHORS_2X_BASE = f"{OWNER}/hyperllama-572m-english-2x"  # five-language 2x TIES / DARE-TIES merges' base_model
MATCHING_SUFFIX = "-matching-1x"
MATCHING_SETUPS = ("1x_cloned", "2x")  # the 572M setups; only 1x_cloned is confirmed on the Hub
ALLOW_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


@dataclass(frozen=True)
class Release:
    """One repository a run fetches."""
    kind: str  # english | adapted | multilingual | authors_base | matching
    setup: str
    lang: str  # ISO code, "eng" or "multilingual"
    repo: str
    revision: str | None
    optional: bool = False  # fetched where it exists (the -matching-1x checkpoints)

    @property
    def spec(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "")


def pattern_fields(setup: str, lang: str) -> dict[str, str]:
    name = languages.MULTILINGUAL if lang == languages.MULTILINGUAL else languages.name(lang)
    return {"size": SIZES[setup], "setup": SETUP_NAMES[setup], "lang": lang, "language": name}


def _split(spec: str) -> tuple[str, str | None]:
    repo, _, revision = spec.partition("@")
    return repo, revision or None


def repo_for(p: Params, setup: str, lang: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of the released `setup` model trained on `lang` ("eng": the English base)."""
    spec = p.released_repos.get(f"{setup}/{lang}")
    if spec is None and lang == languages.ENGLISH:
        if setup not in ENGLISH_REPOS:
            raise ReleasedModelError(f"no released English {setup} base; it is cloned from the 1x base")
        spec = ENGLISH_REPOS[setup]
    if spec is None:
        spec = p.released_repo_pattern.format(**pattern_fields(setup, lang))
    return _split(spec)


def matching_repo_for(p: Params, setup: str, lang: str) -> tuple[str, str | None]:
    """The -matching-1x checkpoint of a 572M adapted model: its id with the suffix, same revision."""
    repo, revision = repo_for(p, setup, lang)
    return repo + MATCHING_SUFFIX, revision


def authors_five_language_base(p: Params) -> bool:
    """Whether the run's merges include the five-language set, whose 2x TIES and DARE-TIES merges the
    authors took against `AUTHORS_2X_BASE`."""
    return sorted(p.langs) == sorted(languages.TARGET_LANGUAGES)


def releases(p: Params) -> list[Release]:
    """Every repository a `models_from: hub` run with these parameters fetches, in pipeline order."""
    # a LoRA setup fetches no adapted model (none is released) but needs its base: the full setup's
    setups = [s for s in p.setups if s in SIZES]
    bases = {s.removesuffix("_lora") for s in p.setups}
    out = []
    english = [s for s in ("1x", "2x") if s in bases or (s == "1x" and "1x_cloned" in bases)
               or (s == "2x" and p.merge_base == "authors" and "1x_cloned" in bases)]
    out += [Release("english", s, languages.ENGLISH, *repo_for(p, s, languages.ENGLISH)) for s in english]
    if p.merge_base == "authors" and "2x" in setups and authors_five_language_base(p) \
            and {"ties", "dare_ties"} & set(p.merge_methods):
        out.append(Release("authors_base", "2x", languages.ENGLISH, *_split(AUTHORS_2X_BASE)))
    for lang in [*p.langs, languages.MULTILINGUAL]:
        kind = "multilingual" if lang == languages.MULTILINGUAL else "adapted"
        out += [Release(kind, s, lang, *repo_for(p, s, lang)) for s in setups]
        if p.released_matching:
            out += [Release("matching", s, lang, *matching_repo_for(p, s, lang), optional=True)
                    for s in setups if s in MATCHING_SETUPS]
    return out


def _wanted(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOW_PATTERNS)


def _link_or_copy(src: Path, dst: Path) -> None:
    # a hard link to the Hub cache costs no space; across file systems it has to be a copy
    try:
        os.link(src.resolve(), dst)
    except OSError:
        shutil.copy2(src, dst)


@functools.lru_cache(maxsize=2)
def _vocab(path: Path, mtime: int | None = None) -> dict[str, int]:
    """token -> id of a tokenizer.json (cached per path and mtime: 01_data's is compared with every fetch)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)


def _check_tokenizer(folder: Path, repo: str, tokenizer_dir: Path | None, vocab_size: int | None,
                     config: dict) -> None:
    if vocab_size is not None and config.get("vocab_size") != vocab_size:
        raise ReleasedModelError(
            f"{repo}: vocabulary of {config.get('vocab_size')} ids, but 01_data's tokenizer has {vocab_size}; "
            "the released models need tokenizer: llama3 (rerun 01_data with it)")
    ours = tokenizer_dir / "tokenizer.json" if tokenizer_dir is not None else None
    theirs = folder / "tokenizer.json"
    if ours is None or not ours.is_file() or not theirs.is_file() or filecmp.cmp(ours, theirs, shallow=False):
        return
    try:
        their_vocab = _vocab(theirs)
    except Exception as e:  # a malformed tokenizer.json
        raise ReleasedModelError(f"{repo}: tokenizer.json is unreadable ({type(e).__name__})") from None
    our_vocab = _vocab(ours, ours.stat().st_mtime_ns)
    if their_vocab != our_vocab:
        differ = sorted(set(their_vocab.items()) ^ set(our_vocab.items()), key=lambda kv: kv[1])
        token, ident = differ[0]
        raise ReleasedModelError(
            f"{repo}: its tokenizer does not match 01_data's ({len(differ)} differing entries, the first "
            f"{token!r} -> {ident}); the released models need tokenizer: llama3 (rerun 01_data with it)")


def place(src: Path, dst: Path, repo: str, vocab_size: int | None = None,
          tokenizer_dir: Path | None = None) -> dict:
    """Put the allowed files of a downloaded snapshot at dst after checking them (a model folder with
    safetensors, the vocabulary and, where both exist, the tokenizer of 01_data); return config.json."""
    with atomic.replace_dir(dst) as tmp:
        for f in sorted(Path(src).iterdir()):
            if f.is_file() and _wanted(f.name):
                _link_or_copy(f, tmp / f.name)
        try:
            config = checkpoints.check_model_folder(tmp)
        except ModelFolderError as e:
            raise ReleasedModelError(f"{repo}: {str(e).replace(str(tmp), 'the download')}") from None
        _check_tokenizer(tmp, repo, tokenizer_dir, vocab_size, config)
    return config


def _is_missing(error: Exception) -> bool:
    """A repo that is not there: not on the Hub, or (offline) not in the local cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    return isinstance(error, (RepositoryNotFoundError, LocalEntryNotFoundError))


def download(repo: str, revision: str | None = None, missing_ok: bool = False) -> Path | None:
    """The allowed files of a released model in the Hub cache (downloaded with progress bars if needed);
    None for a missing repo when `missing_ok`."""
    from huggingface_hub import snapshot_download  # imported late: only hub runs need it

    where = repo + (f"@{revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo_id=repo, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except (OSError, ValueError) as e:  # huggingface_hub's errors: no such repo or revision, gated, offline, HTTP
        if missing_ok and _is_missing(e):
            return None
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise ReleasedModelError(f"{where}: cannot download ({type(e).__name__}: {reason}); check the name in "
                                 "released_repos or released_repo_pattern, the network, and HF_TOKEN") from None
    return folder


def fetch(repo: str, revision: str | None, dst: Path, vocab_size: int | None = None,
          tokenizer_dir: Path | None = None, missing_ok: bool = False) -> dict | None:
    """Download a released model (config, safetensors, tokenizer only) to dst; return its provenance
    (None: a missing repo with `missing_ok`)."""
    folder = download(repo, revision, missing_ok)
    if folder is None:
        return None
    config = place(folder, dst, repo, vocab_size, tokenizer_dir)
    # the Hub cache names each snapshot folder after its commit
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return {"repo_id": repo, "revision": revision or "main", "commit": commit, "model_type": config["model_type"]}


def download_size(repo: str, revision: str | None = None) -> int | None:
    """Bytes of the files a fetch downloads, as the Hub lists them; None where the Hub cannot say
    (offline, no such repo)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except Exception:  # noqa: BLE001  offline, missing, gated: the size is unknown, not an error
        return None
    sizes = [s.size for s in info.siblings or [] if _wanted(s.rfilename.rsplit("/", 1)[-1])]
    return sum(x or 0 for x in sizes) if sizes and all(x is not None for x in sizes) else None


def clone_source_parameters(model_dir: Path, factor: int = 2) -> dict[str, int]:
    """Parameter counts of the model a x`factor` HyperClone in model_dir was made from (width / factor)."""
    from transformers import LlamaConfig

    d = modeling.load_config(model_dir).to_dict()
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size"):
        d[key] //= factor
    d = {k: v for k, v in d.items() if k not in ("model_type", "lm_head_normalization_factor", "architectures")}
    return modeling.count_parameters(LlamaConfig(**d))


def training_record(model_dir: Path, steps: int, tokens_per_step: int) -> dict:
    """The steps, tokens and FLOPs that training would record, for the recipe the model was trained with."""
    counts = modeling.count_parameters(model_dir)
    tokens = steps * tokens_per_step
    return {"steps": steps, "tokens": tokens, "flops_total": 6 * counts["total"] * tokens,
            "flops_non_embedding": 6 * counts["non_embedding"] * tokens, "params_total": counts["total"],
            "params_non_embedding": counts["non_embedding"], "seconds": 0.0, "final_bpb": {}}


def matching_steps(steps_1x: int, params_1x: int, params_572m: int) -> int:
    """The step of a 572M run whose training FLOPs (6 x all parameters x tokens) equal those of the final
    1x run of `steps_1x` steps, on the same tokens per step: our reading of "-matching-1x"."""
    return max(1, round(steps_1x * params_1x / params_572m))
