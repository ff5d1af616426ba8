"""A lean forward pass of Llama-family models for scoring (log-probabilities of given tokens).

It computes what `LlamaForCausalLM.forward` computes, op for op with the model's own weights, and
leaves out what scoring does not need. That makes small models several times faster, where Python
overhead per op dominates:
- no attention mask: batches are right-padded, so with causal attention a real token never sees
  padding, and attention can use the kernel's built-in causal mask (`is_causal=True`);
- no KV cache, no output hooks, no module calls;
- the output head runs only at the positions whose next token is scored, and its log-softmax is a
  `cross_entropy` against the target ids (one pass, no full log-probability tensor).

Exactness: the same ops in the same order as transformers' Llama, except attention, where the
causal kernel replaces the masked one (differences at float rounding, ~1e-6 in the logits;
`tests/test_fast_llama.py` checks). Models that are not plain Llama / HyperLlama (biases, other
attention or MLP variants) are not supported (`supports` says why) and are scored through their
regular forward instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from .modeling import lm_head_factor

Tensor = torch.Tensor


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """None if `LlamaScorer` computes this model exactly, else why not."""
    if not isinstance(model, LlamaForCausalLM):
        return f"{type(model).__name__} is not a LlamaForCausalLM"
    config = model.config
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            return f"config.{flag} is set"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "config.pretraining_tp != 1"
    head = model.lm_head
    if getattr(head, "bias", None) is not None:
        return "the output head has a bias"
    return None


class LlamaScorer:
    """Token log-probabilities of right-padded batches under a Llama / HyperLlama model.

    `token_logprobs(ids, scored)` returns log p(ids[r, p + 1] | ids[r, :p + 1]) for every (r, p)
    with scored[r, p] true, in row-major order. Padding must be on the right, and scored positions
    must predict real tokens.
    """

    def __init__(self, model: LlamaForCausalLM) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"LlamaScorer cannot run this model: {reason}")
        self.model = model
        config = model.config
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.head_factor = lm_head_factor(model)

    def hidden_states(self, ids: Tensor, positions: Tensor | None = None,
                      mask: Tensor | None = None) -> Tensor:
        """The final-normed hidden states (batch, length, hidden) of `ids`.

        Default: causal attention at positions 0, 1, ... Otherwise `positions` (batch, length) and
        a bool `mask` (batch, 1, length, length), true where a query may attend to a key.
        """
        core = self.model.model
        x = F.embedding(ids, core.embed_tokens.weight)
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        cos, sin = core.rotary_emb(x, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        for layer in core.layers:
            x = x + self._attention(layer.self_attn, _rms_norm(layer.input_layernorm, x), cos, sin,
                                    mask)
            mlp = layer.mlp
            h = _rms_norm(layer.post_attention_layernorm, x)
            x = x + F.linear(mlp.act_fn(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight),
                             mlp.down_proj.weight)
        return _rms_norm(core.norm, x)

    def _attention(self, attn: torch.nn.Module, x: Tensor, cos: Tensor, sin: Tensor,
                   mask: Tensor | None) -> Tensor:
        batch, length, _ = x.shape
        q = F.linear(x, attn.q_proj.weight).view(batch, length, -1, self.head_dim).transpose(1, 2)
        k = F.linear(x, attn.k_proj.weight).view(batch, length, -1, self.head_dim).transpose(1, 2)
        v = F.linear(x, attn.v_proj.weight).view(batch, length, -1, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                             scale=self.scaling,
                                             enable_gqa=self.n_kv_heads != self.n_heads)
        return F.linear(out.transpose(1, 2).reshape(batch, length, -1), attn.o_proj.weight)

    def logits(self, hidden: Tensor) -> Tensor:
        logits = F.linear(hidden, self.model.lm_head.weight)
        return logits / self.head_factor if self.head_factor != 1 else logits

    def token_logprobs(self, ids: Tensor, scored: Tensor) -> Tensor:
        hidden = self.hidden_states(ids)[:, :-1][scored]
        targets = ids[:, 1:][scored]
        # log_softmax in float32, outside any autocast, as for the regular forward
        return -F.cross_entropy(self.logits(hidden).float(), targets, reduction="none")


    def edge_logprobs(self, ids: Tensor, positions: Tensor, mask: Tensor, parents: Tensor,
                      targets: Tensor) -> Tensor:
        """log p(targets[e] | the node at flat index parents[e]) for a packed batch of prefix trees
        (`prefix_tree`); the output head runs once per distinct parent."""
        hidden = self.hidden_states(ids, positions, mask).flatten(0, 1)
        unique, inverse = torch.unique(parents, return_inverse=True)
        logprobs = F.log_softmax(self.logits(hidden[unique]).float(), dim=-1)
        return logprobs[inverse, targets]


def _rms_norm(norm: torch.nn.Module, x: Tensor) -> Tensor:
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x32.to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
