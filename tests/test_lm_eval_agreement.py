"""Our BLiMP `acc` equals lm-evaluation-harness's `acc` on the same model and pairs (issue #3).

The peer is lm-eval's multiple_choice task path over [good, bad] with an empty context and
`target_delimiter: ""` (as its multiblimp task has), on an HFLM wrapping the same model; see
benchmarks/_lm_eval_peer.py. Runs only when lm-eval is installed and the real BLiMP is present.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("lm_eval.models.huggingface")  # needs lm-eval's [hf] extra (accelerate)

from conftest import shared_data  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from hyperllama_lib.evaluation import pair_sources  # noqa: E402
from hyperllama_lib.evaluation import scoring as ev

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import _lm_eval_peer as peer  # noqa: E402

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
PAIRS_PER_PARADIGM = 5
BATCH_SIZE = 16


@pytest.fixture(scope="module")
def blimp_dir() -> Path:
    path = shared_data()
    folder = path / "blimp" if (path / "blimp").is_dir() else path
    if not list(folder.glob("*.jsonl.gz")):
        pytest.skip(f"real BLiMP (*.jsonl.gz) not found under {folder}: set HYPERLLAMA_DATA "
                    "or put ../shared/data beside the repo")
    return path


def _train_tokenizer(sentences: list[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sentences, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS)


def _train_model(tokenizer, sentences: list[str], steps: int = 40) -> LlamaForCausalLM:
    """A tiny Llama (hidden 64, 4 layers), briefly trained so log-probs are sentence-specific."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        batch = [sentences[i] for i in rng.choice(len(sentences), 32, replace=False)]
        ids = [[tokenizer.bos_token_id] + tokenizer(s, add_special_tokens=False)["input_ids"]
               for s in batch]
        width = max(map(len, ids))
        input_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        labels = input_ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two OpenMP threads can be several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(blimp_dir, tmp_path_factory) -> Path:
    """Tokenizer (BPE on BLiMP sentences) and model saved with save_pretrained."""
    sample = pair_sources.load_blimp_local(blimp_dir, max_pairs_per_paradigm=200, seed=1)
    tokenizer = _train_tokenizer(list(sample["good"]) + list(sample["bad"]))
    model = _train_model(tokenizer, list(sample["good"]))
    folder = tmp_path_factory.mktemp("lm_eval_model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_acc_agrees_with_lm_eval(blimp_dir, model_dir, tmp_path):
    pairs = pair_sources.load_blimp_local(blimp_dir, max_pairs_per_paradigm=PAIRS_PER_PARADIGM, seed=0)
    assert len(pairs) >= 300
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ours, summary = ev.score_pairs(model, AutoTokenizer.from_pretrained(model_dir), pairs,
                                   batch_size=BATCH_SIZE, device="cpu", progress=False)
    # lm-eval gets its own tokenizer instance (HFLM sets a pad token on it) and the same model.
    lm = peer.make_hflm(model, AutoTokenizer.from_pretrained(model_dir), BATCH_SIZE)
    peer.check_conditioning(lm, pairs["good"].iloc[0])  # [BOS] + sentence ids, BOS once
    result = peer.run_lm_eval(lm, pairs, tmp_path)
    stats = peer.compare(ours, result)
    print(stats)

    # Decisions must not hinge on ties: the model separates (nearly) every pair clearly.
    assert stats["n_near_ties"] <= 0.001 * len(pairs), stats
    # Same input, same model: the summed log-probs agree to fp32 rounding.
    assert stats["max_abs_logp_diff"] < 1e-3, stats
    assert stats["agreement"] >= 0.999, stats
    assert abs(stats["acc_diff"]) <= 0.001, stats
    assert summary["accuracy"] == pytest.approx(stats["acc_ours"])
