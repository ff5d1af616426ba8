"""Every notebook under papermill at smoke scale, through `hyperllama reproduce`, then the re-run and
error paths. One smoke run is shared by the module (it takes about a minute)."""
import json
import subprocess
import sys

import nbformat
import pandas as pd
import papermill as pm
import pytest

from conftest import REPO

NOTEBOOKS = ["01_data", "02_upscale", "03_cpt", "04_merge", "05_eval", "06_analysis"]
pytestmark = pytest.mark.slow


def hyperllama(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "hyperllama_lib.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    shared = REPO.parent / "shared" / "data"
    if not (shared / "text").is_dir():
        pytest.skip(f"real data not found at {shared}")
    run_dir = tmp_path_factory.mktemp("smoke")
    res = hyperllama("reproduce", "--scale", "smoke", "--run-dir", str(run_dir), cwd=run_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return run_dir, res


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        book = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert any("parameters" in c.metadata.get("tags", []) for c in code), name
        assert any(c.cell_type == "markdown" for c in book.cells), name


def test_reproduce_runs_every_notebook(smoke_run):
    run_dir, res = smoke_run
    executed = sorted(p.stem for p in (run_dir / "notebooks").glob("*.ipynb"))
    assert executed == ["01_data", "02_upscale", "03_cpt-est", "03_cpt-fao", "03_cpt-fas", "03_cpt-isl",
                        "03_cpt-multilingual", "03_cpt-swe", "04_merge", "05_eval", "06_analysis"]
    for name in ["bpb_vs_target_tokens", "english_bpb_during_cpt", "english_blimp_before_after", "bpb_vs_training_flops",
                 "english_blimp_during_cpt",
                 "merged_vs_multilingual"]:
        for ext in ("png", "pdf"):
            assert (run_dir / "figures" / f"{name}.{ext}").stat().st_size > 1000
    for name in ["data_stats", "heldout_bpb_final", "english_blimp", "merging", "multiblimp", "results_tidy"]:
        assert (run_dir / "tables" / f"{name}.csv").exists() and (run_dir / "tables" / f"{name}.md").exists()


def test_results_are_real_and_complete(smoke_run):
    run_dir, _ = smoke_run
    results = pd.read_csv(run_dir / "results" / "results.csv")
    models = set(results.model)
    assert {"base_1x", "base_2x", "base_1x_cloned"} <= models
    assert len([m for m in models if m.startswith("cpt-")]) == 3 * 6
    assert {f"merged-{s}-{m}" for s in ("1x", "1x_cloned", "2x") for m in ("linear", "ties")} <= models
    blimp = results[results.benchmark == "blimp"].value
    assert blimp.between(0, 1).all() and blimp.nunique() > 1
    bpb = results[results.metric == "bpb"].value
    assert (bpb > 0).all() and bpb.notna().all()
    # every checkpoint saved during CPT is evaluated, with its own step, tokens and FLOPs
    ckpt = results[(results.model == "cpt-2x-multilingual") & ~results["final"].astype(bool)]
    final = results[(results.model == "cpt-2x-multilingual") & results["final"].astype(bool)]
    assert ckpt.step.nunique() >= 2 and ckpt.step.max() < final.step.max()
    per_token = (ckpt.flops_total / ckpt.tokens).round(3).unique()
    assert len(per_token) == 1 and per_token[0] == round(final.flops_total.iloc[0] / final.tokens.iloc[0], 3)
    assert set(results.metric) >= {"accuracy", "bpb"}
    # MultiBLiMP: built from UD (no released files offline); finals in every language, checkpoints in theirs
    mb = results[results.benchmark == "multiblimp"]
    assert set(mb.source) == {"built"} and mb.value.between(0, 1).all()
    assert "accuracy" in set(mb.metric) and any(m.startswith("accuracy:SV-") for m in mb.metric)
    assert set(mb[mb["final"].astype(bool)].lang) == {"eng", "est", "fao", "isl", "fas", "swe"}
    assert not (mb[~mb["final"].astype(bool)].lang == "eng").any()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"]["english/base_1x_cloned"]["max_logit_difference"] < 1e-4
    assert manifest["steps"]["data"]["data_hash"]


def test_second_run_skips_finished_steps(smoke_run):
    run_dir, _ = smoke_run
    before = json.loads((run_dir / "manifest.json").read_text())["steps"]
    out = run_dir / "again.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "03_cpt.ipynb"), str(out), cwd=str(run_dir),
                        parameters={"scale": "smoke", "lang": "faroese", "run_dir": str(run_dir)},
                        progress_bar=False)
    text = out.read_text()
    assert "up to date, skipped" in text and "running" not in text.replace("up to date", "")
    after = json.loads((run_dir / "manifest.json").read_text())["steps"]
    assert before == after


def test_bad_parameter_stops_before_any_work(tmp_path):
    out = tmp_path / "bad.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(REPO / "notebooks" / "03_cpt.ipynb"), str(out),
                            parameters={"scale": "smoke", "lang": "klingon", "run_dir": str(tmp_path / "run")},
                            progress_bar=False)
    assert e.value.ename == "ParamError" and "valid choices" in e.value.evalue
    assert not (tmp_path / "run").exists()
    res = hyperllama("reproduce", "--scale", "smoke", "--set", "lrr=1", "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "did you mean 'lr'" in res.stderr
    assert not (tmp_path / "run").exists()


def test_cpt_before_upscale_says_which_notebook_to_run(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(REPO / "notebooks" / "03_cpt.ipynb"), str(tmp_path / "o.ipynb"),
                            parameters={"scale": "smoke", "lang": "persian", "run_dir": str(tmp_path / "run")},
                            progress_bar=False)
    assert e.value.ename == "MissingInputError" and "01_data" in e.value.evalue
