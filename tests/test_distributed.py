"""Data-parallel training under torchrun (gloo on CPU): two processes, DDP or FSDP, take the same optimiser
steps as one process with the same global batch, and resume from their own resume states.

Run as a script by torch.distributed.run, this file is also the worker of that launch."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperllama_lib import training
from hyperllama_lib.corpus import packing
from hyperllama_lib.models import modeling
from hyperllama_lib.params import ParamError, load_params
from hyperllama_lib.training import distributed

pytestmark = pytest.mark.slow
STEPS, MICRO, GLOBAL, SEQ = 4, 2, 8, 64  # 4 micro-batches a step: 2 on each of 2 ranks
KINDS = ("ddp", "fsdp")


def toy_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers import models as tm
    from transformers import PreTrainedTokenizerFast
    vocab = {f"t{i}": i for i in range(64)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tm.WordLevel(vocab, unk_token="t0")),
                                   bos_token="t1", eos_token="t2")


def tiny_params(tmp: Path, **overrides):
    return load_params("smoke", {"run_dir": str(tmp), "micro_batch_size": MICRO, "global_batch_size": GLOBAL,
                                 "checkpoint_every_tokens": 2 * GLOBAL * SEQ, "warmup_steps": 1, **overrides},
                       need_data=False)


def tiny_stage(tmp: Path, out: Path) -> training.Stage:
    tokens = tmp / "s.bin"
    if not tokens.exists():
        rng = np.random.default_rng(0)
        packing.write_tokens(tokens, [rng.integers(3, 64, size=STEPS * GLOBAL * SEQ).tolist()], SEQ)
    return training.Stage("t", tokens, out, steps=STEPS, eval_texts={"eng": ["t3 t4 t5 t6", "t7 t8"]})


def tiny_model():
    cfg = modeling.smollm2_config(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  head_dim=8, intermediate_size=64, max_position_embeddings=128)
    return modeling.new_model(cfg, seed=0)


def _worker(tmp: Path) -> None:
    """Each rank: train with DDP, then FSDP, each once from scratch and once resumed from its step-2 state."""
    torch.set_num_threads(1)
    for kind in KINDS:
        p, lines = tiny_params(tmp, distributed=kind), []
        model = tiny_model()
        training.train(model, toy_tokenizer(), tiny_stage(tmp, tmp / kind), p, log=lines.append)
        if kind == "ddp":  # each rank holds the whole model (FSDP ranks hold different shards)
            weights = hashlib.sha256(b"".join(q.detach().numpy().tobytes() for q in model.parameters()))
            (tmp / f"ddp-rank{distributed.rank()}.sha256").write_text(weights.hexdigest())
        if distributed.is_main():
            shutil.copytree(training.StageFolder(tmp / kind).resume, training.StageFolder(tmp / f"{kind}-resumed").resume)
        distributed.barrier()
        training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp, tmp / f"{kind}-resumed"), p,
                       log=lines.append)
        (tmp / f"{kind}-rank{distributed.rank()}.log").write_text("\n".join(lines))
    distributed.finish()


def _losses(out: Path) -> np.ndarray:
    rows = (out / "train_log.csv").read_text().splitlines()
    column = rows[0].split(",").index("loss")
    return np.array([float(r.split(",")[column]) for r in rows[1:]])


def _max_weight_difference(a: Path, b: Path) -> float:
    sa, sb = modeling.load_model(a).state_dict(), modeling.load_model(b).state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The single-process reference, and the two-process launch (DDP and FSDP, fresh and resumed)."""
    tmp = tmp_path_factory.mktemp("dist")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' arithmetic; restored so later tests see the usual pool
    try:
        training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp, tmp / "single"), tiny_params(tmp),
                       log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           __file__, str(tmp)], env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_take_the_same_steps_as_one(runs, kind):
    single, multi = _losses(runs / "single"), _losses(runs / kind)
    assert len(multi) == STEPS
    assert np.allclose(multi, single, rtol=1e-5, atol=0), (multi, single)
    assert _max_weight_difference(runs / "single" / "final", runs / kind / "final") < 1e-5
    # rank 0 alone wrote the checkpoint and the resume state; no temporaries are left
    assert (runs / kind / "checkpoints" / "step_000002" / "model.safetensors").exists()
    assert (runs / kind / "resume" / "step_000002" / "state.json").exists()
    assert not [f for f in (runs / kind).rglob(".*")]
    assert json.loads((runs / kind / "summary.json").read_text())["processes"] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_resume_from_their_state(runs, kind):
    log = (runs / f"{kind}-rank0.log").read_text()
    assert "resuming from step 2 of 4" in log
    assert not (runs / f"{kind}-rank1.log").read_text()  # only rank 0 logs
    assert np.array_equal(_losses(runs / f"{kind}-resumed"), _losses(runs / kind))
    assert _max_weight_difference(runs / kind / "final", runs / f"{kind}-resumed" / "final") == 0.0


def test_ddp_ranks_end_with_identical_weights(runs):
    assert (runs / "ddp-rank0.sha256").read_text() == (runs / "ddp-rank1.sha256").read_text()


def test_global_batch_must_split_into_whole_micro_batches_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ParamError, match="not a multiple of micro_batch_size 2 x 3 processes"):
        training.train(tiny_model(), toy_tokenizer(), tiny_stage(tmp_path, tmp_path / "out"), tiny_params(tmp_path))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
