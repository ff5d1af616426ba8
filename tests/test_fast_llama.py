"""The lean scoring forward (fast_llama) against transformers' own forward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hyperllama_lib.evaluation.fast_llama import LlamaScorer, unsupported_reason
from hyperllama_lib.models.cloning import hyperclone

VOCAB = 97


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=40, num_hidden_layers=2,
              num_attention_heads=6, num_key_value_heads=2, head_dim=8, hidden_act="gelu",
              tie_word_embeddings=True, initializer_range=0.2)
    kw.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    with torch.no_grad():  # non-trivial norm weights, so a wrong norm cannot hide behind ones
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model


def ids(batch: int = 3, length: int = 11) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


MODELS = {
    "llama_gqa": lambda: tiny_llama(),
    "llama_mha_silu": lambda: tiny_llama(num_key_value_heads=6, hidden_act="silu"),
    "hyperllama_clone": lambda: hyperclone(tiny_llama()),  # scaled head, factor 2
}


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_transformers(name):
    model = MODELS[name]()
    assert unsupported_reason(model) is None
    scorer = LlamaScorer(model)
    with torch.inference_mode():
        want = model(input_ids=ids()).logits
        got = scorer.logits(scorer.hidden_states(ids()))
    assert (got - want).abs().max().item() < 1e-5


def test_right_padding_needs_no_mask():
    model = tiny_llama()
    scorer = LlamaScorer(model)
    short = ids(1, 6)
    padded = torch.cat([short, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.inference_mode():
        alone = scorer.hidden_states(short)
        in_batch = scorer.hidden_states(padded)[:, :6]
    assert (alone - in_batch).abs().max().item() < 1e-5  # float rounding only


def test_token_logprobs_are_log_softmax_at_scored_positions():
    model = tiny_llama()
    batch = ids()
    scored = torch.rand(batch.shape[0], batch.shape[1] - 1, generator=torch.Generator().manual_seed(2)) > 0.4
    with torch.inference_mode():
        logprobs = F.log_softmax(model(input_ids=batch).logits[:, :-1].float(), dim=-1)
        want = logprobs.gather(2, batch[:, 1:].unsqueeze(2)).squeeze(2)[scored]
        got = LlamaScorer(model).token_logprobs(batch, scored)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5


def test_explicit_positions_and_mask_equal_causal():
    model = tiny_llama()
    scorer = LlamaScorer(model)
    batch = ids(2, 9)
    positions = torch.arange(9).expand(2, 9)
    causal = torch.ones(9, 9, dtype=torch.bool).tril().expand(2, 1, 9, 9)
    with torch.inference_mode():
        a = scorer.hidden_states(batch)
        b = scorer.hidden_states(batch, positions, causal)
    assert (a - b).abs().max().item() < 1e-5


def test_unsupported_models_are_named():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2))
    assert "not a LlamaForCausalLM" in unsupported_reason(gpt2)
    assert "attention_bias" in unsupported_reason(tiny_llama(attention_bias=True))
    with pytest.raises(ValueError, match="cannot run this model"):
        LlamaScorer(gpt2)
