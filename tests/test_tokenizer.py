"""Tests of hyperllama_lib.corpus.tokenizer: the offline Llama-3 tokenizer and small trained BPEs."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_data

from hyperllama_lib import corpus
from hyperllama_lib.corpus import tokenizer as T

SAMPLES = [
    "از آنجا که شناسائی حیثیت ذاتی کلیهٔ اعضای خانواده بشری",  # Persian, with a ZWNJ-free run
    "می\u200cخواهم ۱۲۳۴ کتاب؟",  # Persian ZWNJ and Persian digits
    "Mannréttindayfirlýsing Sameinuðu þjóðanna. Öll erum vér borin frjáls.",  # Icelandic
    "Hetta er ein føroysk setning við ð og ø.",  # Faroese
    "Inimõiguste ülddeklaratsioon: kõik inimesed sünnivad vabadena.",  # Estonian
    "Don't split   spaces\n\nor 1234567 digits!",
]


@pytest.fixture(scope="module")
def llama3():
    return T.llama3_tokenizer()


def test_llama3_vocabulary_and_special_ids(llama3):
    assert len(llama3) == T.LLAMA3_VOCAB_SIZE == 128_256
    assert llama3.bos_token == "<|begin_of_text|>" and llama3.bos_token_id == 128_000
    assert llama3.eos_token == "<|end_of_text|>" and llama3.eos_token_id == 128_001
    assert llama3.convert_tokens_to_ids("<|reserved_special_token_0|>") == 128_002
    assert llama3.convert_tokens_to_ids("<|eot_id|>") == 128_009
    assert llama3.convert_tokens_to_ids("<|reserved_special_token_245|>") == 128_255


def test_llama3_matches_tiktoken(llama3):
    import tiktoken
    from llama_models.tokenizer_utils import load_bpe_file

    reference = tiktoken.Encoding(
        name="llama3", pat_str=T.llama3_pattern(), mergeable_ranks=load_bpe_file(T.llama3_model_path()),
        special_tokens={},
    )
    for text in SAMPLES:
        ids = llama3.encode(text)  # no BOS inserted automatically
        assert ids == reference.encode(text), text
        assert llama3.decode(ids) == text


def test_llama3_calls_are_independent(llama3):
    other = T.llama3_tokenizer()
    other.backend_tokenizer.enable_truncation(3)
    assert len(llama3.encode(SAMPLES[2])) > 3


def test_encode_documents(llama3):
    texts = ["Hello world", "Ég <|end_of_text|> fer"]
    with_bos = T.encode_documents(llama3, texts)
    assert with_bos[0] == [128_000] + llama3.encode("Hello world")
    # A special-token string inside a document is plain text, not the EOS id.
    assert 128_001 not in with_bos[1] and llama3.decode(with_bos[1][1:]) == texts[1]
    assert T.encode_documents(llama3, texts, add_bos=False, add_eos=True)[0] == llama3.encode("Hello world") + [128_001]
    assert llama3.encode("<|end_of_text|>") == [128_001]  # outside encode_documents it is special


def test_save_and_load_llama3(llama3, tmp_path: Path):
    T.save_tokenizer(llama3, tmp_path)
    loaded = T.load_tokenizer(tmp_path)
    assert len(loaded) == 128_256 and loaded.bos_token_id == 128_000
    assert loaded.encode(SAMPLES[0]) == llama3.encode(SAMPLES[0])


def _training_texts() -> list[str]:
    data = shared_data()
    if (data / "udhr").is_dir():
        return [line for code in ("eng", "isl", "fas") for line in corpus.udhr_lines(data, code)]
    return SAMPLES * 20


def test_train_bpe(tmp_path: Path):
    texts = _training_texts()
    tok = T.train_bpe(texts, vocab_size=600)
    assert len(tok) <= 600
    assert (tok.bos_token_id, tok.eos_token_id) == (0, 1)
    assert tok.convert_ids_to_tokens([0, 1]) == [T.BOS, T.EOS]
    for text in SAMPLES:
        ids = tok.encode(text)
        assert ids[0] != tok.bos_token_id and tok.decode(ids) == text
    assert T.train_bpe(texts, vocab_size=600).get_vocab() == tok.get_vocab()  # deterministic

    T.save_tokenizer(tok, tmp_path)
    loaded = T.load_tokenizer(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab() and loaded.bos_token == T.BOS
    assert T.encode_documents(loaded, SAMPLES[:2]) == T.encode_documents(tok, SAMPLES[:2])
    with pytest.raises(ValueError, match="at least 258"):
        T.train_bpe(texts, vocab_size=100)
