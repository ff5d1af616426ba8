"""A mergekit (0.1.5) merge configuration run as it is through our engine: `hyperllama merge --config`.

The file is read with yaml.safe_load and mapped onto `merging.merge_models` with mergekit's meaning:
- merge_method: a mergekit name; it runs the method of our registry whose `mergekit_name` it is
  (linear, multislerp, task_arithmetic, ties, dare_ties, dare_linear).
- parameters: a parameter under a model's `parameters` overrides the top-level one for that model
  (weight, density); shared ones (normalize, rescale, ...) count only at the top level, as in
  mergekit. A parameter the file leaves out takes mergekit's default for the method, not ours
  (mergekit's dare_ties and task_arithmetic do not normalize unless told; its ties and dare keep
  every entry, density 1, unless told). weight has no default: mergekit requires it.
- base_model: the base of the task vectors. linear has none: mergekit merges a linear
  configuration's base_model as one more input (weighted by the top-level weight), and so do we.
  A model listed that is also the base_model is the base (task-vector methods), as in mergekit.
- dtype: mergekit computes in it and writes it (out_dtype, if given, is written instead). Our math
  is float32 whatever the dtype, rounded once to the output dtype: with dtype float32 the tensors
  equal mergekit's; with float16 or bfloat16 they are the float32 result rounded, where mergekit
  rounds after every step (tests/test_mergekit_config.py measures the difference).
- DARE draws its masks as mergekit does on CPU with `--random-seed SEED` (engine random_stream
  "mergekit"), so the same file and seed give the same masks.
Accepted without effect, as in mergekit: int8_mask (the dtype of mergekit's internal sign mask;
the masks are the same), density and rescale of task_arithmetic (it sparsifies nothing), and the
authors' `normalize: true` in their multislerp files (mergekit's multislerp has no such parameter;
its weights are normalised by normalize_weights). Anything else we cannot honour (slices, modules,
tokenizer settings, LoRA models, gradients or filtered values, lambda other than 1, a parameter the
method does not take, an unknown key or method) stops with one line naming it and the file, before
anything is downloaded or written.

Model names: a --map entry, else an existing folder (absolute, relative to the configuration's
folder, then to the working directory), else a Hub id ("owner/name[@revision]") fetched with
`models.released.download` (config, safetensors and tokenizer files only).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from safetensors import safe_open

from ..errors import MergeError, ReleasedModelError
from .engine import DTYPES, METHODS, merge_models, tensor_files

REQUIRED = object()  # a mergekit parameter without a default
TOP_LEVEL_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype")
REFUSED_KEYS = {  # mergekit 0.1.5 keys we cannot honour, with the reason
    "slices": "layer slices are not supported; merge whole models with `models:`",
    "modules": "per-module merges are not supported; merge whole models with `models:`",
    "tokenizer_source": "the merge keeps the base's tokenizer (else the first model's) and requires "
                        "every model's tokenizer to be the same",
    "tokenizer": "the merge keeps the base's tokenizer (else the first model's) and requires every "
                 "model's tokenizer to be the same",
    "chat_template": "the merge copies the tokenizer files as they are",
}
MODEL_KEYS = ("model", "parameters")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class MergekitMethod:
    """What mergekit 0.1.5's method takes (name -> default, or REQUIRED) and how we honour it."""
    shared: dict[str, Any]
    per_model: dict[str, Any]
    no_effect: tuple[str, ...] = ()  # taken by mergekit, but the tensors do not depend on it
    only: dict[str, Any] = field(default_factory=dict)  # the one value of a parameter we honour
    ignored: tuple[str, ...] = ()  # not mergekit's parameters, ignored by it, but in the authors' files
    base_is_input: bool = False  # linear: mergekit merges base_model as one more input


def _task_arithmetic_family(normalize: bool, rescale: bool, **changes: Any) -> MergekitMethod:
    # int8_mask only sets the dtype of mergekit's sign-agreement mask (int8 instead of the math dtype)
    spec = dict(shared={"int8_mask": False, "normalize": normalize, "rescale": rescale, "lambda": 1.0},
                per_model={"weight": REQUIRED, "density": 1.0}, no_effect=("int8_mask",), only={"lambda": 1.0})
    return MergekitMethod(**{**spec, **changes})


MERGEKIT_METHODS = {  # mergekit 0.1.5's spec of each method we run (tests compare it with mergekit's own)
    "linear": MergekitMethod(shared={"normalize": True}, per_model={"weight": REQUIRED},
                             ignored=("int8_mask",), base_is_input=True),
    "multislerp": MergekitMethod(shared={"normalize_weights": True, "eps": 1e-8}, per_model={"weight": REQUIRED},
                                 ignored=("int8_mask", "normalize")),
    "task_arithmetic": _task_arithmetic_family(False, False, no_effect=("int8_mask", "rescale", "density")),
    "ties": _task_arithmetic_family(True, False, only={"lambda": 1.0, "rescale": False}),
    "dare_ties": _task_arithmetic_family(False, True),
    "dare_linear": _task_arithmetic_family(False, True),
}


@dataclass
class MergekitPlan:
    """A configuration read and checked; model names not yet resolved to folders."""
    file: Path
    mergekit_method: str
    method: str  # ours
    models: list[str]
    base: str | None
    weights: list[float]
    params: dict[str, Any]
    dtype: str | None  # None: the models' own
    accepted_without_effect: list[str]


def published_id(name: str) -> str:
    """The spelling of a Hub id as the authors publish it: their files name `liu-nlp/HyperLlama-572M-...`,
    the Hub lists `liu-nlp/hyperllama-572m-...`. The Hub resolves either, but its local cache (and offline
    snapshots and mirrors) keys on the exact spelling, so we fetch the published one. Other ids keep their
    spelling: their published form may well be mixed case."""
    repo, at, revision = name.partition("@")
    owner, slash, rest = repo.partition("/")
    if slash and owner.lower() == "liu-nlp" and rest.lower().startswith("hyperllama-"):
        repo = repo.lower()
    return repo + at + revision


# ---------------------------------------------------------------- reading and checking the file

def _fail(file: Path, message: str) -> MergeError:
    return MergeError(f"{file}: {message}")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MergeError(f"{path}: mergekit configuration not found")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _fail(path, f"not YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(config, dict):
        raise _fail(path, "not a mergekit configuration (expected a mapping with merge_method and models)")
    return config


def _check_keys(file: Path, config: dict) -> None:
    for key in config:
        if key in REFUSED_KEYS:
            raise _fail(file, f"mergekit key {key!r} is not supported: {REFUSED_KEYS[key]}")
        if key not in TOP_LEVEL_KEYS:
            raise _fail(file, f"unknown mergekit key {key!r}; supported: {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("merge_method", "models"):
        if key not in config:
            raise _fail(file, f"no {key!r}")


def _method(file: Path, name: Any) -> tuple[str, MergekitMethod]:
    ours = {m.mergekit_name: m.name for m in METHODS.values() if m.mergekit_name}
    if name not in ours or name not in MERGEKIT_METHODS:
        supported = ", ".join(n for n in MERGEKIT_METHODS if n in ours)
        raise _fail(file, f"merge_method {name!r} is not supported; supported: {supported}")
    return ours[name], MERGEKIT_METHODS[name]


def _scalar(file: Path, where: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(value, (list, dict)):
        raise _fail(file, f"{where}.{key} is a {'list' if isinstance(value, list) else 'mapping'} (a gradient "
                          "or filtered values); only one value for the whole model is supported")
    want_bool = isinstance(default, bool)
    ok = isinstance(value, bool) if want_bool else isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise _fail(file, f"{where}.{key} must be {'true or false' if want_bool else 'a number'}, got {value!r}")
    return value if want_bool else float(value)


def _parameters(file: Path, where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(file, f"{where} must be a mapping of parameters, got {value!r}")
    return value


def _check_names(file: Path, where: str, given: Mapping, spec: MergekitMethod, mk_name: str,
                 allowed: Sequence[str]) -> None:
    for key in given:
        if key not in allowed:
            scope = ("is a per-model parameter" if key in spec.per_model else
                     "counts only under the top-level parameters" if key in spec.shared or key in spec.ignored else
                     "is not a parameter of it")
            raise _fail(file, f"{where}.{key}: merge_method {mk_name} takes {', '.join(allowed) or 'none'} "
                              f"here ({key} {scope})")


def _shared(file: Path, given: dict, spec: MergekitMethod, mk_name: str) -> dict[str, Any]:
    allowed = [*spec.shared, *spec.per_model, *spec.ignored]  # per-model ones set every model's default
    _check_names(file, "parameters", given, spec, mk_name, allowed)
    values = {}
    for key, default in spec.shared.items():
        value = _scalar(file, "parameters", key, given[key], default) if key in given else default
        if key in spec.only and value != spec.only[key]:
            raise _fail(file, f"parameters.{key}: only {key} {spec.only[key]} is supported, got {value}")
        values[key] = value
    return values


def _model_entry(file: Path, i: int, entry: Any) -> tuple[str, dict]:
    where = f"models[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise _fail(file, f"{where} must be a mapping with model: NAME, got {entry!r}")
    for key in entry:
        if key not in MODEL_KEYS:
            raise _fail(file, f"{where}: unknown key {key!r}; supported: {', '.join(MODEL_KEYS)}")
    name = entry["model"]
    if "+" in name:
        raise _fail(file, f"{where}.model {name!r}: LoRA models (model+adapter) are not supported")
    return name, _parameters(file, f"{where}.parameters", entry.get("parameters"))


def _per_model(file: Path, i: int, given: dict, top: dict, spec: MergekitMethod, mk_name: str) -> dict:
    where = f"models[{i}].parameters"
    _check_names(file, where, given, spec, mk_name, list(spec.per_model))
    values = {}
    for key, default in spec.per_model.items():
        source, value = (where, given[key]) if key in given else ("parameters", top.get(key, default))
        if value is REQUIRED:
            raise _fail(file, f"models[{i}] has no {key} (mergekit requires one: give it under the model's "
                              "parameters or the top-level parameters)")
        values[key] = _scalar(file, source, key, value, default)
    return values


def _models(file: Path, entries: list, base: str | None, top: dict, spec: MergekitMethod,
            mk_name: str) -> tuple[list[str], list[dict], set[str]]:
    """The models merged (names), each one's parameters, and every parameter name the file gives."""
    models, per_model, given_keys = [], [], set(top)
    for i, entry in enumerate(entries):
        name, given = _model_entry(file, i, entry)
        given_keys |= set(given)
        if name in models:
            raise _fail(file, f"models[{i}]: {name!r} is listed twice (mergekit refuses duplicate inputs)")
        if name == base and not spec.base_is_input:
            continue  # mergekit takes a listed base_model as the base, not as one more task vector
        models.append(name)
        per_model.append(_per_model(file, i, given, top, spec, mk_name))
    if base is not None and spec.base_is_input and base not in models:
        if "weight" not in top:
            raise _fail(file, f"base_model of a {mk_name} merge: mergekit merges it as one more input and needs "
                              "its weight under the top-level parameters; give one or drop base_model")
        models.append(base)
        per_model.append({"weight": _scalar(file, "parameters", "weight", top["weight"], 1.0)})
    if not models:
        raise _fail(file, "no model to merge besides the base_model")
    return models, per_model, given_keys


def plan(path: str | Path) -> MergekitPlan:
    """Read and check a mergekit configuration; a MergeError naming the file and key if we cannot run it."""
    file = Path(path)
    config = load_yaml(file)
    _check_keys(file, config)
    mk_name = config["merge_method"]
    method, spec = _method(file, mk_name)
    top = _parameters(file, "parameters", config.get("parameters"))
    shared = _shared(file, top, spec, mk_name)
    base = config.get("base_model")
    if base is not None and not isinstance(base, str):
        raise _fail(file, f"base_model must be a model name, got {base!r}")
    if METHODS[method].needs_base and base is None:
        raise _fail(file, f"merge_method {mk_name} needs a base_model")
    entries = config["models"]
    if not isinstance(entries, list) or not entries:
        raise _fail(file, "models must be a non-empty list of {model: NAME, parameters: {...}}")
    models, per_model, given_keys = _models(file, entries, base, top, spec, mk_name)
    return MergekitPlan(file, mk_name, method, models, base, [p["weight"] for p in per_model],
                        _our_params(method, spec, shared, per_model), _dtype(file, config),
                        sorted({*spec.no_effect, *spec.ignored} & given_keys))


def _our_params(method: str, spec: MergekitMethod, shared: dict, per_model: list[dict]) -> dict[str, Any]:
    params = {k: v for k, v in shared.items() if k in METHODS[method].parameters and k not in spec.no_effect}
    for key in spec.per_model:
        if key == "weight" or key in spec.no_effect:
            continue
        values = [p[key] for p in per_model]
        params[key] = values[0] if len(set(values)) == 1 else values
    return params


def _dtype(file: Path, config: dict) -> str | None:
    """The output dtype: out_dtype, else dtype, else (None) the models' own."""
    for key in ("dtype", "out_dtype"):
        if config.get(key) is not None and config[key] not in DTYPES:
            raise _fail(file, f"{key} {config[key]!r} is not supported; valid choices: {', '.join(DTYPES)}")
    return config.get("out_dtype") or config.get("dtype")


# ---------------------------------------------------------------- finding the models

def parse_maps(pairs: Sequence[str]) -> dict[str, Path]:
    """--map NAME=DIR options as {NAME: DIR}."""
    maps = {}
    for pair in pairs:
        name, eq, folder = pair.partition("=")
        if not eq or not name.strip() or not folder.strip():
            raise MergeError(f"--map expects NAME=DIR, got {pair!r}")
        maps[name.strip()] = Path(folder.strip()).expanduser()
    return maps


def resolve_model(name: str, file: Path, maps: Mapping[str, Path]) -> tuple[Path, dict]:
    """The folder of a model name of the configuration, and where it came from."""
    for key, folder in maps.items():
        if key == name or published_id(key) == published_id(name):
            if not folder.is_dir():
                raise MergeError(f"--map {key}={folder}: no such folder")
            return folder, {"map": str(folder)}
    candidates = [Path(name).expanduser()] if Path(name).expanduser().is_absolute() else \
        [file.parent / name, Path.cwd() / name]
    for folder in candidates:
        if folder.is_dir():
            return folder, {"folder": str(folder.resolve())}
    looked = " and ".join(str(c) for c in candidates)
    repo, _, revision = published_id(name).partition("@")
    if not HUB_ID.fullmatch(repo):
        raise _fail(file, f"model {name!r}: no such folder ({looked}) and not a Hub id (owner/name)")
    from ..models import released

    try:
        folder = released.download(repo, revision or None)
    except ReleasedModelError as e:
        raise ReleasedModelError(f"{file}: model {name!r} is no folder here ({looked}), and {e}") from None
    if not any(folder.glob("*.safetensors")):
        raise ReleasedModelError(f"{file}: model {name!r}: {repo} has no *.safetensors weights "
                                 "(.bin pickles are never loaded)")
    return folder, {"repo_id": repo, "revision": revision or "main", "folder": str(folder)}


def _input_dtype(folder: Path) -> str:
    """The dtype of a model's first tensor, mergekit's dtype when a configuration names none."""
    files = tensor_files(folder)
    name = min(files)
    with safe_open(files[name], framework="pt") as f:
        dtype = str(f.get_slice(name).get_dtype())
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    if dtype not in names:
        raise MergeError(f"{folder}: tensors of dtype {dtype}; give dtype: (one of {', '.join(DTYPES)})")
    return names[dtype]


# ---------------------------------------------------------------- running it

def run(path: str | Path, out_dir: str | Path, maps: Mapping[str, Path] | None = None, seed: int | None = None,
        overwrite: bool = False, progress: bool = False) -> tuple[Path, MergekitPlan]:
    """Merge as the configuration at `path` says into `out_dir`; `seed` is mergekit's --random-seed (DARE)."""
    p = plan(path)
    params = dict(p.params)
    random = "seed" in METHODS[p.method].parameters
    if seed is not None and not random:
        raise _fail(p.file, f"merge_method {p.mergekit_method} draws nothing at random; --seed is for "
                            "dare_ties and dare_linear")
    if random:
        params["seed"] = seed or 0
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    maps = maps or {}
    names = ([p.base] if p.base is not None else []) + [m for m in p.models if m != p.base]
    found = {name: resolve_model(name, p.file, maps) for name in names}
    folders = [found[m][0] for m in p.models]
    base = found[p.base][0] if p.base is not None else None
    provenance = {"mergekit_config": str(p.file.resolve()),
                  "sha256": hashlib.sha256(p.file.read_bytes()).hexdigest(),
                  "merge_method": p.mergekit_method, "models": {name: where for name, (_, where) in found.items()},
                  "accepted_without_effect": p.accepted_without_effect}
    try:
        merged = merge_models(p.method, folders, out, base_dir=base, weights=p.weights,
                              dtype=p.dtype or _input_dtype(base or folders[0]), overwrite=overwrite,
                              progress=progress, random_stream="mergekit", provenance=provenance, **params)
    except MergeError as e:  # models that cannot be merged: say which configuration named them
        raise MergeError(f"{p.file}: {e}") from None
    return merged, p
