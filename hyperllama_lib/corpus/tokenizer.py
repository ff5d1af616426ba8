"""Tokenizers: the real Llama-3 tokenizer (built offline) and small byte-level BPEs.

Both are returned as transformers `PreTrainedTokenizerFast`, so model folders can save them.
Neither inserts BOS automatically (no post-processor template): `tok.encode(x)` and `tok(x)` give
just the text's ids, and `encode_documents` prepends BOS explicitly, as the paper's scoring
("log-probability conditioned on BOS") and packing need.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..errors import ParamError

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
LLAMA3_VOCAB_SIZE = 128_256  # 128,000 BPE ranks + 256 special tokens


def _llama3_source():
    from llama_models.llama3.tokenizer import Tokenizer as Llama3Tiktoken

    return Llama3Tiktoken


def llama3_pattern() -> str:
    """Llama-3's pre-tokenizer regex, as llama_models defines it."""
    return _llama3_source().pat_str


def llama3_model_path() -> Path:
    """The `tokenizer.model` (tiktoken BPE ranks) shipped in the llama_models package."""
    import llama_models

    return Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"


def _pre_tokenizer(pattern: str) -> pre_tokenizers.PreTokenizer:
    # Split on the regex first, then map bytes to printable characters (GPT-2 byte level).
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS)


@functools.lru_cache(maxsize=1)
def _llama3_backend() -> Tokenizer:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    source = _llama3_source().get_instance()
    specials = sorted(source.special_tokens, key=source.special_tokens.get)
    converter = TikTokenConverter(
        vocab_file=str(llama3_model_path()), pattern=source.pat_str, extra_special_tokens=specials
    )
    backend = converter.converted()
    backend.post_processor = None  # no automatic BOS, and no offset trimming to keep
    return backend


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """The Llama-3 tokenizer (128,256 ids), converted offline from llama_models' tiktoken file.

    Ids 0..127,999 are the BPE ranks; 128,000.. are llama_models' special tokens in its order
    (`<|begin_of_text|>` = 128000, `<|end_of_text|>` = 128001, `<|reserved_special_token_0|>`, ...).
    The conversion is cached per process; every call returns an independent tokenizer
    (transformers deep-copies the backend it is given).
    """
    tok = _wrap(_llama3_backend())
    if len(tok) != LLAMA3_VOCAB_SIZE or tok.bos_token_id != 128_000:
        raise RuntimeError(f"Llama-3 conversion gave {len(tok)} ids, BOS id {tok.bos_token_id}")
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts` with Llama-3's pre-tokenizer regex.

    Ids 0 and 1 are BOS and EOS, then the 256 byte symbols, then merges. Training has no
    randomness: the same texts in the same order give the same tokenizer.
    """
    if vocab_size < 258:
        raise ParamError(f"vocab_size must be at least 258 (2 special tokens + 256 bytes), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = _pre_tokenizer(llama3_pattern())
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return _wrap(backend)


def save_tokenizer(tok: PreTrainedTokenizerFast, directory: str | Path) -> None:
    tok.save_pretrained(str(directory))


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    from ..models.modeling import ModelFolderError

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise ModelFolderError(f"{directory}: no tokenizer.json; redo the step that wrote it")
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(directory))
    except Exception as e:  # tokenizers raises plain Exception subclasses for a damaged file
        raise ModelFolderError(f"{path}: unreadable tokenizer ({type(e).__name__}: {e}); "
                               "redo the step that wrote it") from None


def encode_documents(
    tok: PreTrainedTokenizerFast, texts: list[str], add_bos: bool = True, add_eos: bool = False
) -> list[list[int]]:
    """Token ids of each text, batched in the `tokenizers` backend (parallel).

    Special-token strings inside the texts (e.g. a literal "<|end_of_text|>" in a web page) are
    encoded as ordinary text, so only the BOS/EOS added here are special ids.
    """
    backend = tok.backend_tokenizer
    previous = backend.encode_special_tokens
    backend.encode_special_tokens = True
    try:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
    finally:
        backend.encode_special_tokens = previous
    head = [tok.bos_token_id] if add_bos else []
    tail = [tok.eos_token_id] if add_eos else []
    return [head + enc.ids + tail for enc in encodings]


# -- tokenising in a pool of processes (01_data's streaming path) ---------------------------------

_WORKER: dict = {}  # the tokenizer of this worker process, rebuilt from its JSON by init_worker


def worker_state(tok: PreTrainedTokenizerFast) -> tuple[str, int | None, int | None]:
    """What a worker process needs to encode like `encode_documents`: the backend's JSON, BOS, EOS."""
    return tok.backend_tokenizer.to_str(), tok.bos_token_id, tok.eos_token_id


def init_worker(state: tuple[str, int | None, int | None]) -> None:
    backend = Tokenizer.from_str(state[0])
    backend.encode_special_tokens = True  # literal special-token strings in text are plain text
    _WORKER.update(backend=backend, bos=state[1], eos=state[2])


def encode_in_worker(texts: list[str], add_bos: bool = True) -> list[np.ndarray]:
    """`encode_documents` with the worker's tokenizer, as uint32 arrays (half the bytes to send back)."""
    encodings = _WORKER["backend"].encode_batch(list(texts), add_special_tokens=False)
    head = [_WORKER["bos"]] if add_bos else []
    return [np.array(head + enc.ids, dtype=np.uint32) for enc in encodings]


@contextlib.contextmanager
def _children_without_tokenizers_threads() -> Iterator[None]:
    # Forked children must not use the Rust thread pool the parent may have started; the environment
    # variable, inherited at fork, makes them encode on their own thread (and keeps tokenizers quiet).
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def ordered_map(fn: Callable, items: Iterable, workers: int, initializer: Callable | None = None,
                initargs: tuple = ()) -> Iterator:
    """fn(item) for each item, in input order, computed by `workers` processes (in this process when
    workers <= 1). At most 2 x workers items are in flight, so a long input is never read ahead into
    memory. `fn` and `initializer` must be module-level functions."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    with _children_without_tokenizers_threads():
        pool = _context().Pool(workers, initializer, initargs)
    with pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
