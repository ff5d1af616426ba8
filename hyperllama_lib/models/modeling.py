"""Llama models in the paper's shapes, and the authors' HyperLlama format.

HyperLlama (model_type "hyperllama") is a LlamaForCausalLM with tied embeddings whose output head
computes hidden @ (E / lm_head_normalization_factor)^T. The authors' 572M checkpoints use it with
factor 2, which is how a tied model stays tied after HyperCloning x2.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.initialization import no_init_weights

from ..artifacts.checkpoints import check_model_folder
from ..errors import ModelFolderError, ParamError  # noqa: F401  (defined in errors.py)

# The paper's 180M ("1x") shape: SmolLM2-135M with the Llama-3.3 tokenizer and GeGLU.
PAPER_1X = dict(
    vocab_size=128256,
    hidden_size=576,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    intermediate_size=1536,
)
# The 572M ("2x") shape, i.e. PAPER_1X HyperCloned x2.
PAPER_2X = dict(PAPER_1X, hidden_size=1152, num_heads=18, num_kv_heads=6, intermediate_size=3072)


@strict
class HyperLlamaConfig(LlamaConfig):
    model_type = "hyperllama"

    lm_head_normalization_factor: float | int = 1


class ScaledLMHead(nn.Linear):
    """Bias-free output head computing x @ W^T / factor; W stays tieable to the embedding."""

    def __init__(self, in_features: int, out_features: int, factor: float) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) / self.factor

    def extra_repr(self) -> str:
        return super().extra_repr() + f", factor={self.factor}"


class HyperLlamaForCausalLM(LlamaForCausalLM):
    config_class = HyperLlamaConfig

    def __init__(self, config: HyperLlamaConfig) -> None:
        super().__init__(config)
        # LlamaForCausalLM.forward computes both logits and loss from self.lm_head(hidden), so a head
        # that divides is all that is needed; post_init initialises it and ties it to the embedding again.
        self.lm_head = ScaledLMHead(config.hidden_size, config.vocab_size, config.lm_head_normalization_factor)
        self.post_init()


def register() -> None:
    """Make AutoConfig / AutoModelForCausalLM know "hyperllama" (no trust_remote_code needed)."""
    AutoConfig.register("hyperllama", HyperLlamaConfig, exist_ok=True)
    AutoModelForCausalLM.register(HyperLlamaConfig, HyperLlamaForCausalLM, exist_ok=True)


def smollm2_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    intermediate_size: int,
    hidden_act: str = "gelu",
    rms_norm_eps: float = 1e-5,
    rope_theta: float = 10000.0,
    max_position_embeddings: int = 2048,
    tie_word_embeddings: bool = True,
    initializer_range: float | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
) -> LlamaConfig:
    """A SmolLM2-style Llama config. hidden_act "gelu" is exact GELU, so the MLP is GeGLU."""
    if initializer_range is None:
        initializer_range = 1 / math.sqrt(hidden_size)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate_size,
        hidden_act=hidden_act,
        rms_norm_eps=rms_norm_eps,
        # transformers 5 keeps theta only inside rope_parameters (a rope_theta kwarg is moved there)
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def lm_head_factor(model_or_config: nn.Module | LlamaConfig) -> float:
    config = getattr(model_or_config, "config", model_or_config)
    return float(getattr(config, "lm_head_normalization_factor", 1))


def _config_counts(c: LlamaConfig) -> dict[str, int]:
    h, i, d = c.hidden_size, c.intermediate_size, c.head_dim
    q, kv = c.num_attention_heads * d, c.num_key_value_heads * d
    attn = h * q + 2 * h * kv + q * h
    if c.attention_bias:
        attn += q + 2 * kv + h
    mlp = 3 * h * i + ((2 * i + h) if c.mlp_bias else 0)
    layer = attn + mlp + 2 * h  # + two RMSNorms
    embedding = c.vocab_size * h * (1 if c.tie_word_embeddings else 2)
    non_embedding = c.num_hidden_layers * layer + h  # + final norm
    return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding}


def load_config(path: str | Path) -> LlamaConfig:
    """The config of a model folder (llama or hyperllama), without remote code."""
    register()
    return AutoConfig.from_pretrained(str(path), trust_remote_code=False)


def count_parameters(model_or_config: nn.Module | LlamaConfig | str | Path) -> dict[str, int]:
    """Parameter counts of a model, a config or a model folder; 'embedding' is the input embedding plus an
    untied output head."""
    if isinstance(model_or_config, (str, Path)):
        model_or_config = load_config(model_or_config)
    if isinstance(model_or_config, LlamaConfig):
        return _config_counts(model_or_config)
    model = model_or_config
    total = sum(p.numel() for p in model.parameters())  # parameters() yields tied tensors once
    embedding = {id(model.get_input_embeddings().weight): model.get_input_embeddings().weight.numel()}
    head = model.get_output_embeddings()
    if head is not None:
        embedding[id(head.weight)] = head.weight.numel()
    emb = sum(embedding.values())
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def model_class(config: LlamaConfig) -> type[LlamaForCausalLM]:
    return HyperLlamaForCausalLM if isinstance(config, HyperLlamaConfig) else LlamaForCausalLM


def new_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """Randomly initialised fp32 model (normal(0, initializer_range) weights), deterministic per seed."""
    torch.manual_seed(seed)
    model = model_class(config)(config).float()
    return model.eval()


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu",
               require_tokenizer: bool = False) -> LlamaForCausalLM:
    check_model_folder(path, require_tokenizer=require_tokenizer)
    register()
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    return model.to(device).eval()


def export_llama(model: LlamaForCausalLM, mode: str = "fold_norm") -> LlamaForCausalLM:
    """Convert a HyperLlama to a plain LlamaForCausalLM with the same logits (a plain Llama is copied).

    fold_norm: keep tied embeddings, divide the final RMSNorm weight by the factor (logits are linear in it).
    untie: untied head with lm_head.weight = E / factor.
    """
    if mode not in ("fold_norm", "untie"):
        raise ParamError(f"unknown export mode {mode!r} (expected fold_norm or untie)")
    if not isinstance(model.config, HyperLlamaConfig):
        return copy.deepcopy(model)
    factor = lm_head_factor(model)
    config_dict = model.config.to_dict()
    for key in ("model_type", "architectures", "lm_head_normalization_factor", "auto_map"):
        config_dict.pop(key, None)
    config_dict["tie_word_embeddings"] = mode == "fold_norm"
    config = LlamaConfig(**config_dict)

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dtype = state["model.embed_tokens.weight"].dtype
    if mode == "fold_norm":
        state["model.norm.weight"] = (state["model.norm.weight"].float() / factor).to(dtype)
    else:
        state["lm_head.weight"] = (state["model.embed_tokens.weight"].float() / factor).to(dtype)
    return model_from_state(config, state).to(model.device).eval()


def model_from_state(config: LlamaConfig, state: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    """Build a model for config that takes over the given tensors (no random init, no copy)."""
    with no_init_weights():
        model = model_class(config)(config)
    if config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    # assign=True adopts the tensors (and their dtype); copying into fresh, untouched memory is slow
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"state does not match the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model
