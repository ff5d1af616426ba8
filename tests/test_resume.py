"""Crash-safe resume: a training stage SIGKILLed at random moments and started again ends with the same
bytes as an uninterrupted run (CPU)."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tqdm.auto
import tqdm.std

from hyperllama_lib import training
from hyperllama_lib.corpus import packing
from hyperllama_lib.models import modeling
from hyperllama_lib.params import load_params
from hyperllama_lib.training import adapters

STEPS, EVERY = 40, 4  # a resume state every 4 steps


def toy_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers import models as tm
    from transformers import PreTrainedTokenizerFast
    vocab = {f"t{i}": i for i in range(64)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tm.WordLevel(vocab, unk_token="t0")),
                                   bos_token="t1", eos_token="t2")


def tiny_params(tmp: Path, **overrides):
    return load_params("smoke", {"run_dir": str(tmp), "checkpoint_every_tokens": EVERY * 8 * 64,
                                 "train_eval_every_tokens": 2 * 8 * 64, **overrides}, need_data=False)


def tiny_stage(tmp: Path, out: Path, steps: int = STEPS) -> training.Stage:
    tokens = tmp / "s.bin"
    if not tokens.exists():
        rng = np.random.default_rng(0)
        packing.write_tokens(tokens, [rng.integers(3, 64, size=40 * 8 * 64).tolist()], 64)
    return training.Stage("t", tokens, out, steps=steps, eval_texts={"eng": ["t3 t4 t5 t6", "t7 t8"]})


def tiny_model():
    cfg = modeling.smollm2_config(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  head_dim=8, intermediate_size=64, max_position_embeddings=128)
    return modeling.new_model(cfg, seed=0)


def _child(tmp: str, out: str, log_file: str, lora: bool) -> None:
    torch.set_num_threads(1)  # forked from pytest: no OpenMP pool, and the same arithmetic in every run
    # tqdm's default lock is a semaphore shared with the parent across fork: a SIGKILL while the
    # child holds it would leave pytest waiting forever. A lock of the child's own cannot.
    lock = threading.RLock()
    for bar_class in (tqdm.std.tqdm, tqdm.auto.tqdm):  # the library draws tqdm.std bars outside notebooks
        bar_class.set_lock(lock)
    p = tiny_params(Path(tmp))
    model = adapters.wrap(tiny_model(), p) if lora else tiny_model()
    with open(log_file, "a") as log:
        training.train(model, toy_tokenizer(), tiny_stage(Path(tmp), Path(out)), p,
                       log=lambda m: (log.write(m + "\n"), log.flush()))


def _newest_state(out: Path) -> int:
    states = sorted(training.StageFolder(out).resume.glob("step_*"))
    return int(states[-1].name.removeprefix("step_")) if states else 0


def run_child(ctx, tmp: Path, out: Path, kill_after_state_above: int | None = None, delay: float = 0.0,
              lora: bool = False):
    """Train in a forked process; with kill_after_state_above, SIGKILL it `delay` seconds after a resume
    state newer than that step appears. Returns (exit code, newest state seen)."""
    proc = ctx.Process(target=_child, args=(str(tmp), str(out), str(tmp / f"{out.name}.log"), lora))
    proc.start()
    if kill_after_state_above is not None:
        deadline = time.time() + 120
        while _newest_state(out) <= kill_after_state_above and proc.is_alive() and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(120)
    return proc.exitcode, _newest_state(out)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sigkill_at_random_moments_then_resume_gives_identical_bytes(tmp_path, lora):
    ctx = multiprocessing.get_context("fork")
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    start = time.perf_counter()
    assert run_child(ctx, tmp_path, ref, lora=lora)[0] == 0
    # Kill up to 1.5 resume-state intervals after a new state appears (at most 0.25 s), so that
    # three kills land at random moments and still before the run's end on a fast machine.
    max_delay = min(0.25, 1.5 * (time.perf_counter() - start) / (STEPS // EVERY))
    rng = random.Random(os.getpid())
    seen = 0
    for _ in range(3):
        code, seen = run_child(ctx, tmp_path, crashed, kill_after_state_above=seen,
                               delay=rng.uniform(0, max_delay), lora=lora)
        assert code == -signal.SIGKILL, "the run ended before it could be killed"
    assert 0 < seen < STEPS
    assert run_child(ctx, tmp_path, crashed, lora=lora)[0] == 0
    log = (tmp_path / "crashed.log").read_text()
    assert log.count("resuming from step") == 3  # every restart resumed, none started over
    for rel in ["final/model.safetensors", "train_log.csv", "curve.csv",
                *(["adapter/adapter_model.safetensors", "adapter/adapter_config.json"] if lora else []),
                *[f"checkpoints/step_{s:06d}/model.safetensors" for s in range(EVERY, STEPS, EVERY)]]:
        assert (crashed / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert not any(f.name.startswith(".") for f in crashed.rglob("*")), "temporaries left behind"


def test_resume_state_of_other_parameters_or_corrupted_is_not_used(tmp_path):
    out = tmp_path / "run"
    p = tiny_params(tmp_path)
    training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp_path, out, steps=9), p, log=lambda m: None)
    assert [d.name for d in (out / "resume").iterdir()] == ["step_000008"]  # keep_resume_states: 1
    logs = []
    # another learning rate: the state is not used, training starts over and removes it
    training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp_path, out, steps=9),
                   tiny_params(tmp_path, lr=1e-3), log=logs.append)
    assert any("made by another run" in m for m in logs) and not any("resuming from step" in m for m in logs)
    # a flipped byte in the state's weights: detected by its sha256, not used
    weights = out / "resume" / "step_000008" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    logs.clear()
    training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp_path, out, steps=9),
                   tiny_params(tmp_path, lr=1e-3), log=logs.append)
    assert any("model.safetensors differs from its recorded sha256" in m for m in logs)
    assert not any("resuming from step" in m for m in logs)


def test_resume_in_process_matches_and_keeps_the_last_k(tmp_path):
    """Resuming from a state (here after an exception at step 6) gives the uninterrupted weights."""
    p = tiny_params(tmp_path, keep_resume_states=2, keep_checkpoints=1)
    ref = tiny_model()
    training.train(ref, toy_tokenizer(), tiny_stage(tmp_path, tmp_path / "ref", 14), p, log=lambda m: None)

    model = tiny_model()
    calls = {"n": 0}
    forward = model.forward

    def crash_at_step_11(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt  # like Ctrl-C in a notebook
        return forward(*args, **kwargs)

    model.forward = crash_at_step_11
    with pytest.raises(KeyboardInterrupt):
        training.train(model, toy_tokenizer(), tiny_stage(tmp_path, tmp_path / "run", 14), p, log=lambda m: None)
    run = tmp_path / "run"
    assert sorted(d.name for d in (run / "resume").iterdir()) == ["step_000004", "step_000008"]
    assert [d.name for d in (run / "checkpoints").iterdir()] == ["step_000008"]  # keep_checkpoints: 1
    logs = []
    resumed = tiny_model()
    summary = training.train(resumed, toy_tokenizer(), tiny_stage(tmp_path, run, 14), p, log=logs.append)
    assert summary["resumed_from_step"] == 8 and any("resuming from step 8 of 14" in m for m in logs)
    for (name, a), (_, b) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert (run / "curve.csv").read_text() == (tmp_path / "ref" / "curve.csv").read_text()
    training.remove_resume_states(run)
    assert not (run / "resume").exists()
