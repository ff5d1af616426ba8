"""LoRA language adapters with peft: the `*_lora` setups train these instead of every weight.

An adapter is trained on an English base with the same data, steps and schedule as full continued
pretraining of that base, at its own learning rate (`lora_lr`). It is saved twice: in peft's own format
(`adapter/`: adapter_config.json, adapter_model.safetensors; `PeftModel.from_pretrained` on the base loads
it) and folded into a full model (`final/`, `merge_and_unload`), which is what evaluation and merging read,
so every later step treats a LoRA setup like any other.

The tied embedding stays tied: LoRA's "all-linear" targets never include the output head, and the
embedding is frozen unless `lora_embeddings: trainable_tokens`, where peft trains only the rows of the
`lora_trainable_tokens` most frequent tokens of the training stream (and, the weights being tied, the same
rows of the head). HyperLlama's head divides by its factor after the tied weight, so it is unaffected.

FLOPs of a LoRA step: the frozen weights need the forward (2 x N per token) and the gradient with respect to
their inputs (2 x N), not their own weight gradient; the adapters need all three (6 x N_lora). So a token
costs 4 x N + 6 x N_lora, with N all parameters (flops_total) or the non-embedding ones
(flops_non_embedding), against 6 x N for full training.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ..artifacts import atomic
from ..corpus.packing import PackedTokens
from ..params import Params


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def most_frequent_tokens(tokens: Path, n: int) -> list[int]:
    """The n most frequent token ids of a packed stream (ties: the smaller id first)."""
    data = PackedTokens(tokens)
    counts = np.bincount(np.asarray(data.tokens), minlength=1)
    order = np.lexsort((np.arange(len(counts)), -counts))
    return sorted(int(i) for i in order[:n] if counts[i] > 0)


def lora_config(p: Params, trainable_tokens: list[int] | None = None):
    from peft import LoraConfig

    targets = p.lora_target_modules if isinstance(p.lora_target_modules, str) else list(p.lora_target_modules)
    extra = {"trainable_token_indices": {"embed_tokens": trainable_tokens}} if trainable_tokens else {}
    return LoraConfig(r=p.lora_rank, lora_alpha=p.lora_alpha, use_rslora=p.lora_rslora, lora_dropout=p.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", **extra)


def wrap(model, p: Params, tokens: Path | None = None):
    """The base model with a fresh LoRA adapter (peft's initialisation: B = 0, so it computes the base)."""
    from peft import get_peft_model

    trainable = most_frequent_tokens(tokens, p.lora_trainable_tokens) \
        if p.lora_embeddings == "trainable_tokens" and tokens is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)  # the A matrices' random initialisation
        return get_peft_model(model, lora_config(p, trainable))


def folded(model):
    """A plain model with the adapter folded into its weights (a copy; the adapter model is unchanged)."""
    if not is_peft(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def save_adapter(model, dst: Path) -> None:
    with atomic.replace_dir(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)


def trainable_count(model) -> int:
    return sum(q.numel() for q in model.parameters() if q.requires_grad)


def step_flops(counts: dict[str, int], trainable: int, full: bool) -> tuple[int, int]:
    """Training FLOPs per token under both conventions (all parameters, non-embedding parameters)."""
    if full:
        return 6 * counts["total"], 6 * counts["non_embedding"]
    return 4 * counts["total"] + 6 * trainable, 4 * counts["non_embedding"] + 6 * trainable
