"""Every notebook under papermill at smoke scale, through `hyperllama reproduce` (killed once while it
trains, then resumed), then the re-run and error paths. The smoke run, on two languages, is shared by
the module (it takes about three minutes: most of it is starting 23 notebook kernels)."""
import importlib.util
import json
import signal
import subprocess
import sys
import time

import nbformat
import pandas as pd
import papermill as pm
import pytest
from conftest import REPO, run_cli

from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import runner

NOTEBOOKS = ["01_data", "02_upscale", "03_cpt", "04_merge", "05_eval", "06_analysis"]
pytestmark = pytest.mark.slow


def hyperllama(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "hyperllama_lib.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def record(run_dir, label):
    try:
        return json.loads((run_dir / "grid" / f"{label}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Start the smoke grid, stop it with SIGTERM while the first CPT job trains, then run it to the end."""
    shared = REPO.parent / "shared" / "data"
    if not (shared / "text").is_dir():
        pytest.skip(f"real data not found at {shared}")
    run_dir = tmp_path_factory.mktemp("smoke")
    args = ["reproduce", "--scale", "smoke", "--langs", "est,fao", "--jobs", "2", "--run-dir", str(run_dir)]
    log = run_dir.parent / f"{run_dir.name}-killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hyperllama_lib.cli", *args], cwd=run_dir, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if any((record(run_dir, f"03_cpt-{s}-each") or {}).get("state") == "running" for s in ("1x", "2x")):
                time.sleep(3)  # inside the notebook, training
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        killed_code = proc.wait(timeout=120)
    res = hyperllama(*args, cwd=run_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return run_dir, res, (killed_code, log.read_text())


def expected_labels():
    return sorted(j.label for j in runner.plan_jobs(load_params("smoke", {"langs": ["est", "fao"]}, need_data=False)))


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        book = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert any("parameters" in c.metadata.get("tags", []) for c in code), name
        assert any(c.cell_type == "markdown" for c in book.cells), name


def test_committed_notebooks_are_what_the_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "tools" / "make_notebooks.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    written = generator.write(tmp_path)
    assert sorted(p.stem for p in written) == NOTEBOOKS
    for path in written:
        committed = REPO / "notebooks" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} differs from what tools/make_notebooks.py writes: edit the generator (not the "
            "notebook), run `python tools/make_notebooks.py` and commit both")


def test_reproduce_runs_every_notebook(smoke_run):
    run_dir, res, _ = smoke_run
    executed = sorted(p.stem for p in (run_dir / "notebooks").glob("*.ipynb"))
    # data, upscale; per setup (5 by default, 2 of them LoRA) a multilingual and an "each" CPT job, a merge
    # and an evaluation; analysis
    assert executed == expected_labels() and len(executed) == 2 + 5 * 4 + 1
    assert sorted(p.stem for p in (run_dir / "notebooks").glob("*.html")) == executed
    assert all(record(run_dir, label)["state"] == "done" for label in executed)
    for name in ["bpb_vs_target_tokens", "english_bpb_during_cpt", "english_blimp_before_after", "bpb_vs_training_flops",
                 "english_blimp_during_cpt", "data_budget", "english_forgetting", "merge_methods",
                 "merged_vs_multilingual"]:
        for ext in ("png", "pdf"):
            assert (run_dir / "figures" / f"{name}.{ext}").stat().st_size > 1000
    for name in ["data_budget", "heldout_bpb_final", "data_efficiency", "flop_matched", "english_blimp", "forgetting",
                 "merging", "multiblimp", "findings"]:
        assert (run_dir / "tables" / f"{name}.csv").exists() and (run_dir / "tables" / f"{name}.md").exists()


def test_killed_run_resumes_without_redoing_finished_steps(smoke_run):
    run_dir, res, (killed_code, killed_log) = smoke_run
    assert killed_code == 130 and "interrupted" in killed_log, killed_log[-2000:]
    assert "[grid] data done" in killed_log and "[grid] upscale done" in killed_log
    assert "[grid] data up to date, skipped" in res.stdout and "[grid] upscale up to date, skipped" in res.stdout
    interrupted = [line.split()[1] for line in killed_log.splitlines() if line.startswith("[grid] cpt/")
                   and " running" in line]
    finished_before = [line.split()[1] for line in killed_log.splitlines() if line.endswith("s") and " done in " in line]
    assert interrupted
    for job in interrupted:
        if job not in finished_before:
            assert f"[grid] {job} done in" in res.stdout
    for job in finished_before:
        assert f"[grid] {job} up to date, skipped" in res.stdout


def test_status_and_plan_of_the_finished_grid(smoke_run):
    run_dir, _, _ = smoke_run
    common = ["--scale", "smoke", "--langs", "est,fao", "--run-dir", str(run_dir)]
    status = run_cli("status", *common)
    assert status.returncode == 0, status.stderr
    assert "23 of 23 steps done" in status.stdout and "cpt/2x_lora/each" in status.stdout
    plan = run_cli("plan", *common)
    lines = plan.stdout.strip().splitlines()
    assert len(lines) == 23 and all(line.startswith("papermill notebooks/0") for line in lines)
    again = run_cli("reproduce", *common)
    assert again.returncode == 0 and again.stdout.count("up to date, skipped") == 23, again.stdout[-2000:]


def test_results_are_real_and_complete(smoke_run):
    run_dir, _, _ = smoke_run
    results = pd.read_csv(run_dir / "results" / "results.csv")
    models = set(results.model)
    assert {"base_1x", "base_2x", "base_1x_cloned"} <= models
    assert len([m for m in models if m.startswith("cpt-")]) == 5 * 3
    # an English base serves every setup built on it, scored once and listed once per setup
    assert not results.duplicated(["model", "setup", "step", "final", "benchmark", "lang", "metric"]).any()
    bases = set(zip(results[results.kind == "base"].model, results[results.kind == "base"].setup))
    assert bases == {("base_1x", "1x"), ("base_1x", "1x_lora"), ("base_1x_cloned", "1x_cloned"), ("base_2x", "2x"),
                     ("base_2x", "2x_lora")}
    assert {f"merged-{s}-{m}" for s in ("1x", "1x_cloned", "2x", "1x_lora", "2x_lora") for m in ("linear", "ties")} <= models
    blimp = results[(results.benchmark == "blimp") & results.metric.str.startswith("accuracy")].value
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
    assert set(mb.source) == {"built"} and mb[mb.metric != "n_pairs"].value.between(0, 1).all()
    assert (mb[mb.metric == "n_pairs"].value >= 1).all() and (results[results.metric == "n_pairs"].value % 1 == 0).all()
    assert "accuracy" in set(mb.metric) and any(m.startswith("accuracy:SV-") for m in mb.metric)
    assert set(mb[mb["final"].astype(bool)].lang) == {"eng", "est", "fao"}
    assert not (mb[~mb["final"].astype(bool)].lang == "eng").any()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"]["english/base_1x_cloned"]["max_logit_difference"] < 1e-4
    assert manifest["steps"]["data"]["data_hash"]


def test_second_run_skips_finished_steps(smoke_run):
    run_dir, _, _ = smoke_run
    before = json.loads((run_dir / "manifest.json").read_text())["steps"]
    out = run_dir / "again.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "03_cpt.ipynb"), str(out), cwd=str(run_dir),
                        parameters={"scale": "smoke", "lang": "faroese", "run_dir": str(run_dir),
                                    "langs": ["est", "fao"]},
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
    res = run_cli("reproduce", "--scale", "smoke", "--set", "lrr=1", "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "did you mean 'lr'" in res.stderr
    assert not (tmp_path / "run").exists()


def test_cpt_before_upscale_says_which_notebook_to_run(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(REPO / "notebooks" / "03_cpt.ipynb"), str(tmp_path / "o.ipynb"),
                            parameters={"scale": "smoke", "lang": "persian", "run_dir": str(tmp_path / "run")},
                            progress_bar=False)
    assert e.value.ename == "MissingInputError" and "01_data" in e.value.evalue


def test_colab_cell_and_readme_links_use_the_repository_url():
    import tomllib

    url = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    readme = (REPO / "README.md").read_text()
    colab = url.replace("https://github.com/", "https://colab.research.google.com/github/")
    for name in NOTEBOOKS:
        first = next(c for c in nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4).cells
                     if c.cell_type == "code")
        assert "google.colab" in first.source and f'"{url}"' in first.source, name
        assert f"({colab}/blob/main/notebooks/{name}.ipynb)" in readme, name
