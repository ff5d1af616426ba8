"""HyperCloning (Samragh et al. 2024) of Llama models in width, symmetric and function preserving.

Cloning x n turns every hidden vector x into [x, x, ...] (n copies); depth is unchanged. A linear
layer whose input is expanded n-fold is tiled and divided by n, so W' [x, x] = W x in every output
copy. Tied models stay tied: the output head becomes E' / (n * old factor), i.e. a HyperLlama.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ..artifacts import atomic
from ..artifacts.checkpoints import TOKENIZER_FILES, check_model_folder
from ..errors import ParamError
from .modeling import (
    HyperLlamaConfig,
    count_parameters,
    lm_head_factor,
    load_model,
    model_from_state,
)


def _check_factors(factor: int, ffn_factor: int | None) -> int:
    ffn_factor = factor if ffn_factor is None else ffn_factor
    for name, value in (("factor", factor), ("ffn_factor", ffn_factor)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParamError(f"{name} must be a positive integer, got {value!r}")
    return ffn_factor


def clone_config(config: LlamaConfig, factor: int = 2, ffn_factor: int | None = None) -> LlamaConfig:
    """Config of the x factor clone. Tied -> HyperLlamaConfig with compounded head factor."""
    ffn_factor = _check_factors(factor, ffn_factor)
    d = config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path"):
        d.pop(key, None)
    d.update(
        hidden_size=config.hidden_size * factor,
        num_attention_heads=config.num_attention_heads * factor,
        num_key_value_heads=config.num_key_value_heads * factor,
        head_dim=config.head_dim,
        intermediate_size=config.intermediate_size * ffn_factor,
    )
    if config.tie_word_embeddings:
        head_factor = lm_head_factor(config) * factor
        d["lm_head_normalization_factor"] = int(head_factor) if head_factor.is_integer() else head_factor
        return HyperLlamaConfig(**d)
    # untied: the head itself is divided by n, the class (and any head factor) stays as it was
    return type(config)(**d)


def _rule(name: str, n: int, f: int) -> tuple[int, int, int]:
    """(row multiplier, column multiplier, divisor) of a parameter, by its module name."""
    module = name.split(".")[-2]
    if module in ("q_proj", "k_proj", "v_proj", "o_proj"):
        return n, n, n
    if module in ("gate_proj", "up_proj"):
        return f, n, n
    if module == "down_proj":
        return n, f, f
    if module in ("input_layernorm", "post_attention_layernorm", "norm"):
        return n, 1, 1
    if module == "embed_tokens":
        return 1, n, 1  # the embedding produces the hidden state: tiled, never divided
    if module == "lm_head":
        return 1, n, n
    raise ValueError(f"don't know how to clone parameter {name!r}")


def _zero_sum_noise(rows: int, cols: int, copies: int, std: float, gen: torch.Generator) -> torch.Tensor:
    """Noise for `copies` column blocks that sum to zero, so it cancels on input [x, x, ...]."""
    blocks = torch.randn(copies - 1, rows, cols, generator=gen) * std
    blocks = torch.cat([blocks, -blocks.sum(0, keepdim=True)])
    return torch.cat(list(blocks), dim=1)


def _expand(
    name: str, w: torch.Tensor, n: int, f: int, noise_std: float, gen: torch.Generator
) -> torch.Tensor:
    rows, cols, div = _rule(name, n, f)
    w = w.detach().float()
    if w.ndim == 1:  # norm weights and biases: tiled on the output side, not divided
        return w.repeat(rows)
    out = w.repeat(rows, cols)
    out /= div
    if noise_std > 0 and div > 1:
        out += _zero_sum_noise(out.shape[0], w.shape[1], cols, noise_std, gen)
    return out


def hyperclone(
    model: LlamaForCausalLM,
    factor: int = 2,
    ffn_factor: int | None = None,
    noise_std: float = 0.0,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Width-expand a Llama/HyperLlama model x factor (FFN x ffn_factor); same logits, source dtype.

    noise_std > 0 adds zero-sum noise across the input-side copies of every divided weight
    (symmetry breaking that keeps the function unchanged).
    """
    ffn_factor = _check_factors(factor, ffn_factor)
    if noise_std < 0:
        raise ParamError(f"noise_std must be >= 0, got {noise_std}")
    config = clone_config(model.config, factor, ffn_factor)
    dtype = model.get_input_embeddings().weight.dtype
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, w in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        state[name] = _expand(name, w, factor, ffn_factor, noise_std, gen).to(dtype)
    clone = model_from_state(config, state)
    return clone.to(model.device).train(model.training)


def _check_destination(dst: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst}: exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"{dst}: folder exists and is not empty (pass overwrite=True to replace it)")


def clone_folder(
    src: str | Path,
    dst: str | Path,
    factor: int = 2,
    ffn_factor: int | None = None,
    noise_std: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """HyperClone the model folder src into dst (fp32, safetensors) with tokenizer and provenance."""
    src, dst = Path(src), Path(dst)
    ffn_factor = _check_factors(factor, ffn_factor)
    check_model_folder(src)
    _check_destination(dst, overwrite)

    model = load_model(src, dtype=torch.float32)
    clone = hyperclone(model, factor, ffn_factor, noise_std, seed)
    with atomic.replace_dir(dst) as tmp:
        clone.save_pretrained(tmp, safe_serialization=True)
        for file in TOKENIZER_FILES + ("generation_config.json",):
            if (src / file).is_file():
                shutil.copy2(src / file, tmp / file)
        provenance = {
            "source": str(src.resolve()),
            "factor": factor,
            "ffn_factor": ffn_factor,
            "noise_std": noise_std,
            "seed": seed,
            "lm_head_normalization_factor": lm_head_factor(clone),
            "parameters_before": count_parameters(model),
            "parameters_after": count_parameters(clone),
        }
        (tmp / "hyperclone.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return dst


def max_logit_difference(src: str | Path, dst: str | Path, seq_len: int = 64, seed: int = 0) -> float:
    """Largest |logit difference| between two model folders on the same random tokens, in fp32."""
    a, b = load_model(src, dtype=torch.float32), load_model(dst, dtype=torch.float32)
    ids = torch.randint(0, a.config.vocab_size, (2, seq_len), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return float((a(input_ids=ids).logits - b(input_ids=ids).logits).abs().max())
