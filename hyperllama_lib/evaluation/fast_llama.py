"""A lean forward pass of Llama-family models for scoring (log-probabilities of given tokens).

It computes what `LlamaForCausalLM.forward` computes, op for op with the model's own weights, and
leaves out what scoring does not need. That makes small models several times faster, where Python
overhead per op dominates:
- tokens are a flat list of nodes: right-padded rows (`token_logprobs`) or packed prefix trees
  (`tree_logprobs`, see `prefix_tree`); projections, norms and the MLP run on the nodes, and
  attention runs per chunk, causally for rows (`is_causal=True`, no mask tensor) or under the
  tree's ancestor mask;
- rotary cos/sin come from a table filled once by the model's own rotary embedding; q/k/v and
  gate/up are one matrix product each; no KV cache, no output hooks, no module calls;
- the output head runs only where a next token is scored (once per tree node with children), and
  its log-softmax is in float32.

Exactness: the same arithmetic as transformers' Llama up to float rounding (concatenated
projections, the fused `rms_norm` and the attention kernel sum in a different order: ~1e-6 in the
logits; `tests/test_fast_llama.py` checks). Models that are not plain Llama / HyperLlama (biases,
other attention or MLP variants) are not supported (`unsupported_reason` says why) and are scored
through their regular forward instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from ..models.modeling import lm_head_factor

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
    """Token log-probabilities under a Llama / HyperLlama model, for scoring only.

    - `token_logprobs(ids, scored)`: right-padded rows; log p(ids[r, p + 1] | ids[r, :p + 1]) for
      every (r, p) with scored[r, p] true, in row-major order. Scored positions must predict real
      tokens.
    - `tree_logprobs(...)`: a packed batch of prefix trees (`prefix_tree.TreeBatch`).

    The q/k/v and gate/up projections are concatenated once here, so each is one matrix product
    (the model itself is not changed; the scorer holds a copy of those weights).
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
        self._rotary_tables: dict = {}
        self.layers = [_Layer(layer) for layer in model.model.layers]

    def hidden_states(self, ids: Tensor, positions: Tensor | None = None,
                      mask: Tensor | None = None) -> Tensor:
        """The final-normed hidden states (batch, length, hidden) of `ids`.

        Default: causal attention at positions 0, 1, ... Otherwise `positions` (batch, length) and
        a bool `mask` (batch, 1, length, length), true where a query may attend to a key.
        """
        batch, length = ids.shape
        if positions is None:
            positions = torch.arange(length, device=ids.device).expand(batch, length)
        hidden = self.node_hidden_states(ids.reshape(-1), positions.reshape(-1), length, None, mask)
        return hidden.view(batch, length, -1)

    def node_hidden_states(self, tokens: Tensor, positions: Tensor, chunk: int,
                           keys: Tensor | None, mask: Tensor | None) -> Tensor:
        """Final-normed hidden states (nodes, hidden) of a flat list of tokens.

        Everything but attention runs on the nodes as they are. Attention runs per chunk of
        `chunk` consecutive nodes: chunk c's keys and values are those of the nodes keys[c]
        (keys=None: the chunk itself), and `mask` (chunks, 1, chunk, keys) says which of them each
        query sees (None: causal within the chunk).
        """
        core = self.model.model
        x = F.embedding(tokens, core.embed_tokens.weight)
        cos, sin = self._rotary(x, positions)
        for layer in self.layers:
            x = x + self._attention(layer, F.rms_norm(x, layer.shape, layer.input_norm, layer.eps),
                                    cos, sin, chunk, keys, mask)
            h = F.rms_norm(x, layer.shape, layer.post_norm, layer.eps)
            gate, up = F.linear(h, layer.gate_up).split(layer.intermediate, dim=-1)
            x = x + F.linear(layer.act(gate) * up, layer.down)
        return F.rms_norm(x, (x.shape[-1],), core.norm.weight, core.norm.variance_epsilon)

    def _rotary(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (nodes, 1, head_dim) at each node's position, from a table the model's own
        rotary embedding filled once (per dtype and device)."""
        key = (x.dtype, x.device)
        if key not in self._rotary_tables:
            core = self.model.model
            every = torch.arange(core.config.max_position_embeddings, device=x.device).unsqueeze(0)
            cos, sin = core.rotary_emb(x[:1].unsqueeze(0), every)
            self._rotary_tables[key] = (cos[0], sin[0])
        cos, sin = self._rotary_tables[key]
        return cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)

    def _attention(self, layer: "_Layer", x: Tensor, cos: Tensor, sin: Tensor, chunk: int,
                   keys: Tensor | None, mask: Tensor | None) -> Tensor:
        nodes, d = x.shape[0], self.head_dim
        qkv = F.linear(x, layer.qkv).view(nodes, -1, d)
        qk = qkv[:, : self.n_heads + self.n_kv_heads]
        qk = qk * cos + _rotate_half(qk) * sin
        q, k, v = qk[:, : self.n_heads], qk[:, self.n_heads:], qkv[:, self.n_heads + self.n_kv_heads:]
        chunks = -(-nodes // chunk)
        q = _chunked(q, chunks, chunk)
        if keys is None:
            k, v = _chunked(k, chunks, chunk), _chunked(v, chunks, chunk)
        else:
            k = k.index_select(0, keys.reshape(-1)).view(chunks, -1, self.n_kv_heads, d).transpose(1, 2)
            v = v.index_select(0, keys.reshape(-1)).view(chunks, -1, self.n_kv_heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                             scale=self.scaling,
                                             enable_gqa=self.n_kv_heads != self.n_heads)
        out = out.transpose(1, 2).reshape(chunks * chunk, -1)[:nodes]
        return F.linear(out, layer.o)

    def logits(self, hidden: Tensor) -> Tensor:
        logits = F.linear(hidden, self.model.lm_head.weight)
        return logits / self.head_factor if self.head_factor != 1 else logits

    def token_logprobs(self, ids: Tensor, scored: Tensor) -> Tensor:
        hidden = self.hidden_states(ids)[:, :-1][scored]
        targets = ids[:, 1:][scored]
        # log_softmax in float32, outside any autocast, as for the regular forward
        return -F.cross_entropy(self.logits(hidden).float(), targets, reduction="none")

    def tree_logprobs(self, tokens: Tensor, depths: Tensor, heads: Tensor, head_of: Tensor,
                      chunk: int, keys: Tensor, mask: Tensor, head_rows: int | None = None) -> Tensor:
        """log p(tokens[n] | n's parent) for every node of a packed prefix-tree batch
        (`prefix_tree.TreeBatch`), 0 at roots; the output head runs once per parent (`heads`),
        in slices of at most `head_rows` parents (None: all at once), which bounds the memory of
        the vocabulary-wide logits however large the tree."""
        if not torch.is_autocast_enabled(mask.device.type):
            # additive, in the queries' dtype: made once here, not converted in every layer
            mask = torch.zeros(mask.shape, dtype=self.model.model.embed_tokens.weight.dtype,
                               device=mask.device).masked_fill_(~mask, float("-inf"))
        hidden = self.node_hidden_states(tokens, depths, chunk, keys, mask)
        child = torch.nonzero(head_of >= 0).squeeze(1)
        parent = head_of[child]
        out = torch.zeros(tokens.shape[0], dtype=torch.float32, device=tokens.device)
        rows = len(heads) if head_rows is None else max(1, head_rows)
        runs = [(0, 0, len(child))]  # (first parent of a slice, its children child[lo:hi])
        if rows < len(heads):
            # children sorted by parent: each slice of parents scores one run of children
            order = torch.argsort(parent, stable=True)
            child, parent = child[order], parent[order]
            starts = list(range(0, len(heads), rows))
            cuts = torch.searchsorted(parent, torch.tensor(starts[1:], device=parent.device)).tolist()
            runs = list(zip(starts, [0] + cuts, cuts + [len(child)]))
        for start, lo, hi in runs:
            logits = self.logits(hidden.index_select(0, heads[start:start + rows]))
            logprobs = F.log_softmax(logits.float(), dim=-1)
            out[child[lo:hi]] = logprobs[parent[lo:hi] - start, tokens[child[lo:hi]]]
        return out


class _Layer:
    """One decoder layer's weights as the scorer uses them (q/k/v and gate/up concatenated)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        self.o = attn.o_proj.weight
        self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        self.intermediate = mlp.gate_proj.weight.shape[0]
        self.down = mlp.down_proj.weight
        self.act = mlp.act_fn
        self.input_norm = layer.input_layernorm.weight
        self.post_norm = layer.post_attention_layernorm.weight
        self.eps = layer.input_layernorm.variance_epsilon
        self.shape = (self.input_norm.shape[0],)


def _chunked(t: Tensor, chunks: int, chunk: int) -> Tensor:
    """(nodes, heads, head_dim) -> (chunks, heads, chunk, head_dim), zero-padded at the end."""
    pad = chunks * chunk - t.shape[0]
    if pad:
        t = F.pad(t, (0, 0, 0, 0, 0, pad))
    return t.view(chunks, chunk, *t.shape[1:]).transpose(1, 2)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
