"""Model merging with mergekit 0.1.5 semantics, streamed tensor by tensor from safetensors.

The methods are in `merging/methods/` (one module each; `METHODS` is the registry):
linear, task_arithmetic, ties, dare_ties, dare_linear and multislerp. Each declares its base policy
(required, optional or ignored), its parameters with defaults (the paper's: density 0.5, normalize
true; weight 1.0 per model) and whether it needs per-model importance tensors (`needs_importance`:
`merge_models(..., importances=[one safetensors file per model])` then streams the same-named
importance tensor with each model tensor and calls fn(..., importances=[float32 tensors])).

The math is per tensor (`merge_tensors`) in float32, cast to the output dtype at the end (mergekit
computes in its `dtype`; `mergekit_config.yml` sets dtype float32 and out_dtype to ours, so it
reproduces our merge). `merge_models` merges one tensor name at a time, reading each model's copy
only when the method asks for it (plus the base and the importance files), and writes each merged
tensor to the output file as soon as it is computed: memory holds a few tensors of one name, never
a whole model (TIES on five 180M models: 3.3 GB peak RSS against mergekit's 7.0 GB, at 0.13-0.18x
its wall time; benchmarks/RESULTS.md).

Differences from mergekit 0.1.5, all deliberate:
- TIES keeps the top k = max(1, int(density * numel)) entries as mergekit does, but breaks ties at
  the k-th magnitude by flat index (mergekit's argsort leaves that order to the sort
  implementation). On large tensors a few entries tied at the threshold can therefore differ.
- DARE (dare_ties, dare_linear) keeps each entry with probability density and, with rescale (on by
  default, as in mergekit), scales the kept entries so the task vector keeps its L1 norm, as
  mergekit 0.1.5 does (older mergekit and the DARE paper divide by density; the factors agree in
  expectation). By default the random masks come from a generator seeded by `tensor_seed(seed,
  name)`, so they are reproducible and independent of tensor order, but not mergekit's random
  stream. With random_stream="mergekit" they are mergekit's: one generator seeded once with seed,
  drawn tensor by tensor in sorted name order (mergekit's executor runs the tensors in that order)
  and model by model, so `mergekit-yaml --random-seed SEED` on CPU draws the same masks.
- density (one for all models, or one per model as in mergekit) must lie in [0, 1]. density 0
  drops every task vector (the merge is the base), as in mergekit; density 1 keeps everything.
  mergekit also takes density > 1 (same as 1); we refuse it.
- linear refuses weights that sum to 0 with normalize (mergekit divides by zero), and ignores the
  base model (mergekit would add a base_model given for linear to the inputs; our mergekit config
  leaves it out).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import yaml

from ..artifacts import atomic
from ..artifacts.checkpoints import (  # noqa: F401  (tensor_files, tensor_shapes: re-exported)
    TOKENIZER_FILES,
    SafetensorsReader,
    file_tensors,
    read_config,
    read_shapes,
    tensor_files,
    tensor_shapes,
    tokenizer_hash,
    write_safetensors,
)
from ..errors import MergeError, ModelFolderError  # noqa: F401  (defined in errors.py)
from ..progress import tqdm
from .methods import METHODS, MergeMethod
from .methods._base import magnitude_prune, per_model_values, random_prune  # noqa: F401  (re-exported)

Tensor = torch.Tensor

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RANDOM_STREAMS = ("per_tensor", "mergekit")  # how DARE draws its masks; see the module docstring
# Config fields that must agree for tensors to be merged meaningfully.
ARCH_KEYS = (
    "model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "hidden_act",
    "tie_word_embeddings", "lm_head_normalization_factor",
)
# mergekit reads these per model (under each model's `parameters`); the rest are shared.
_MERGEKIT_PER_MODEL = ("weight", "density")
_NOT_IN_MERGEKIT = ("seed",)  # mergekit seeds its global RNG instead (mergekit-yaml --random-seed)


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise MergeError(f"unknown merge method {name!r}; valid choices: {', '.join(METHODS)}")
    return METHODS[name]


def resolve_params(method: str | MergeMethod, params: dict[str, Any],
                   n_models: int | None = None) -> dict[str, Any]:
    """The method's parameters: its defaults updated with `params`, type- and range-checked.

    Parameters that only other methods take are ignored (one call can serve every method, as in
    pipeline/merge.py); a name no method takes is an error. A parameter the method takes per model
    (`MergeMethod.per_model`, e.g. density) may be a list with one value per model (`n_models`).
    """
    m = get_method(method) if isinstance(method, str) else method
    known = {k for other in METHODS.values() for k in other.parameters} | set(m.parameters)
    for key in params:
        if key not in known:
            raise MergeError(f"unknown merge parameter {key!r}; {m.name} takes: "
                             f"{', '.join(m.parameters) or 'none'}")
    out = {}
    for key, default in m.parameters.items():
        value = params.get(key, default)
        if key in m.per_model and isinstance(value, (list, tuple)):
            if n_models is not None and len(value) != n_models:
                raise MergeError(f"merge parameter {key} of {m.name}: got {len(value)} values for "
                                 f"{n_models} models")
            out[key] = [_checked(m, key, default, v) for v in value]
        else:
            out[key] = _checked(m, key, default, value)
    densities = out.get("density", [])
    for density in densities if isinstance(densities, list) else [densities]:
        if not 0 <= density <= 1:
            raise MergeError(f"density must be in [0, 1] (0 keeps no task-vector entry, 1 keeps all), "
                             f"got {density}")
    if "eps" in out and not out["eps"] > 0:
        raise MergeError(f"eps must be > 0, got {out['eps']}")
    return out


def _checked(m: MergeMethod, key: str, default: Any, value: Any) -> Any:
    """value, if it has the default's type (an int passes for a float and becomes one)."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise MergeError(f"merge parameter {key} of {m.name} must be a "
                         f"{type(default).__name__}, got {value!r}")
    return value


def tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed independent of tensor order, for methods with randomness (DARE)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise MergeError(f"got {len(weights)} weights for {n} models")
    return [float(w) for w in weights]


def _call(m: MergeMethod, tensors: Sequence[Tensor], base: Tensor | None, weights: list[float],
          name: str, params: dict[str, Any], importances: Sequence[Tensor] | None,
          generator: torch.Generator | None = None) -> Tensor:
    if "seed" in params:
        params = {**params, "seed": tensor_seed(params["seed"], name)}
        if generator is not None:
            params["generator"] = generator
    if m.needs_importance:
        params = {**params, "importances": [i.to(torch.float32) for i in importances]}
    w = torch.tensor(weights, dtype=torch.float32)
    return m.fn(tensors, base if m.base != "ignored" else None, w, **params)


def merge_tensors(method: str, tensors: Sequence[Tensor], base: Tensor | None = None,
                  weights: Sequence[float] | None = None, *, name: str = "",
                  importances: Sequence[Tensor] | None = None, **params: Any) -> Tensor:
    """Merge one tensor across models (float32 result). `name` seeds DARE's random drop."""
    m = get_method(method)
    if not tensors:
        raise MergeError("nothing to merge: no tensors given")
    if m.needs_base and base is None:
        raise MergeError(f"merge method {method!r} needs a base model")
    if m.needs_importance and (importances is None or len(importances) != len(tensors)):
        raise MergeError(f"merge method {method!r} needs one importance tensor per model")
    return _call(m, list(tensors), base, _weights(weights, len(tensors)), name,
                 resolve_params(m, params, len(tensors)), importances)


def merge_state_dicts(method: str, tensors_by_model: Sequence[dict[str, Tensor]],
                      base: dict[str, Tensor] | None = None, weights: Sequence[float] | None = None,
                      **params: Any) -> dict[str, Tensor]:
    """Merge in-memory state dicts with identical keys (float32 results)."""
    return {
        name: merge_tensors(method, [sd[name] for sd in tensors_by_model],
                            None if base is None else base[name], weights, name=name, **params)
        for name in tensors_by_model[0]
    }


# ---------------------------------------------------------------- can these folders be merged

def importance_files(path: str | Path) -> dict[str, Path]:
    """Tensor name -> file for an importance checkpoint: a .safetensors file or a model-like folder."""
    path = Path(path)
    if path.is_dir():
        return tensor_files(path)
    if not path.is_file():
        raise MergeError(f"{path}: importance file does not exist")
    return file_tensors(path)


def _compare_shapes(ref: Path, ref_shapes: dict, other: Path, shapes: dict) -> None:
    if set(shapes) != set(ref_shapes):
        diff = sorted(set(shapes) ^ set(ref_shapes))
        raise MergeError(f"tensor names differ between {ref} and {other}: "
                         f"{len(diff)} not in both, e.g. {diff[0]}")
    for name, shape in ref_shapes.items():
        if shapes[name] != shape:
            raise MergeError(f"shape mismatch for {name}: {ref} has {list(shape)} "
                             f"but {other} has {list(shapes[name])}")


def check_compatible(model_dirs: Sequence[Path]) -> None:
    """Raise a one-line MergeError naming the first pair of folders that cannot be merged."""
    ref = Path(model_dirs[0])
    ref_config, ref_shapes, ref_tok = read_config(ref), tensor_shapes(ref), tokenizer_hash(ref)
    for other in map(Path, model_dirs[1:]):
        config = read_config(other)
        for key in ARCH_KEYS:
            if ref_config.get(key) != config.get(key):
                what = "vocabulary" if key == "vocab_size" else "architecture"
                raise MergeError(f"{what} mismatch: {ref} has {key}={ref_config.get(key)!r} "
                                 f"but {other} has {key}={config.get(key)!r}")
        _compare_shapes(ref, ref_shapes, other, tensor_shapes(other))
        if tokenizer_hash(other) != ref_tok:
            raise MergeError(f"tokenizer mismatch: {ref} and {other} have different tokenizer files")


# ---------------------------------------------------------------- mergekit config

def mergekit_yaml(method: str, model_dirs: Sequence[str | Path], base_dir: str | Path | None = None,
                  weights: Sequence[float] | None = None, dtype: str = "float32",
                  random_stream: str = "per_tensor", **params: Any) -> str:
    """The mergekit (0.1.5) config for the same merge: `mergekit-yaml THIS_FILE OUT_DIR`.

    Computation is float32 (our merge's) and out_dtype is `dtype`. The seed is not a mergekit
    parameter: DARE masks of a mergekit run follow its own RNG (`--random-seed`), which draws ours
    only with random_stream="mergekit" (see the module docstring).
    """
    m = get_method(method)
    if m.mergekit_name is None:
        raise MergeError(f"merge method {method!r} has no mergekit equivalent")
    if dtype not in DTYPES:
        raise MergeError(f"unknown dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
    resolved = resolve_params(m, params, len(model_dirs))
    per_model = {k: per_model_values(v, len(model_dirs))
                 for k, v in resolved.items() if k in _MERGEKIT_PER_MODEL}
    shared = {k: v for k, v in resolved.items()
              if k not in _MERGEKIT_PER_MODEL and k not in _NOT_IN_MERGEKIT}
    config: dict[str, Any] = {"merge_method": m.mergekit_name}
    if base_dir is not None and m.base != "ignored":
        config["base_model"] = str(Path(base_dir).resolve())
    config["models"] = [{"model": str(Path(d).resolve()),
                         "parameters": {"weight": w, **{k: v[i] for k, v in per_model.items()}}}
                        for i, (d, w) in enumerate(zip(model_dirs, _weights(weights, len(model_dirs))))]
    if shared:
        config["parameters"] = shared
    config["dtype"] = "float32"
    config["out_dtype"] = dtype
    notes = [f"# mergekit 0.1.5 config of hyperllama's {method} merge: mergekit-yaml THIS_FILE OUT_DIR"]
    if "seed" in resolved and random_stream == "mergekit":
        notes.append(f"# random drop: drawn as mergekit draws it; on CPU, mergekit-yaml --random-seed "
                     f"{resolved['seed']} THIS_FILE OUT_DIR draws the same masks")
    elif "seed" in resolved:
        notes.append(f"# random drop: ours is seeded per tensor name from seed {resolved['seed']}; "
                     "mergekit draws its own masks (--random-seed)")
    return "\n".join(notes) + "\n" + yaml.safe_dump(config, sort_keys=False)


# ---------------------------------------------------------------- merging folders

class _LazyTensors(Sequence[Tensor]):
    """One tensor name across models, read from disk on each access: a method that walks the
    models once holds one model's copy at a time."""

    def __init__(self, read: Callable[[Path, str], Tensor], paths: list[Path], name: str) -> None:
        self.read, self.paths, self.name = read, paths, name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.read(p, self.name) for p in self.paths[i]]
        return self.read(self.paths[i], self.name)


def merge_models(method: str, model_dirs: Sequence[str | Path], out_dir: str | Path,
                 base_dir: str | Path | None = None, weights: Sequence[float] | None = None, *,
                 importances: Sequence[str | Path] | None = None, dtype: str = "float32",
                 overwrite: bool = False, progress: bool = False, random_stream: str = "per_tensor",
                 provenance: dict | None = None, **params: Any) -> Path:
    """Merge save_pretrained folders into `out_dir`; returns its path.

    params are the method's parameters (density, normalize, seed, ...; see `resolve_params`).
    importances: one safetensors file (or folder) per model with the model's tensor names and
    shapes, for methods that need them. random_stream: "per_tensor" or "mergekit", how DARE draws
    its masks (module docstring). provenance: recorded in merge.json as "source" (e.g. the
    mergekit config a merge came from). All inputs are checked (architecture, tensor names and
    shapes, tokenizer, parameters) before any tensor is read. The output is built in a temporary
    sibling folder and renamed into place, so a crash leaves no half model. It holds
    model.safetensors, config.json, tokenizer and generation files from the base (else the first
    model), merge.json (what was merged how) and mergekit_config.yml (the same merge for mergekit).
    """
    m = get_method(method)
    models = [Path(d) for d in model_dirs]
    base = Path(base_dir) if base_dir is not None else None
    out = Path(out_dir)
    if not models:
        raise MergeError("merge_models needs at least one model folder")
    if m.needs_base and base is None:
        raise MergeError(f"merge method {method!r} needs a base model (base_dir)")
    weights = _weights(weights, len(models))
    if dtype not in DTYPES:
        raise MergeError(f"unknown dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
    resolved = resolve_params(m, params, len(models))
    if random_stream not in RANDOM_STREAMS:
        raise MergeError(f"unknown random_stream {random_stream!r}; valid choices: {', '.join(RANDOM_STREAMS)}")
    if m.needs_importance and importances is None:
        raise MergeError(f"merge method {method!r} needs importances (one file per model)")
    if importances is not None and not m.needs_importance:
        raise MergeError(f"merge method {method!r} does not use importances")
    if importances is not None and len(importances) != len(models):
        raise MergeError(f"got {len(importances)} importance files for {len(models)} models")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True to replace it)")
    check_compatible(models + ([base] if base is not None else []))
    shapes = dict(sorted(tensor_shapes(models[0]).items()))
    importance_maps = [importance_files(p) for p in importances or []]
    for path, files in zip(importances or [], importance_maps):
        _compare_shapes(models[0], shapes, Path(path), read_shapes(files))

    manifest = {"method": method, "models": [str(p) for p in models],
                "base": None if base is None else str(base), "weights": weights,
                "parameters": resolved, "dtype": dtype}
    if importances is not None:
        manifest["importances"] = [str(p) for p in importances]
    if random_stream != "per_tensor" and "seed" in resolved:
        manifest["random_stream"] = random_stream
    if provenance is not None:
        manifest["source"] = provenance
    config_yaml = None
    if m.mergekit_name is not None:
        config_yaml = mergekit_yaml(method, models, base, weights, dtype, random_stream, **resolved)
        manifest["mergekit_config"] = "mergekit_config.yml"

    with atomic.replace_dir(out) as tmp:
        with ExitStack() as stack:
            generator = (torch.Generator().manual_seed(resolved["seed"])
                         if random_stream == "mergekit" and "seed" in resolved else None)
            merged = _merge_streamed(stack, m, models, base, importance_maps, weights, resolved,
                                     shapes, DTYPES[dtype], progress, generator)
            write_safetensors(tmp / "model.safetensors", shapes, DTYPES[dtype], merged)
        _write_metadata(tmp, base or models[0], dtype, manifest, config_yaml)
    return out


def _merge_streamed(stack: ExitStack, m: MergeMethod, models: list[Path], base: Path | None,
                    importance_maps: list[dict[str, Path]], weights: list[float],
                    params: dict[str, Any], shapes: dict[str, tuple[int, ...]],
                    out_dtype: torch.dtype, progress: bool,
                    generator: torch.Generator | None = None) -> Iterator[tuple[str, Tensor]]:
    """Yield (name, merged tensor in out_dtype) in the order of `shapes`, one name in memory at a time;
    a random method draws from `generator` across tensors where one is given."""
    files = [tensor_files(d) for d in models]
    base_files = tensor_files(base) if base is not None and m.base != "ignored" else None
    readers: dict[Path, SafetensorsReader] = {}

    def read(path: Path, name: str) -> Tensor:
        if path not in readers:
            readers[path] = SafetensorsReader(path)
            stack.callback(readers[path].close)
        return readers[path].get_tensor(name)

    for name in tqdm(shapes, desc=f"merging ({m.name})", disable=not progress):
        tensors = _LazyTensors(read, [f[name] for f in files], name)
        base_tensor = read(base_files[name], name) if base_files is not None else None
        importances = [read(f[name], name) for f in importance_maps] or None
        try:
            merged = _call(m, tensors, base_tensor, weights, name, params, importances, generator)
        except ModelFolderError:  # a damaged input file, not a merge problem
            raise
        except ValueError as e:
            raise MergeError(f"{name}: {e}") from None
        del tensors, base_tensor, importances
        yield name, merged.to(out_dtype)


def _write_metadata(tmp: Path, source: Path, dtype: str, manifest: dict,
                    config_yaml: str | None) -> None:
    config = read_config(source)
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = dtype
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for fname in TOKENIZER_FILES + ("generation_config.json",):
        if (source / fname).is_file():
            shutil.copy2(source / fname, tmp / fname)
    (tmp / "merge.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if config_yaml is not None:
        (tmp / "mergekit_config.yml").write_text(config_yaml)
