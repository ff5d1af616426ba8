"""peft LoRA adapters as merge inputs: their dense weight deltas, and peft's own exact merges.

The registry's methods (`engine.merge_models`) merge adapters through the folded full models
(`merge_and_unload`, saved beside each adapter) and the base: every method then works on the dense
deltas theta_i - base, so TIES and DARE mean what they mean for full models. `dense_deltas` gives
those deltas straight from an adapter folder.

`peft_merge` runs peft's `add_weighted_adapter` for the two combinations that are functions of the
dense deltas alone:
- `cat`: the weighted sum of the deltas, exactly (the merged adapter has rank sum r_i). It equals our
  `task_arithmetic` with normalize false and the same weights on the folded models, and our `linear`
  (or `task_arithmetic`) with normalize true equals `cat` with weights w_i / sum(w)
  (tests/test_adapter_merging.py, within 1e-5 in fp32).
- `svd`: the same weighted sum truncated per layer to rank `svd_rank` by SVD (the best rank-k
  approximation of it; with svd_rank >= sum r_i it equals `cat`).

peft's other combinations are not offered, as they are not functions of the deltas. Its `ties`,
`dare_ties`, `dare_linear` and `magnitude_prune` (peft/utils/merge_utils.py, used on LoRA factors
by LoraModel._generalized_task_arithmetic_weighted_adapter) differ from mergekit's and ours in three
ways: (1) they merge the factors A and B separately (each scaled by sqrt(w_i * scaling_i)) and take
the product of the merged factors, so the result depends on how each delta is factorised: two
adapters (B, A) and (-B, -A) with the same delta merge to |B| |A| under TIES with density 1,
instead of to that delta; (2) the sign is elected on the sum of the unweighted tensors (mergekit:
the weighted ones); (3) the disjoint mean divides by the number of agreeing tasks (mergekit's
normalize: by the sum of their weights). peft's `linear` is sum_i sqrt(w_i s_i) B_i times
sum_i sqrt(w_i s_i) A_i, which has cross terms B_i A_j and is no weighted sum of the deltas.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Sequence

import torch

from ..artifacts import atomic
from ..artifacts.checkpoints import TOKENIZER_FILES, tensor_shapes
from ..errors import MergeError

Tensor = torch.Tensor

MIN_PEFT = (0, 19)  # peft 0.19 fixed DARE's rescaling in add_weighted_adapter
PEFT_COMBINATIONS = ("cat", "svd")
PEFT_METHODS = tuple(f"peft_{c}" for c in PEFT_COMBINATIONS)  # their names as 04_merge methods (LoRA setups)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def require_peft() -> None:
    """Raise a one-line MergeError unless peft >= 0.19 is importable."""
    try:
        import peft
    except ImportError:
        raise MergeError("merging adapters needs peft >= 0.19 (pip install 'peft>=0.19')") from None
    parts = []
    for part in peft.__version__.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    if tuple(parts) < MIN_PEFT:
        raise MergeError(f"merging adapters needs peft >= 0.19 (its DARE rescaling fix); "
                         f"found peft {peft.__version__}")


def adapter_config(adapter_dir: str | Path) -> dict:
    """The adapter's parsed adapter_config.json, after checking that it is a LoRA adapter folder
    with safetensors weights (a .bin adapter would be unpickled, so it is refused)."""
    folder = Path(adapter_dir)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise MergeError(f"{folder}: no {ADAPTER_CONFIG} (not a peft adapter folder)")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise MergeError(f"{folder}: no {ADAPTER_WEIGHTS} (.bin adapters are never loaded)")
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise MergeError(f"{folder / ADAPTER_CONFIG}: not valid JSON ({e.msg})") from None
    if config.get("peft_type") != "LORA":
        raise MergeError(f"{folder}: peft_type {config.get('peft_type')!r}, only LORA adapters are merged")
    return config


def _recorded_base(config: dict) -> str | None:
    """The base an adapter records, resolved where it is a folder (so relative paths compare)."""
    name = config.get("base_model_name_or_path")
    if not name:
        return None
    return str(Path(name).resolve()) if Path(name).is_dir() else str(name)


def _check_same_base(adapter_dirs: Sequence[Path]) -> None:
    recorded = [(d, _recorded_base(adapter_config(d))) for d in adapter_dirs]
    known = [(d, b) for d, b in recorded if b is not None]
    for d, b in known[1:]:
        if b != known[0][1]:
            raise MergeError(f"adapters on different bases: {known[0][0]} was trained on {known[0][1]} "
                             f"but {d} on {b}")


def load_adapters(base_dir: str | Path, adapter_dirs: Sequence[str | Path]):
    """(PeftModel on the fp32 base with each adapter loaded as "a0", "a1", ..., adapter names).

    An adapter whose tensors do not fit the base (another model size) is a one-line MergeError."""
    require_peft()
    from peft import PeftModel

    from ..models.modeling import load_model

    dirs = [Path(d) for d in adapter_dirs]
    if not dirs:
        raise MergeError("no adapter folders given")
    _check_same_base(dirs)
    base = load_model(base_dir)
    names = [f"a{i}" for i in range(len(dirs))]
    model = None
    for name, folder in zip(names, dirs):
        try:
            if model is None:
                model = PeftModel.from_pretrained(base, str(folder), adapter_name=name)
            else:
                model.load_adapter(str(folder), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MergeError(f"adapter {folder} does not fit base {base_dir}: {first}") from None
    return model.eval(), names


def _lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer

    inner = peft_model.base_model.model
    for module_name, module in inner.named_modules():
        if isinstance(module, LoraLayer):
            yield module_name, module


@torch.no_grad()
def dense_deltas(base_dir: str | Path, adapter_dir: str | Path) -> dict[str, Tensor]:
    """Tensor name (as in the base's safetensors) -> fp32 weight delta of a peft adapter.

    LoRA layers give scaling * B @ A (`get_delta_weight`, exact in fp32: no base weight is added
    and subtracted). Any other tensor the adapter changes (trainable tokens, modules_to_save) is
    taken as folded minus base. Tensors absent from the result are unchanged by the adapter.
    """
    base_names = tensor_shapes(Path(base_dir))
    model, (name,) = load_adapters(base_dir, [adapter_dir])
    deltas: dict[str, Tensor] = {}
    for module_name, layer in _lora_layers(model):
        if name not in layer.lora_A and name not in layer.lora_embedding_A:
            continue
        key = f"{module_name}.weight"
        delta = layer.get_delta_weight(name).float()
        if key not in base_names or tuple(delta.shape) != tuple(base_names[key]):
            raise MergeError(f"adapter {adapter_dir}: LoRA layer {module_name} has no matching tensor in {base_dir}")
        deltas[key] = delta
    before = {k: v.detach().clone() for k, v in model.base_model.model.state_dict().items()
              if k in base_names and k not in deltas and ".lora_" not in k}
    folded = model.merge_and_unload().state_dict()
    for key, original in before.items():
        if key in folded and not torch.equal(folded[key], original):
            deltas[key] = folded[key].float() - original.float()
    return deltas


def _check_merge_args(adapter_dirs: Sequence, weights: Sequence[float] | None, combination_type: str,
                      svd_rank: int | None) -> list[float]:
    if combination_type not in PEFT_COMBINATIONS:
        raise MergeError(f"unknown peft combination_type {combination_type!r}; valid choices: "
                         f"{', '.join(PEFT_COMBINATIONS)} (for ties/dare use merge_models on the folded models)")
    if weights is None:
        weights = [1.0] * len(adapter_dirs)
    if len(weights) != len(adapter_dirs):
        raise MergeError(f"got {len(weights)} weights for {len(adapter_dirs)} adapters")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise MergeError(f"adapter weights must be finite numbers, got {list(weights)}")
    if svd_rank is not None and (combination_type != "svd" or isinstance(svd_rank, bool)
                                 or not isinstance(svd_rank, int) or svd_rank < 1):
        raise MergeError(f"svd_rank must be a positive integer and only goes with combination_type svd, "
                         f"got {svd_rank!r} with {combination_type}")
    return [float(w) for w in weights]


@torch.no_grad()
def peft_merge(base_dir: str | Path, adapter_dirs: Sequence[str | Path], out_dir: str | Path,
               weights: Sequence[float] | None = None, combination_type: str = "cat", *,
               svd_rank: int | None = None, overwrite: bool = False) -> Path:
    """Merge LoRA adapters of one base with peft's `add_weighted_adapter` and save the base with
    the merged adapter folded in (a save_pretrained folder: safetensors, config, tokenizer and
    generation files copied from the base, merge.json) to `out_dir`, atomically.

    combination_type "cat": base + sum_i w_i delta_i, exact. "svd": that sum truncated per layer
    to rank `svd_rank` (default: the largest adapter rank, peft's default). weights default to 1.
    """
    out = Path(out_dir)
    dirs = [Path(d) for d in adapter_dirs]
    weights = _check_merge_args(dirs, weights, combination_type, svd_rank)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True to replace it)")
    model, names = load_adapters(base_dir, dirs)
    extra = {"svd_rank": svd_rank, "svd_full_matrices": False} if combination_type == "svd" else {}
    try:
        model.add_weighted_adapter(names, weights, "merged", combination_type=combination_type, **extra)
    except ValueError as e:
        raise MergeError(f"peft cannot {combination_type}-merge these adapters: "
                         f"{str(e).strip().splitlines()[0]}") from None
    model.set_adapter("merged")
    folded = model.merge_and_unload(adapter_names=["merged"])
    manifest = {"method": f"peft_{combination_type}", "base": str(base_dir),
                "adapters": [str(d) for d in dirs], "weights": weights,
                "parameters": {"svd_rank": svd_rank} if combination_type == "svd" else {},
                "peft_version": __import__("peft").__version__}
    with atomic.replace_dir(out) as tmp:
        folded.save_pretrained(tmp, safe_serialization=True)
        for fname in TOKENIZER_FILES + ("generation_config.json",):
            if (Path(base_dir) / fname).is_file():
                shutil.copy2(Path(base_dir) / fname, tmp / fname)
        (tmp / "merge.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out
