"""Tests for hyperllama_lib.evaluation on a tiny random Llama and a tiny byte-level BPE."""
from __future__ import annotations

import gzip
import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hyperllama_lib.evaluation import pair_sources
from hyperllama_lib.evaluation import scoring as ev

SENTENCES = [
    "The cat sat on the mat.",
    "Who should Derek hug after shocking Richard?",
    "Many girls insulted themselves.",
    "Þú ert góður maður, ég veit það.",
    "A",
    "These dogs were barking loudly at the mailman all morning long.",
]


def make_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|end_of_text|>")


def make_model(vocab_size: int, context: int = 64, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, tie_word_embeddings=True,
                         initializer_range=0.5)  # large init: peaked, sentence-specific outputs
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer) -> LlamaForCausalLM:
    return make_model(len(tokenizer))


def manual_logprob(model, ids: list[int], first_target: int = 1) -> float:
    """Unbatched, unpadded sum of log p(ids[t] | ids[:t]) for t >= first_target."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, -1)
    return sum(float(logprobs[t - 1, ids[t]]) for t in range(first_target, len(ids)))


def encode(tokenizer, text: str) -> list[int]:
    return [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- sentence_logprobs

def test_encode_equals_the_tokenizer_call(tokenizer):
    # the backend fast path must give what tokenizer(texts, add_special_tokens=False) gives,
    # special-token strings inside a text included
    texts = SENTENCES + ["<|end_of_text|> inside", "", "  two  spaces "]
    want = [encode(tokenizer, t) for t in texts]
    assert ev._encode(tokenizer, texts) == want
    slow = type("Slow", (), {"bos_token_id": tokenizer.bos_token_id,
                             "__call__": lambda self, t, **kw: tokenizer(t, **kw)})()
    assert ev._encode(slow, texts) == want  # a tokenizer without a `tokenizers` backend



def test_sentence_logprobs_matches_manual(model, tokenizer):
    got = ev.sentence_logprobs(model, tokenizer, SENTENCES, batch_size=4, progress=False)
    want = [manual_logprob(model, encode(tokenizer, s)) for s in SENTENCES]
    assert got.dtype == np.float64
    # float32 rounding of a sum over ~40 tokens with |logp| up to 330 (large-init model)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-7)


def test_sentence_logprobs_invariant_to_batch_size(model, tokenizer):
    results = [ev.sentence_logprobs(model, tokenizer, SENTENCES, batch_size=b, progress=False)
               for b in (1, 2, 64)]
    for other in results[1:]:  # float32 rounding only (|logp| up to 330 here)
        np.testing.assert_allclose(other, results[0], atol=1e-5, rtol=1e-7)


def test_cpu_threads_score_whole_batches_side_by_side(model, tokenizer, monkeypatch):
    pools = []

    class RecordingPool(ev.ThreadPoolExecutor):
        def __init__(self, workers):
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(ev, "ThreadPoolExecutor", RecordingPool)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = ev.sentence_logprobs(model, tokenizer, SENTENCES, batch_size=2, progress=False)
        torch.set_num_threads(3)  # three batches at once, one thread each: the very same numbers
        side_by_side = ev.sentence_logprobs(model, tokenizer, SENTENCES, batch_size=2,
                                            progress=False)
        windows = ev.bits_per_byte(model, tokenizer, SENTENCES, batch_size=2, progress=False)
        assert torch.get_num_threads() == 3  # restored after each call
        torch.set_num_threads(1)
        assert ev.bits_per_byte(model, tokenizer, SENTENCES, batch_size=2, progress=False) == windows
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(side_by_side, alone)
    assert pools == [3, 3]  # sentences and windows: three workers; none with one thread


def test_prefix_sharing_equals_plain_batches(model, tokenizer):
    # shared prefixes, a sentence that is a prefix of another, and duplicates
    sentences = SENTENCES + ["The cat sat", "The cat sat on the hat.", "The cat", "The cat sat"]
    plain = ev.sentence_logprobs(model, tokenizer, sentences, batch_size=3, progress=False,
                                 share_prefixes=False)
    for batch_size in (1, 3, "auto"):
        shared = ev.sentence_logprobs(model, tokenizer, sentences, batch_size=batch_size,
                                      progress=False, share_prefixes=True)
        np.testing.assert_allclose(shared, plain, atol=1e-5, rtol=1e-7)
    assert shared[6] == shared[9]


def test_small_attention_chunks_and_empty_sentence(model, tokenizer):
    sentences = SENTENCES + [""]
    encoded = [encode(tokenizer, s) for s in sentences]
    got = ev.score_sequences(model, encoded, batch_size=2, progress=False, attention_chunk=5)
    want = [manual_logprob(model, ids) for ids in encoded]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-7)
    assert got[-1] == 0.0


def test_non_llama_models_use_the_regular_forward(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1,
                                      n_head=2, n_positions=64)).eval()
    got = ev.sentence_logprobs(gpt2, tokenizer, SENTENCES, batch_size=4, progress=False)
    want = [manual_logprob(gpt2, encode(tokenizer, s)) for s in SENTENCES]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-7)


def test_sentence_logprobs_truncates_long_sentences_with_warning(tokenizer):
    short_model = make_model(len(tokenizer), context=8)
    text = SENTENCES[-1]
    ids = encode(tokenizer, text)
    assert len(ids) > 8
    with pytest.warns(UserWarning, match="truncated"):
        got = ev.sentence_logprobs(short_model, tokenizer, [text], progress=False)
    assert got[0] == pytest.approx(manual_logprob(short_model, ids[:8]), abs=1e-5)


# ---------------------------------------------------------------- score_pairs

def test_score_pairs_forced_answers(model, tokenizer):
    # A longer continuation always has a strictly lower summed log-probability.
    short, long = "The cat sat", "The cat sat on the mat."
    pairs = pd.DataFrame({
        "good": [short, long, short, short],
        "bad": [long, short, short, long],
        "paradigm": ["p1", "p1", "p2", "p2"],
        "field": ["syntax", "syntax", "syntax", "semantics"],
    })
    scored, summary = ev.score_pairs(model, tokenizer, pairs, batch_size=2, progress=False)
    assert scored["correct"].tolist() == [True, False, False, True]  # a tie is wrong
    assert scored["logp_good"].iloc[2] == scored["logp_bad"].iloc[2]
    assert not scored["correct_token_mean"].iloc[2] and not scored["correct_byte_norm"].iloc[2]
    assert summary["accuracy"] == 0.5
    assert summary["n_pairs"] == 4
    assert summary["by_paradigm"] == {"p1": 0.5, "p2": 0.5}
    assert summary["by_field"] == {"semantics": 1.0, "syntax": 1 / 3}
    assert list(pairs.columns) == ["good", "bad", "paradigm", "field"]  # input untouched


def test_score_pairs_variants_match_manual_normalisation(model, tokenizer):
    pairs = pd.DataFrame({"good": SENTENCES[:3] + ["A", "Many girls"],
                          "bad": SENTENCES[3:] + ["Þú ert", "Many girls insulted themselves."]})
    scored, summary = ev.score_pairs(model, tokenizer, pairs, batch_size=3, progress=False)
    for side in ("good", "bad"):
        ids = [encode(tokenizer, s) for s in pairs[side]]
        np.testing.assert_allclose(scored[f"logp_{side}"], [manual_logprob(model, i) for i in ids], atol=1e-5)
        assert scored[f"n_tokens_{side}"].tolist() == [len(i) - 1 for i in ids]
        assert scored[f"n_bytes_{side}"].tolist() == [len(s.encode("utf-8")) for s in pairs[side]]
    g, b = scored["logp_good"], scored["logp_bad"]
    np.testing.assert_allclose(scored["delta"], g - b)
    token_mean = g / scored["n_tokens_good"] > b / scored["n_tokens_bad"]
    byte_norm = g / scored["n_bytes_good"] > b / scored["n_bytes_bad"]
    assert scored["correct_token_mean"].tolist() == token_mean.tolist()
    assert scored["correct_byte_norm"].tolist() == byte_norm.tolist()
    assert summary["accuracy_token_mean"] == pytest.approx(token_mean.mean())
    assert summary["accuracy_byte_norm"] == pytest.approx(byte_norm.mean())
    # "Þú" is 2 characters but 4 bytes: byte normalisation is not character normalisation
    assert scored["n_bytes_bad"].iloc[3] == len("Þú ert") + 2
    assert summary["breakdowns"] == {}  # no paradigm/field/phenomenon/lang columns


def test_score_pairs_breakdowns_per_phenomenon_and_lang_for_each_variant(model, tokenizer):
    pairs = pd.DataFrame({"good": SENTENCES[:4], "bad": SENTENCES[2:],
                          "paradigm": ["SV-#", "SV-#", "SP-G", "SV-#"], "field": [None] * 4,
                          "phenomenon": ["SV-#", "SV-#", "SP-G", "SV-#"], "lang": ["isl", "swe", "swe", "swe"]})
    scored, summary = ev.score_pairs(model, tokenizer, pairs, progress=False)
    assert "by_field" not in summary and "field" not in summary["breakdowns"]  # all missing
    assert set(summary["breakdowns"]) == {"paradigm", "phenomenon", "lang"}
    swe = scored[scored["lang"] == "swe"]
    assert summary["breakdowns"]["lang"]["swe"] == {
        "n_pairs": 3, "accuracy": pytest.approx(swe["correct"].mean()),
        "accuracy_token_mean": pytest.approx(swe["correct_token_mean"].mean()),
        "accuracy_byte_norm": pytest.approx(swe["correct_byte_norm"].mean())}
    assert summary["by_lang"]["isl"] == float(scored["correct"].iloc[0])
    assert summary["breakdowns"]["phenomenon"]["SV-#"]["n_pairs"] == 3


# ---------------------------------------------------------------- batching and precision

def test_auto_batch_size_is_the_largest_that_fits(model):
    per_sequence = ev.sequence_bytes(model.config, 20)
    assert per_sequence > 20 * ev.LOGIT_BYTES * model.config.vocab_size  # logits plus layer activations
    budget_gb = 7.5 * per_sequence / 2**30
    assert ev.auto_batch_size(model, 20, memory_budget_gb=budget_gb) == 7
    assert ev.auto_batch_size(model, 20, memory_budget_gb=1e-9) == 1  # never below one
    assert ev.auto_batch_size(model, 10, memory_budget_gb=budget_gb) > 7  # shorter sequences, more of them
    assert ev.memory_budget_bytes("cpu") == int(ev.DEFAULT_CPU_BUDGET_GB * 2**30)
    assert ev.memory_budget_bytes("cpu", 0.5) == 2**29


def test_auto_budget_on_cuda_is_a_fraction_of_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 80 * 2**30))
    assert ev.memory_budget_bytes("cuda") == int(8 * 2**30 * ev.CUDA_FREE_FRACTION)
    assert ev.memory_budget_bytes("cuda:0", 3) == 3 * 2**30


def test_auto_batches_follow_lengths_deterministically(model):
    lengths = [3, 30, 5, 30, 12, 7]
    budget_gb = 2.5 * ev.sequence_bytes(model.config, 30) / 2**30
    batches = ev._plan_batches(model, lengths, "auto", torch.device("cpu"), budget_gb)
    assert batches[0] == [1, 3]  # the two longest, 2.5 fit
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) <= ev.auto_batch_size(model, lengths[b[0]], budget_gb) for b in batches)
    assert batches == ev._plan_batches(model, lengths, None, torch.device("cpu"), budget_gb)
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        ev._plan_batches(model, lengths, 0, torch.device("cpu"), None)


def test_auto_trees_do_not_shrink_with_the_vocabulary():
    # Tree nodes are limited by layer activations; the logits are bounded by slicing the head.
    small, large = (LlamaConfig(vocab_size=v, hidden_size=576, intermediate_size=1536,
                                num_attention_heads=9) for v in (2048, 128_256))
    limits = [ev.tree_limits(types.SimpleNamespace(config=c), "auto", "cpu") for c in (small, large)]
    assert limits[0] == limits[1] == {"max_nodes": 2**26 // 4 // ev.tree_node_bytes(small)}
    assert limits[1]["max_nodes"] >= 256  # enough for BLiMP-sized trees to share their prefixes
    rows = [ev.head_rows(c, "cpu") for c in (small, large)]
    assert rows[0] == 2**26 // 2 // (ev.LOGIT_BYTES * 2048) and rows[1] == ev.MIN_HEAD_ROWS
    assert ev.tree_limits(types.SimpleNamespace(config=large), 32, "cpu") == {"max_sequences": 32}


def test_output_head_in_slices_gives_the_same_scores(model, tokenizer, monkeypatch):
    sentences = SENTENCES + ["The cat sat", "The cat sat on the hat.", "The cat", ""]
    encoded = [encode(tokenizer, s) for s in sentences]
    whole = ev.score_sequences(model, encoded, batch_size=64, progress=False)
    monkeypatch.setattr(ev, "MIN_HEAD_ROWS", 1)
    for rows in (1, 3, 7):
        budget_gb = 2 * rows * ev.LOGIT_BYTES * model.config.vocab_size / 2**30
        assert ev.head_rows(model.config, "cpu", budget_gb) == rows
        sliced = ev.score_sequences(model, encoded, batch_size=64, progress=False,
                                    memory_budget_gb=budget_gb)
        np.testing.assert_allclose(sliced, whole, atol=1e-5, rtol=1e-7)
    assert sliced[-1] == 0.0


def test_scores_do_not_depend_on_batch_size(model, tokenizer):
    pairs = pd.DataFrame({"good": SENTENCES, "bad": SENTENCES[::-1], "paradigm": list("aabbcc")})
    tiny_budget = 2.5 * ev.sequence_bytes(model.config, 12) / 2**30  # forces batches of 1 to 4
    runs = [ev.score_pairs(model, tokenizer, pairs, batch_size=b, progress=False, memory_budget_gb=m)
            for b, m in ((1, None), (4, None), ("auto", None), (None, tiny_budget))]
    for scored, summary in runs[1:]:
        np.testing.assert_allclose(scored["logp_good"], runs[0][0]["logp_good"], atol=1e-5, rtol=1e-7)
        np.testing.assert_allclose(scored["logp_bad"], runs[0][0]["logp_bad"], atol=1e-5, rtol=1e-7)
        assert summary == runs[0][1]


def test_dtype_fp32_on_cpu_and_bf16_autocast(model, tokenizer):
    fp32 = ev.sentence_logprobs(model, tokenizer, SENTENCES, progress=False)
    assert np.array_equal(ev.sentence_logprobs(model, tokenizer, SENTENCES, progress=False, dtype="fp32"), fp32)
    # An explicit fp32 switches off a caller's autocast; "auto" on CPU leaves it alone.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        forced = ev.sentence_logprobs(model, tokenizer, SENTENCES, progress=False, dtype=torch.float32)
        ambient = ev.sentence_logprobs(model, tokenizer, SENTENCES, progress=False)
    assert np.array_equal(forced, fp32)
    bf16 = ev.sentence_logprobs(model, tokenizer, SENTENCES, progress=False, dtype="bf16")
    assert not np.array_equal(bf16, fp32) and not np.array_equal(ambient, fp32)
    np.testing.assert_allclose(bf16, fp32, rtol=0.1, atol=0.5)  # same scores to bf16 precision
    np.testing.assert_allclose(ambient, bf16, atol=1e-6)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        ev.sentence_logprobs(model, tokenizer, SENTENCES, progress=False, dtype="fp8")


# ---------------------------------------------------------------- bits_per_byte

def test_bits_per_byte_matches_manual(model, tokenizer):
    texts = SENTENCES[:3]
    got = ev.bits_per_byte(model, tokenizer, texts, batch_size=2, progress=False)
    ids = [encode(tokenizer, t) for t in texts]
    nll = -sum(manual_logprob(model, i) for i in ids)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert got["n_bytes"] == n_bytes
    assert got["n_tokens"] == sum(len(i) - 1 for i in ids)
    assert got["nll_nats"] == pytest.approx(nll, abs=1e-4)
    assert got["bpb"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-6)
    assert got["token_perplexity"] == pytest.approx(math.exp(nll / got["n_tokens"]), rel=1e-6)
    auto = ev.bits_per_byte(model, tokenizer, texts, batch_size="auto", progress=False)
    assert auto["nll_nats"] == pytest.approx(got["nll_nats"], abs=1e-4)


def test_sliding_windows_cover_every_token_once():
    assert ev.sliding_windows(10, 4) == [(0, 4, 3), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert ev.sliding_windows(3, 4) == [(0, 3, 2)]
    for n_ids in range(1, 40):
        for context in (2, 3, 4, 7, 16):
            windows = ev.sliding_windows(n_ids, context)
            targets = [t for b, e, n in windows for t in range(e - n, e)]
            assert targets == list(range(1, n_ids))
            assert all(e - b <= context and e - n > b for b, e, n in windows if n)


def test_bits_per_byte_sliding_window(tokenizer):
    model = make_model(len(tokenizer), context=256)
    text = " ".join(SENTENCES)
    ids = encode(tokenizer, text)
    assert 16 < len(ids) <= 256
    full = ev.bits_per_byte(model, tokenizer, [text], progress=False)
    long_window = ev.bits_per_byte(model, tokenizer, [text], context_len=len(ids), progress=False)
    assert long_window["nll_nats"] == pytest.approx(full["nll_nats"], abs=1e-4)
    assert full["nll_nats"] == pytest.approx(-manual_logprob(model, ids), abs=1e-4)

    context = 8
    short = ev.bits_per_byte(model, tokenizer, [text, "Many girls"], context_len=context,
                             batch_size=3, progress=False)
    assert short["n_tokens"] == full["n_tokens"] + len(encode(tokenizer, "Many girls")) - 1
    # Manual: each window [b, e) scores the targets the previous window did not reach.
    want = -manual_logprob(model, encode(tokenizer, "Many girls"))
    for begin, end, n in ev.sliding_windows(len(ids), context):
        want -= manual_logprob(model, ids[begin:end], first_target=end - begin - n)
    assert short["nll_nats"] == pytest.approx(want, abs=1e-4)
    # Less context costs a little on a model that uses it, but stays in the same range.
    assert 0.5 < short["bpb"] / full["bpb"] < 2


# ---------------------------------------------------------------- BLiMP loaders

def blimp_record(uid: str, i: int) -> dict:
    return {"sentence_good": f"good {i}", "sentence_bad": f"bad {i}", "field": "syntax",
            "linguistics_term": "island_effects", "UID": uid, "pairID": str(i)}


def write_jsonl_gz(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def test_load_blimp_local_and_subsample(tmp_path):
    for uid in ("b_paradigm", "a_paradigm"):
        write_jsonl_gz(tmp_path / "blimp" / f"{uid}.jsonl.gz",
                       [json.dumps(blimp_record(uid, i)) for i in range(20)])
    df = pair_sources.load_blimp_local(tmp_path)
    assert list(df.columns) == pair_sources.PAIR_COLUMNS
    assert df["paradigm"].unique().tolist() == ["a_paradigm", "b_paradigm"]
    assert df["pair_id"].tolist()[:3] == [0, 1, 2]
    sub = pair_sources.load_blimp_local(tmp_path, paradigms=["b_paradigm"], max_pairs_per_paradigm=5)
    assert len(sub) == 5 and set(sub["paradigm"]) == {"b_paradigm"}
    assert sub["pair_id"].is_monotonic_increasing
    again = pair_sources.load_blimp_local(tmp_path, max_pairs_per_paradigm=5)
    pd.testing.assert_frame_equal(again[again["paradigm"] == "b_paradigm"].reset_index(drop=True),
                                  sub.reset_index(drop=True))
    other_seed = pair_sources.load_blimp_local(tmp_path, paradigms=["b_paradigm"],
                                     max_pairs_per_paradigm=5, seed=1)
    assert other_seed["pair_id"].tolist() != sub["pair_id"].tolist()
    with pytest.raises(ValueError, match="unknown BLiMP paradigm"):
        pair_sources.load_blimp_local(tmp_path, paradigms=["nope"])


def test_load_blimp_local_malformed_json(tmp_path):
    path = tmp_path / "blimp" / "broken.jsonl.gz"
    write_jsonl_gz(path, [json.dumps(blimp_record("broken", 0)), '{"sentence_good": "x",'])
    with pytest.raises(ValueError, match=r"broken\.jsonl\.gz, line 2: malformed JSON"):
        pair_sources.load_blimp_local(tmp_path)


def test_load_blimp_hub_with_mocked_datasets(monkeypatch):
    calls = []

    def load_dataset(name, config, split, cache_dir=None):
        calls.append((name, config, split))
        return [blimp_record(config, i) for i in range(10)]

    fake = types.SimpleNamespace(load_dataset=load_dataset,
                                 get_dataset_config_names=lambda name: ["q_par", "p_par"])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    df = pair_sources.load_blimp_hub(max_pairs_per_paradigm=4)
    assert calls == [("nyu-mll/blimp", "p_par", "train"), ("nyu-mll/blimp", "q_par", "train")]
    assert list(df.columns) == pair_sources.PAIR_COLUMNS
    assert df.groupby("paradigm").size().to_dict() == {"p_par": 4, "q_par": 4}
    assert len(pair_sources.load_blimp_hub(["q_par"])) == 10


def shared_data_dir() -> Path:
    env = os.environ.get("HYPERLLAMA_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_load_blimp_real_data():
    data_dir = shared_data_dir()
    if not (data_dir / "blimp").is_dir():
        pytest.skip(f"real BLiMP data not found at {data_dir / 'blimp'} (set HYPERLLAMA_DATA)")
    df = pair_sources.load_blimp_local(data_dir)
    counts = df.groupby("paradigm").size()
    assert len(counts) == 67
    assert (counts == 1000).all()
    assert df[["good", "bad", "field", "linguistics_term"]].notna().all().all()
    assert not df.duplicated(["paradigm", "pair_id"]).any()
