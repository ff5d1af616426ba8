"""Which parameters enter which step's fingerprint (hyperllama_lib.fingerprints), and steps that
must be redone when one changes."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import run_cli
from test_released import hub, save_release, small_1x, small_2x, smoke  # noqa: F401  (hub: a fixture)

from hyperllama_lib import artifacts, fingerprints
from hyperllama_lib.models import released
from hyperllama_lib.params import FIELDS, load_params
from hyperllama_lib.pipeline import cpt, layout, merge, upscale
from hyperllama_lib.training import resume


def quiet(message: str) -> None:
    pass


def test_every_parameter_enters_steps_or_says_why_not():
    entering, not_entering = set(fingerprints.STEPS_OF), set(fingerprints.NO_STEP)
    assert not entering & not_entering, f"in both parts of the table: {sorted(entering & not_entering)}"
    assert set(FIELDS) - entering - not_entering == set(), "Params fields missing from the table"
    assert entering | not_entering <= set(FIELDS), "the table names parameters that Params lacks"
    for name, steps in fingerprints.STEPS_OF.items():
        assert steps and set(steps) <= set(fingerprints.STEPS), (name, steps)
    for name, why in fingerprints.NO_STEP.items():
        assert why.strip() and "\n" not in why, name


def test_each_steps_keys_name_real_parameters():
    for step in fingerprints.STEPS:
        assert set(fingerprints.keys(step)) <= set(FIELDS), step
    assert fingerprints.keys("clone") == ["clone_factor"]
    with pytest.raises(ValueError, match="unknown step kind 'train'"):
        fingerprints.keys("train")


def test_resume_states_need_everything_that_shapes_training():
    """A resume state made under other training parameters must not be used: the resume key covers
    every parameter of the training steps (and what changes its held-out curve)."""
    # keep_checkpoints decides which checkpoints a finished stage keeps, not what training computes
    assert set(fingerprints.keys("cpt")) - {"keep_checkpoints"} <= set(resume.RESUME_KEYS)
    assert set(fingerprints.keys("english")) <= set(resume.RESUME_KEYS)


def test_named_files_follow_their_contents(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a\n")
    p = load_params("smoke", {"eval_pairs_files": [str(pairs)]}, need_data=False)
    before = fingerprints.named_files(p)
    pairs.write_text("b\n")
    assert fingerprints.named_files(p) != before


def test_changing_seed_steps_retrains_the_seed(tmp_path, data_dir):
    """The issue's two commands: the second used to pass with the seed trained for the old 12 steps,
    because 01_data (which writes the steps into plan.json) left seed_steps out of its fingerprint."""
    run = tmp_path / "stale-check"
    common = ["reproduce", "--scale", "smoke", "--only", "upscale", "--langs", "est", "--run-dir", run]

    def seed_steps() -> tuple[int, int, int]:
        manifest = artifacts.Manifest(run).entry("english/seed")
        log = pd.read_csv(run / "models" / "english" / "seed" / "train_log.csv")
        return json.loads((run / "data" / "plan.json").read_text())["seed_steps"], manifest["steps"], len(log)

    first = run_cli(*common)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert seed_steps() == (12, 12, 12)
    second = run_cli(*common, "--set", "seed_steps=20")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert seed_steps() == (20, 20, 20)


# -- models_from: hub (the released models stand-ins of test_released) --------------------------------

def data_step(p, vocab_size: int = 97) -> None:
    """01_data's record as far as fetching reads it; another vocabulary is another fingerprint."""
    plan = layout.of(p).data.plan
    artifacts.atomic.write_json(plan, {"vocab_size": vocab_size, "cpt_steps": {"est": 7, "fao": 3}})
    with artifacts.Step(p.run_path, layout.DATA_STEP, {"vocab_size": vocab_size}, log=quiet) as s:
        s.outputs = [plan]


def hub_run(tmp_path, hub, **overrides):  # noqa: F811
    """Fetched 1x models of two languages and their linear merge."""
    p = smoke(tmp_path, setups=["1x"], **overrides)
    data_step(p)
    hub.repos[released.ENGLISH_REPOS["1x"]] = save_release(small_1x(0), tmp_path / "base-1x")
    hub.repos[released.ENGLISH_REPOS["2x"]] = save_release(small_2x(0), tmp_path / "base-2x")
    for i, lang in enumerate(("est", "fao")):
        hub.repos[released.repo_for(p, "1x", lang)[0]] = save_release(small_1x(10 + i), tmp_path / f"1x-{lang}")
    return p


def run_steps(p) -> None:
    upscale.run(p, log=quiet)
    for lang in p.langs:
        cpt.run(p, lang, log=quiet)
    merge.run(p, log=quiet)


def test_another_base_redoes_the_merges_against_it(tmp_path, hub):  # noqa: F811
    p = hub_run(tmp_path, hub)
    run_steps(p)
    manifest = artifacts.Manifest(p.run_path)
    merged, adapted = manifest.entry("merge/1x/linear"), manifest.entry("cpt/1x/est")
    hub.repos["me/other-base"] = save_release(small_1x(5), tmp_path / "other-base")
    q = smoke(tmp_path, setups=["1x"], released_repos={"1x/eng": "me/other-base"})
    run_steps(q)
    assert manifest.entry("cpt/1x/est")["fingerprint"] == adapted["fingerprint"]  # the adapted model stays
    again = manifest.entry("merge/1x/linear")
    assert again["fingerprint"] != merged["fingerprint"] and again["hashes"] != merged["hashes"]


def test_fetched_models_are_checked_again_when_01_data_changes(tmp_path, hub):  # noqa: F811
    p = hub_run(tmp_path, hub)
    run_steps(p)
    data_step(p, vocab_size=128256)  # 01_data rerun with another tokenizer
    with pytest.raises(released.ReleasedModelError, match="97 ids, but 01_data's tokenizer has 128256"):
        upscale.run(p, log=quiet)


def test_hub_runs_hash_the_local_evaluation_sets_they_read(tmp_path):
    """A Hub run still reads blimp/, udhr/, ud/ and unimorph/ of a local data folder (decontamination, pairs
    built from UD): a change there redoes 01_data; its text/ is not read, so it is not hashed."""
    from hyperllama_lib.pipeline import data

    for sub in ("text", "blimp"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.txt").write_text("one\n")
    p = load_params("smoke", {"data_source": "hub", "data_dir": str(tmp_path)}, need_data=False)
    before = data.data_hash(p)
    (tmp_path / "text" / "a.txt").write_text("two\n")
    assert data.data_hash(p) == before
    (tmp_path / "blimp" / "a.txt").write_text("two\n")
    assert data.data_hash(p) != before
