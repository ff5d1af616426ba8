"""Parameters: one flat YAML per scale (params/<scale>.yaml), overridable key by key.

Every key is a field of `Params`; a YAML file or an override naming anything else stops with a
one-line `ParamError` that lists the valid choices, before any work starts. Keys are flat so that
papermill's `-p key value` can override any of them.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import languages
from .errors import MissingInputError, ParamError  # noqa: F401  (defined in errors.py)

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"
SCALES = ("smoke", "tiny", "small", "paper", "small_t4", "released")
FULL_SETUPS = ("1x", "1x_cloned", "2x")  # continued pretraining of every weight
LORA_SETUPS = ("1x_lora", "2x_lora", "1x_cloned_lora")  # a peft LoRA adapter on the same base (training/adapters.py)
SETUPS = FULL_SETUPS + LORA_SETUPS
DEFAULT_SETUPS = FULL_SETUPS + ("1x_lora", "2x_lora")  # 1x_cloned_lora only when asked for


def lora_twins(setups) -> list[tuple[str, str]]:
    """(full setup, its LoRA setup) for every base that `setups` adapt both ways."""
    return [(s, f"{s}_lora") for s in setups if s in FULL_SETUPS and f"{s}_lora" in setups]
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DATA_ENV = "HYPERLLAMA_DATA"
RUNS_ENV = "HYPERLLAMA_RUNS"


@dataclass
class Params:
    scale: str = "tiny"
    seed: int = 1234
    # selection (notebook parameters)
    lang: str | None = None  # 03_cpt: one target language (code or name), "multilingual", or "each" (every one of langs)
    langs: list = field(default_factory=lambda: list(languages.TARGET_LANGUAGES))
    setups: list = field(default_factory=lambda: list(DEFAULT_SETUPS))
    # paths (None: environment variable, then the default beside the repository)
    data_dir: str | None = None
    run_dir: str | None = None
    publish_dir: str | None = "."  # figures/ and tables/ go here (relative to the repo); None: run_dir
    # data
    data_source: str = "local"  # local: ../shared/data layout; hub: FineWeb-2 and SmolLM-Corpus
    max_docs_per_lang: int | None = None  # cap on documents read per language (smoke scale)
    heldout_fraction: float = 0.05
    heldout_max_docs: int | None = 300
    english_seed_fraction: float = 0.8  # the paper's 80/20 English split: seed / bases
    code_source: str = "stdlib"  # stdlib: the interpreter's own Python source | python-edu (SmolLM-Corpus, Hub)
    code_max_bytes: int | None = 300_000  # None: all of the code source
    data_workers: int | None = None  # processes that clean and tokenise on the Hub path; None: all cores
    code_chunk_chars: int | None = 2000  # cut code files into ~this many characters; None: whole files
    char_budget: float = 1.2e6  # UniMax budget in characters over the target languages
    max_epochs: float = 6.0
    replay_english_fraction: float = 0.01  # of the 80% English split, for the reference language
    replay_code_fraction: float = 0.05  # of the code data, for the reference language
    replay_reference_lang: str = "swe"  # others get replay scaled by their share of documents
    eval_pairs_files: list = field(default_factory=list)  # MultiBLiMP-format data.tsv to decontaminate against
    tokenizer: str = "bpe"  # bpe (trained on the corpus) | llama3 (128,256 ids, offline)
    bpe_vocab_size: int = 2048
    # model: SmolLM2 shape with a GeGLU MLP
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    intermediate_size: int = 192
    hidden_act: str = "gelu"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    clone_factor: int = 2
    # training
    seq_len: int = 128
    micro_batch_size: int = 16
    global_batch_size: int = 16  # sequences per optimiser step (gradient accumulation fills it)
    lr: float = 3e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 10
    decay_fraction: float = 0.2  # linear decay to 0 over this last fraction of steps
    seed_code_epochs: float = 2.0
    seed_english_phase_code_fraction: float = 0.1
    seed_steps: int | None = None  # None: one pass over the planned stream
    base_steps: int | None = None
    cpt_steps: dict = field(default_factory=dict)  # lang or "multilingual" -> steps
    checkpoint_every_tokens: int = 20480  # save a checkpoint (and evaluate it in 05_eval) this often
    cpt_checkpoint_every_tokens: dict = field(default_factory=dict)  # lang -> checkpoint_every_tokens for its CPT
    keep_checkpoints: int | None = None  # checkpoints/step_N kept per stage; None: all (05_eval scores each)
    keep_resume_states: int = 1  # newest resume states kept per stage (each: weights + AdamW moments)
    train_eval_every_tokens: int | None = None  # held-out bpb during training; None: at every checkpoint
    train_eval_max_bytes: int = 20000
    # LoRA setups (*_lora; training/adapters.py): same data, steps and schedule as full CPT of the same base
    lora_rank: int = 16
    lora_alpha: float = 32.0  # scale alpha / rank (rsLoRA: alpha / sqrt(rank))
    lora_rslora: bool = False
    lora_dropout: float = 0.0
    lora_target_modules: str | list = "all-linear"  # or a list of LORA_TARGETS; the output head is never adapted
    lora_lr: float = 3e-3  # peak learning rate of the adapters (the paper's full-CPT peak by default)
    lora_embeddings: str = "frozen"  # frozen | trainable_tokens (the lora_trainable_tokens most frequent tokens)
    lora_trainable_tokens: int = 1000
    # released models (hyperllama_lib/models/released.py): train | hub (02_upscale fetches the English bases, 03_cpt the
    # adapted models, from the Hub instead of training them)
    models_from: str = "train"
    # Hub ids of the released models, as the authors publish them (../shared/paper/FACTS.md): {size} 180m|572m,
    # {setup} 1x|1x-cloned|2x (a hyphen), {language} the English name, {lang} the ISO code
    released_repo_pattern: str = "liu-nlp/hyperllama-{size}-{language}-{setup}"
    released_repos: dict = field(default_factory=dict)  # "<setup>/<lang>" (eng: base) -> "owner/name[@revision]"
    released_matching: bool = True  # also fetch the 572M "-matching-1x" checkpoints where they exist
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (fp32 on CPU, bf16 autocast on GPU) | fp32 | bf16 | fp16 (loss-scaled; T4)
    distributed: str = "ddp"  # under torchrun: ddp (replicated model) | fsdp (FSDP2, sharded weights and AdamW)
    compile: str = "auto"  # torch.compile the training model: auto (on CUDA) | true | false
    # merging
    merge_methods: list = field(default_factory=lambda: ["linear", "ties"])
    merge_density: float = 0.5
    merge_weight: float = 1.0
    merge_normalize: bool = True
    merge_dtype: str = "float32"
    merge_subsets: str = "full"  # full: the merge of all langs | all: every subset of >= 2 langs (26 for 5)
    # the model task vectors are taken against: setup (the setup's own English base) | authors (the base_model
    # of the authors' mergekit files: the trained 572M English base for 1x_cloned and 2x; pipeline/merge.py)
    merge_base: str = "setup"
    # weights: 04_merge writes every merged model | recipe: only what to merge how (recipe.json); 05_eval builds each
    # merged model while it scores it, one on disk at a time (the paper's grid is ~480 GB of merged models in fp16)
    merge_store: str = "weights"
    fisher_tokens: int = 8192  # tokens of each model's training stream for its diagonal Fisher
    fisher_floor: float = 1e-6  # Fisher values below this count as this (fisher, fisher_ties)
    fisher_normalize: bool = True  # scale each model's Fisher to mean 1 over all its parameters
    # grid jobs of 03_cpt: per_language (one per setup and language; parallel GPUs, cluster schedulers) or
    # per_setup (one per setup for its monolingual models, one for its multilingual model: fewer kernels)
    cpt_jobs: str = "per_language"
    # evaluation
    # grid jobs of 05_eval: per_model (one per base / CPT model with its checkpoints / multilingual / merges;
    # what a cluster wants) or per_setup (one per setup: fewer notebook kernels, ~10 s of imports each)
    eval_jobs: str = "per_model"
    blimp_pairs_per_paradigm: int | None = 20
    # MultiBLiMP: released files <multiblimp_dir>/<iso>/data.tsv; None: the Hub's (eval_source: hub), else the
    # pairs 01_data builds from the held-out UD treebanks (hyperllama_lib/evaluation/ud_pairs.py)
    multiblimp_dir: str | None = None
    multiblimp_pairs_per_phenomenon: int | None = None  # 05_eval's sample per language and phenomenon; None: all
    # liu-nlp/minimal_pair_mpararel (eval_source: hub): 05_eval's sample per language and relation; None: all
    mpararel_pairs_per_relation: int | None = 50
    # 05_eval: which models (None: all; base | merged | a target language or "multilingual": that CPT model and
    # its checkpoints); the grid runner evaluates each group as its own job
    eval_models: str | None = None
    # local: BLiMP from data_dir, MultiBLiMP from multiblimp_dir or built from UD | hub: also the paper's own sets
    # (liu-nlp/blimp-single-error, liu-nlp/minimal_pair_mpararel) and the released MultiBLiMP, from the Hub
    eval_source: str = "local"
    eval_checkpoints: bool = True  # 05_eval also scores every checkpoint saved during CPT (learning curves)
    eval_max_bytes: int = 40000
    eval_batch_size: int = 32

    # -- derived paths --------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        if self.data_dir:
            return _resolve(self.data_dir)
        if os.environ.get(DATA_ENV):
            return _resolve(os.environ[DATA_ENV])
        return (REPO_ROOT.parent / "shared" / "data").resolve()

    @property
    def multiblimp_path(self) -> Path | None:
        return _resolve(self.multiblimp_dir) if self.multiblimp_dir else None

    @property
    def run_path(self) -> Path:
        if self.run_dir:
            return _resolve(self.run_dir)
        if os.environ.get(RUNS_ENV):
            return _resolve(os.environ[RUNS_ENV]) / self.scale
        return REPO_ROOT / "runs" / self.scale

    @property
    def publish_path(self) -> Path:
        return _resolve(self.publish_dir) if self.publish_dir is not None else self.run_path

    @property
    def grad_accum(self) -> int:
        return self.global_batch_size // self.micro_batch_size

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def subset(self, keys: list[str]) -> dict[str, Any]:
        return {k: getattr(self, k) for k in keys}


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else REPO_ROOT / p).resolve()


FIELDS = {f.name: f for f in fields(Params)}


def _unknown_key(key: str) -> ParamError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ParamError(f"unknown parameter {key!r}{hint}; valid keys: {', '.join(FIELDS)}")


def _coerce(key: str, value: Any) -> Any:
    """Papermill and YAML give ints for floats and strings for None; make types match the field."""
    default = FIELDS[key].default if FIELDS[key].default is not dataclasses.MISSING else None
    kind = FIELDS[key].type
    if value is None or value == "None" or value == "null":
        if "None" in str(kind):
            return None
        raise ParamError(f"parameter {key!r} must not be empty")
    try:
        if "float" in str(kind) and not isinstance(value, bool):
            return float(value)
        if "int" in str(kind) and not isinstance(value, bool):
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if "bool" in str(kind):
            if isinstance(value, str):
                return {"true": True, "false": False}[value.lower()]
            return bool(value)
        if "list" in str(kind):
            return list(value) if isinstance(value, (list, tuple)) else [v.strip() for v in str(value).split(",")]
        if "dict" in str(kind) and not isinstance(value, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ParamError(f"parameter {key!r} has a bad value {value!r} (expected {kind}, like {default!r})") from None
    return value


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ParamError(f"unknown {key} {value!r}; valid choices: {', '.join(valid)}")


def _lang(value: str, allow_multilingual: bool = False) -> str:
    try:
        return languages.to_code(value, allow_multilingual=allow_multilingual)
    except ValueError as e:
        raise ParamError(str(e)) from None


def _cpt_lang(value: str) -> str:
    """03_cpt's language: a target language, multilingual, or each (every target language of the run)."""
    choices = (", ".join(f"{c} ({languages.name(c)})" for c in languages.TARGET_LANGUAGES)
               + f", {languages.MULTILINGUAL}, {languages.EACH}")
    if str(value).strip().lower() == languages.EACH:
        return languages.EACH
    try:
        code = languages.to_code(value, allow_multilingual=True)
    except ParamError:
        raise ParamError(f"unknown lang {value!r}; valid choices: {choices}") from None
    if code == languages.ENGLISH:
        raise ParamError(f"lang 'eng' is the source language; valid choices: {choices}")
    return code


def _per_lang(key: str, values: dict) -> dict[str, int]:
    """A language -> count mapping (cpt_steps, cpt_checkpoint_every_tokens) with ISO codes as keys."""
    out = {}
    for lang, value in values.items():
        code = _lang(lang, allow_multilingual=True)
        try:
            out[code] = int(value)
        except (ValueError, TypeError):
            raise ParamError(f"{key} {lang}: {value!r} is not a whole number") from None
    return out


def _released_repos(p: Params) -> dict[str, str]:
    """Check released_repo_pattern and normalise released_repos keys to "<setup>/<ISO code>"."""
    try:
        p.released_repo_pattern.format(size="180m", setup="1x", lang="swe", language="swedish")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ParamError(f"released_repo_pattern {p.released_repo_pattern!r} is not a valid pattern ({e!r}); "
                         "placeholders: {size}, {setup}, {lang}, {language}") from None
    repos = {}
    for key, spec in p.released_repos.items():
        setup, _, lang = str(key).partition("/")
        _choice("released_repos setup", setup, SETUPS)
        lang = _lang(lang, allow_multilingual=True)
        if (setup, lang) == ("1x_cloned", languages.ENGLISH) or not isinstance(spec, str) \
                or str(spec).partition("@")[0].count("/") != 1:
            raise ParamError(f"released_repos {key!r}: {spec!r} is not a model to fetch (\"owner/name\" or "
                             "\"owner/name@revision\"; the 1x_cloned base is cloned, not fetched)")
        repos[f"{setup}/{lang}"] = spec
    return repos


def _check_lora(p: Params) -> None:
    if p.lora_rank < 1 or p.lora_alpha <= 0 or not 0 <= p.lora_dropout < 1 or p.lora_lr <= 0 \
            or p.lora_trainable_tokens < 1:
        raise ParamError(f"LoRA parameters out of range: lora_rank {p.lora_rank} (>= 1), lora_alpha {p.lora_alpha} "
                         f"(> 0), lora_dropout {p.lora_dropout} (in [0, 1)), lora_lr {p.lora_lr} (> 0), "
                         f"lora_trainable_tokens {p.lora_trainable_tokens} (>= 1)")
    _choice("lora_embeddings", p.lora_embeddings, ("frozen", "trainable_tokens"))
    targets = p.lora_target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = [targets]
    if not isinstance(targets, str):
        if not targets:
            raise ParamError("lora_target_modules is empty; give all-linear or some of " + ", ".join(LORA_TARGETS))
        for name in targets:
            _choice("lora_target_modules entry", name, LORA_TARGETS)
        p.lora_target_modules = list(targets)


def validate(p: Params, need_data: bool = True) -> Params:
    _choice("scale", p.scale, SCALES)
    _choice("data_source", p.data_source, ("local", "hub"))
    _choice("tokenizer", p.tokenizer, ("bpe", "llama3"))
    _choice("code_source", p.code_source, ("stdlib", "python-edu"))
    _choice("device", p.device, ("auto", "cpu", "cuda"))
    if p.device == "cuda":
        from .device import resolve  # torch, imported only when a GPU is asked for

        resolve("cuda")  # ParamError on a machine without one, before any step starts
    _choice("precision", p.precision, ("auto", "fp32", "bf16", "fp16"))
    _choice("distributed", p.distributed, ("ddp", "fsdp"))
    p.compile = str(p.compile).lower()  # YAML and --set give booleans
    _choice("compile", p.compile, ("auto", "true", "false"))
    _choice("merge_dtype", p.merge_dtype, ("float32", "bfloat16", "float16"))
    _choice("merge_subsets", p.merge_subsets, ("full", "all"))
    _choice("cpt_jobs", p.cpt_jobs, ("per_language", "per_setup"))
    _choice("eval_jobs", p.eval_jobs, ("per_model", "per_setup"))
    _choice("models_from", p.models_from, ("train", "hub"))
    _choice("merge_base", p.merge_base, ("setup", "authors"))
    _choice("merge_store", p.merge_store, ("weights", "recipe"))
    _choice("eval_source", p.eval_source, ("local", "hub"))
    p.released_repos = _released_repos(p)
    _check_lora(p)
    if p.fisher_tokens < 1 or p.fisher_floor < 0:
        raise ParamError(f"fisher_tokens must be >= 1 and fisher_floor >= 0, got {p.fisher_tokens} "
                         f"and {p.fisher_floor}")
    p.langs = [_lang(lang) for lang in p.langs]
    for lang in p.langs:
        if lang not in languages.TARGET_LANGUAGES:
            raise ParamError(f"{lang!r} is not a target language; valid choices: {', '.join(languages.TARGET_LANGUAGES)}")
    if p.lang is not None:
        p.lang = _cpt_lang(p.lang)
    if p.eval_models is not None and p.eval_models not in ("base", "merged"):
        try:
            p.eval_models = _lang(p.eval_models, allow_multilingual=True)
            if p.eval_models == languages.ENGLISH:
                raise ParamError("eng")
        except ParamError:
            raise ParamError(f"unknown eval_models {p.eval_models!r}; valid choices: base, merged, "
                             f"{', '.join(languages.TARGET_LANGUAGES)}, {languages.MULTILINGUAL}") from None
    p.replay_reference_lang = _lang(p.replay_reference_lang)
    for setup in p.setups:
        _choice("setup", setup, SETUPS)
    from .merging.adapters import PEFT_METHODS  # peft's own adapter merges (LoRA setups only)
    from .merging.engine import METHODS  # the registry of merge methods is the list of valid choices

    for method in p.merge_methods:
        _choice("merge method", method, (*METHODS, *PEFT_METHODS))
    p.cpt_steps = _per_lang("cpt_steps", p.cpt_steps)
    p.cpt_checkpoint_every_tokens = _per_lang("cpt_checkpoint_every_tokens", p.cpt_checkpoint_every_tokens)
    for key in ("seq_len", "micro_batch_size", "global_batch_size", "hidden_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim", "intermediate_size", "clone_factor"):
        if getattr(p, key) < 1:
            raise ParamError(f"{key} must be a positive whole number, got {getattr(p, key)}")
    if p.global_batch_size % p.micro_batch_size:
        raise ParamError(f"global_batch_size {p.global_batch_size} is not a multiple of micro_batch_size {p.micro_batch_size}")
    if p.hidden_size != p.num_heads * p.head_dim:
        raise ParamError(f"hidden_size {p.hidden_size} != num_heads {p.num_heads} x head_dim {p.head_dim}")
    if p.num_heads % p.num_kv_heads:
        raise ParamError(f"num_heads {p.num_heads} is not a multiple of num_kv_heads {p.num_kv_heads}")
    if (p.keep_checkpoints is not None and p.keep_checkpoints < 0) or p.keep_resume_states < 1:
        raise ParamError(f"keep_checkpoints must be >= 0 or null (keep all) and keep_resume_states >= 1, got "
                         f"{p.keep_checkpoints} and {p.keep_resume_states}")
    for key in ("run_dir", "publish_dir"):
        value = getattr(p, key)
        # relative paths are taken from the repository and must stay in it; absolute ones are explicit
        if value is not None and not Path(value).expanduser().is_absolute() \
                and not _resolve(value).is_relative_to(REPO_ROOT):
            raise ParamError(f"{key} {value!r} leads outside the repository ({_resolve(value)}); "
                             "give an absolute path to write elsewhere")
    if not 0 < p.heldout_fraction < 1 or not 0 < p.english_seed_fraction < 1:
        raise ParamError("heldout_fraction and english_seed_fraction must lie strictly between 0 and 1")
    for key in ("blimp_pairs_per_paradigm", "multiblimp_pairs_per_phenomenon", "mpararel_pairs_per_relation"):
        if getattr(p, key) is not None and getattr(p, key) < 1:
            raise ParamError(f"{key} must be a positive number of pairs or null (all), got {getattr(p, key)}")
    if p.multiblimp_path is not None and not p.multiblimp_path.is_dir():
        raise ParamError(f"multiblimp_dir {p.multiblimp_path} not found (it needs <iso>/data.tsv files); "
                         "set it to a folder of released MultiBLiMP files, or null to build the pairs from UD")
    if need_data and p.data_source == "local" and not (p.data_path / "text").is_dir():
        raise ParamError(f"data folder {p.data_path} not found (it needs text/ and blimp/); "
                         f"set {DATA_ENV}=PATH or pass -p data_dir PATH")
    return p


def scale_file(scale: str) -> Path:
    _choice("scale", scale, SCALES)
    return PARAMS_DIR / f"{scale}.yaml"


def load_params(scale: str = "tiny", overrides: dict[str, Any] | None = None, need_data: bool = True) -> Params:
    """Read params/<scale>.yaml, apply overrides, validate. Raises ParamError on anything unknown."""
    scale = str(scale).strip().lower()
    with open(scale_file(scale)) as f:
        values = yaml.safe_load(f) or {}
    values.update({k: v for k, v in (overrides or {}).items()})
    values["scale"] = scale
    for key in values:
        if key not in FIELDS:
            raise _unknown_key(key)
    return validate(Params(**{k: _coerce(k, v) for k, v in values.items()}), need_data=need_data)


_NOTEBOOK_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def from_notebook(namespace: dict[str, Any], need_data: bool = True) -> Params:
    """Params from a notebook's globals: its parameters cell plus whatever papermill injected.

    Every plain value that the notebook defines (str, number, bool, list, dict, None) is taken as a
    parameter; anything papermill injects that is not a known key stops the notebook here.
    """
    values = {
        k: v for k, v in namespace.items()
        if not k.startswith("_") and k not in _NOTEBOOK_NAMES
        and (v is None or isinstance(v, (str, int, float, bool, list, dict)))
    }
    scale = values.pop("scale", "tiny")
    return load_params(scale, values, need_data=need_data)
