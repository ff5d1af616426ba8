"""Diagonal Fisher information of a causal LM, the importance weights of Fisher merging.

Fisher-weighted averaging (Matena & Raffel 2022) weights each parameter of each model by that
model's diagonal Fisher, F_j = E_x[(d log p(x) / d theta_j)^2]. For a causal LM we take:
- an example x = one window of `seq_len` tokens of the model's own training stream (the packed
  CPT stream of its language: target text plus the small replay share it was trained on); windows
  are spread evenly over the stream, `n_tokens` tokens in all;
- log p(x) = the mean log-probability of the window's next tokens (the LM loss, negated), with the
  observed tokens as labels: the "empirical" Fisher, since sampling labels from the model would
  cost a forward pass per sampled token sequence and the paper's models are trained on these
  very tokens;
- exact per-example gradients: one backward pass per window, each gradient squared before
  averaging (squaring a batch gradient would give a different, biased quantity).

The result is saved as a safetensors file with the same tensor names as the model's own
safetensors (a tied embedding appears under every name the checkpoint uses for it), so the merge
engine can stream it beside the weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..artifacts import atomic, checkpoints
from ..corpus.packing import PackedTokens
from ..errors import DataError
from ..progress import tqdm


def windows(tokens: PackedTokens, seq_len: int, n_tokens: int) -> list[np.ndarray]:
    """Evenly spaced windows of seq_len + 1 tokens (inputs and next-token labels), n_tokens in all."""
    n_blocks = (len(tokens) - 1) // seq_len
    if n_blocks < 1:
        raise DataError(f"{tokens.path} has {len(tokens)} tokens, fewer than one window of {seq_len + 1}")
    wanted = max(1, min(n_blocks, n_tokens // seq_len))
    starts = np.linspace(0, n_blocks - 1, wanted).round().astype(np.int64) * seq_len
    return [np.asarray(tokens.tokens[s:s + seq_len + 1], dtype=np.int64) for s in starts]


def diagonal_fisher(model: torch.nn.Module, examples: list[np.ndarray],
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """Mean over examples of the squared gradient of the example's mean next-token log-probability,
    per parameter (float32), keyed by every state_dict name of each parameter (tied ones included)."""
    if not examples:
        raise ValueError("diagonal_fisher needs at least one example")
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    device = params[0].device
    for window in tqdm(examples, desc="fisher", disable=not progress):
        ids = torch.as_tensor(window, device=device).unsqueeze(0)
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids[:, :-1], use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
        loss.backward()  # d(-log p)^2 == d(log p)^2
        for total, p in zip(sums, params):
            if p.grad is not None:
                total += p.grad.float() ** 2
    model.zero_grad(set_to_none=True)
    by_param = {id(p): total / len(examples) for p, total in zip(params, sums)}
    return {name: by_param[id(model.get_parameter(name))]
            for name in model.state_dict() if _is_parameter(model, name)}


def _is_parameter(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_parameter(name)
        return True
    except AttributeError:
        return False


def save_fisher(fisher: dict[str, torch.Tensor], path: str | Path, weight_names: list[str]) -> Path:
    """Write the Fisher tensors named in `weight_names` (the checkpoint's names) atomically."""
    missing = [n for n in weight_names if n not in fisher]
    if missing:
        raise ValueError(f"no Fisher for checkpoint tensor(s) {missing[:3]}")
    path = Path(path)
    tensors = {n: fisher[n].contiguous() for n in weight_names}
    with atomic.replace_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "kind": "diagonal_fisher"})
    return path


def normalize(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scale a model's Fisher to mean 1 over all its parameters (each parameter counted once), so
    that in a merge every model brings the same total importance, whatever its loss's curvature."""
    unique = {id(t): t for t in fisher.values()}
    mean = sum(float(t.sum()) for t in unique.values()) / sum(t.numel() for t in unique.values())
    if mean <= 0:
        return fisher
    scaled = {key: t / mean for key, t in unique.items()}  # tied names keep sharing one tensor
    return {name: scaled[id(t)] for name, t in fisher.items()}


def estimate_to_file(model_dir: str | Path, tokens: str | Path, out: str | Path, seq_len: int,
                     n_tokens: int, normalize_mean: bool = True, progress: bool = False) -> int:
    """Estimate a model folder's diagonal Fisher on a packed token file and save it under the
    checkpoint's tensor names (`save_fisher`); returns the number of windows used."""
    from ..models import modeling  # heavier; only this entry point needs it

    examples = windows(PackedTokens(tokens), seq_len, n_tokens)
    model = modeling.load_model(model_dir)
    top = max(int(window.max()) for window in examples)
    if top >= model.config.vocab_size:
        raise DataError(f"{tokens} holds token id {top}, beyond the {model.config.vocab_size} ids of {model_dir}; "
                        "use a token file made with the model's tokenizer")
    with torch.enable_grad():
        values = diagonal_fisher(model, examples, progress=progress)
    if normalize_mean:
        values = normalize(values)
    save_fisher(values, out, sorted(checkpoints.tensor_files(Path(model_dir))))
    return len(examples)
