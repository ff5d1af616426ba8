"""Model merging with mergekit semantics: linear, task arithmetic and TIES.

Methods live in the registry `METHODS`; each declares whether it needs a base model and which
parameters it takes, so later methods (multislerp, dare_ties, ...) only add an entry.

The math is per tensor (`merge_tensors`), done in float32 and cast to the output dtype at the end
(mergekit computes in its `dtype`; the paper used fp16, so results can differ by fp16 rounding).
`merge_models` streams one tensor name at a time across all models from their safetensors files.

TIES details, as mergekit implements them (`sparsify.magnitude` + `get_mask(method="sum")`):
- Top-k: k = int(density * numel) (floor), per model and per tensor, on |delta|. Ties at the k-th
  magnitude are broken by flat (row-major) index, lower index kept first, so results are
  deterministic (mergekit's argsort leaves tie order unspecified). density >= 1 keeps everything;
  k == 0 keeps nothing, so that tensor stays at the base (mergekit asserts k > 0 instead).
- Elected sign per entry: +1 when the sum of weighted deltas is >= 0, else -1 (a zero sum elects +).
- An entry is kept when sign(weighted delta) equals the elected sign; sign(0) = 0 never matches, so
  zero (or pruned) entries add neither to the sum nor to the divisor.
- normalize: divide by the sum of the weights of the kept entries; a zero divisor becomes 1.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

Tensor = torch.Tensor
MergeFn = Callable[..., Tensor]  # fn(tensors, base, weights, **params) -> merged tensor

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Config fields that must agree for tensors to be merged meaningfully.
ARCH_KEYS = (
    "model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "hidden_act",
    "tie_word_embeddings", "lm_head_normalization_factor",
)
TOKENIZER_CONTENT_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt")
TOKENIZER_FILES = TOKENIZER_CONTENT_FILES + (
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
)


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: MergeFn
    needs_base: bool
    parameters: dict[str, Any] = field(default_factory=dict)  # name -> default


# ---------------------------------------------------------------- per-tensor math

def _stack_weights(tensors: Sequence[Tensor], weights: Tensor) -> tuple[Tensor, Tensor]:
    stacked = torch.stack([t.to(torch.float32) for t in tensors])
    w = weights.to(torch.float32).reshape(-1, *([1] * (stacked.dim() - 1)))
    return stacked, w


def linear(tensors: Sequence[Tensor], base: Tensor | None, weights: Tensor,
           normalize: bool = True) -> Tensor:
    """sum_i w_i theta_i (/ sum_i w_i). A base model, if given, is not part of the average."""
    stacked, w = _stack_weights(tensors, weights)
    merged = (w * stacked).sum(0)
    if normalize:
        total = float(weights.sum())
        if abs(total) < 1e-8:
            raise ValueError("linear merge with normalize=True needs weights that do not sum to 0")
        merged = merged / total
    return merged


def task_arithmetic(tensors: Sequence[Tensor], base: Tensor, weights: Tensor,
                    normalize: bool = True) -> Tensor:
    """base + sum_i w_i (theta_i - base) (/ sum_i w_i, a zero sum counting as 1, as mergekit)."""
    base32 = base.to(torch.float32)
    stacked, w = _stack_weights(tensors, weights)
    merged = (w * (stacked - base32)).sum(0)
    total = float(weights.sum())
    if normalize and abs(total) >= 1e-8:
        merged = merged / total
    return base32 + merged


def magnitude_prune(delta: Tensor, density: float) -> Tensor:
    """Keep the int(density * numel) largest |delta| entries, zero the rest (ties: lower index)."""
    n = delta.numel()
    k = int(density * n)
    if k >= n:
        return delta
    if k <= 0:
        return torch.zeros_like(delta)
    flat = delta.abs().reshape(-1)
    threshold = torch.kthvalue(flat, n - k + 1).values  # the k-th largest magnitude
    keep = flat > threshold
    n_missing = k - int(keep.sum())
    tied = torch.nonzero(flat == threshold).squeeze(1)[:n_missing]
    keep[tied] = True
    return delta * keep.reshape(delta.shape)


def ties(tensors: Sequence[Tensor], base: Tensor, weights: Tensor,
         density: float = 0.5, normalize: bool = True) -> Tensor:
    """TIES-merging (Yadav et al. 2023), mergekit's `ties` (see the module docstring)."""
    base32 = base.to(torch.float32)
    stacked, w = _stack_weights(tensors, weights)
    deltas = torch.stack([magnitude_prune(d, density) for d in stacked - base32])
    weighted = deltas * w
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    mask = weighted.sign() == elected
    merged = (weighted * mask).sum(0)
    if normalize:
        divisor = (w * mask).sum(0)
        merged = merged / torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return base32 + merged


METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in [
        MergeMethod("linear", linear, needs_base=False, parameters={"normalize": True}),
        MergeMethod("task_arithmetic", task_arithmetic, needs_base=True,
                    parameters={"normalize": True}),
        MergeMethod("ties", ties, needs_base=True, parameters={"density": 0.5, "normalize": True}),
    ]
}


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; valid choices: {', '.join(METHODS)}")
    return METHODS[name]


def tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed independent of tensor order, for methods with randomness (DARE)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def merge_tensors(method: str, tensors: Sequence[Tensor], base: Tensor | None = None,
                  weights: Sequence[float] | None = None, name: str = "", density: float = 0.5,
                  normalize: bool = True, seed: int = 0) -> Tensor:
    """Merge one tensor across models; returns float32. Only the method's parameters are used."""
    m = get_method(method)
    if not tensors:
        raise ValueError("nothing to merge: no tensors given")
    if m.needs_base and base is None:
        raise ValueError(f"merge method {method!r} needs a base model")
    w = torch.tensor([1.0] * len(tensors) if weights is None else list(weights), dtype=torch.float32)
    if len(w) != len(tensors):
        raise ValueError(f"got {len(w)} weights for {len(tensors)} models")
    available = {"density": density, "normalize": normalize, "seed": tensor_seed(seed, name)}
    params = {k: available[k] for k in m.parameters}
    return m.fn(list(tensors), base, w, **params)


def merge_state_dicts(method: str, tensors_by_model: Sequence[dict[str, Tensor]],
                      base: dict[str, Tensor] | None = None, weights: Sequence[float] | None = None,
                      density: float = 0.5, normalize: bool = True, seed: int = 0
                      ) -> dict[str, Tensor]:
    """Merge in-memory state dicts with identical keys (float32 results)."""
    return {
        name: merge_tensors(method, [sd[name] for sd in tensors_by_model],
                            None if base is None else base[name], weights, name=name,
                            density=density, normalize=normalize, seed=seed)
        for name in tensors_by_model[0]
    }


# ---------------------------------------------------------------- checkpoints on disk

def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{model_dir}: no config.json (not a save_pretrained folder)")
    return json.loads(path.read_text())


def tensor_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, for single-file and sharded checkpoints."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: model_dir / fname for name, fname in weight_map.items()}
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise ValueError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
    with safe_open(single, framework="pt") as f:
        return {name: single for name in f.keys()}


def tensor_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Read names and shapes from the safetensors headers without loading the tensors."""
    shapes = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in tensor_files(model_dir).items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(path, framework="pt") as f:
            for name in names:
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def tokenizer_hash(model_dir: Path) -> str | None:
    digest = hashlib.sha256()
    found = False
    for fname in TOKENIZER_CONTENT_FILES:
        path = model_dir / fname
        if path.is_file():
            found = True
            digest.update(fname.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest() if found else None


def check_compatible(model_dirs: Sequence[Path]) -> None:
    """Raise a one-line ValueError naming the first pair of folders that cannot be merged."""
    ref = model_dirs[0]
    ref_config, ref_shapes, ref_tok = _read_config(ref), tensor_shapes(ref), tokenizer_hash(ref)
    for other in model_dirs[1:]:
        config = _read_config(other)
        for key in ARCH_KEYS:
            if ref_config.get(key) != config.get(key):
                raise ValueError(f"architecture mismatch: {ref} has {key}={ref_config.get(key)!r} "
                                 f"but {other} has {key}={config.get(key)!r}")
        shapes = tensor_shapes(other)
        if set(shapes) != set(ref_shapes):
            diff = sorted(set(shapes) ^ set(ref_shapes))
            raise ValueError(f"tensor names differ between {ref} and {other}: "
                             f"{len(diff)} not in both, e.g. {diff[0]}")
        for name, shape in ref_shapes.items():
            if shapes[name] != shape:
                raise ValueError(f"shape mismatch for {name}: {ref} has {list(shape)} "
                                 f"but {other} has {list(shapes[name])}")
        if tokenizer_hash(other) != ref_tok:
            raise ValueError(f"tokenizer mismatch: {ref} and {other} have different tokenizer files")


def _write_output(tmp: Path, merged: dict[str, Tensor], source: Path, dtype: str,
                  manifest: dict) -> None:
    save_file(merged, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = _read_config(source)
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = dtype
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for fname in TOKENIZER_FILES + ("generation_config.json",):
        if (source / fname).is_file():
            shutil.copy2(source / fname, tmp / fname)
    (tmp / "merge.json").write_text(json.dumps(manifest, indent=2) + "\n")


def merge_models(method: str, model_dirs: Sequence[str | Path], out_dir: str | Path,
                 base_dir: str | Path | None = None, weights: Sequence[float] | None = None,
                 density: float = 0.5, normalize: bool = True, seed: int = 0,
                 dtype: str = "float32", overwrite: bool = False, progress: bool = False) -> Path:
    """Merge save_pretrained folders into `out_dir`; returns its path.

    All folders (models and base) are checked for identical architecture, tensor names/shapes and
    tokenizer before any tensor is read. Tensors are streamed one name at a time. The output is
    written to a temporary sibling folder and renamed into place, so a crash leaves no half model.
    config.json, tokenizer and generation files are copied from the base (else the first model).
    """
    m = get_method(method)
    models = [Path(d) for d in model_dirs]
    base = Path(base_dir) if base_dir is not None else None
    out = Path(out_dir)
    if not models:
        raise ValueError("merge_models needs at least one model folder")
    if m.needs_base and base is None:
        raise ValueError(f"merge method {method!r} needs a base model (base_dir)")
    if weights is not None and len(weights) != len(models):
        raise ValueError(f"got {len(weights)} weights for {len(models)} models")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True to replace it)")
    check_compatible(models + ([base] if base is not None else []))

    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    manifest = {"method": method, "models": [str(p) for p in models],
                "base": None if base is None else str(base), "weights": weights,
                "density": density, "normalize": normalize, "seed": seed, "dtype": dtype}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        merged = _merge_streamed(method, models, base, weights, density, normalize, seed,
                                 DTYPES[dtype], progress)
        _write_output(tmp, merged, base or models[0], dtype, manifest)
        del merged
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _merge_streamed(method: str, models: list[Path], base: Path | None, weights: list[float],
                    density: float, normalize: bool, seed: int, out_dtype: torch.dtype,
                    progress: bool) -> dict[str, Tensor]:
    files = [tensor_files(d) for d in models]
    base_files = tensor_files(base) if base is not None else None
    merged: dict[str, Tensor] = {}
    with ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def read(path: Path, name: str) -> Tensor:
            if path not in handles:
                handles[path] = stack.enter_context(safe_open(path, framework="pt"))
            return handles[path].get_tensor(name)

        for name in tqdm(sorted(files[0]), desc=f"merging ({method})", disable=not progress):
            tensors = [read(f[name], name) for f in files]
            base_tensor = read(base_files[name], name) if base_files is not None else None
            merged[name] = merge_tensors(method, tensors, base_tensor, weights, name=name,
                                         density=density, normalize=normalize,
                                         seed=seed).to(out_dtype).contiguous()
    return merged
