"""The grid runner: the plan, its commands, and running jobs with papermill (failures isolated, finished
jobs skipped, changed parameters or outputs redone), on small stand-in notebooks."""
import json
import shlex

import nbformat
import pytest
import yaml

from hyperllama_lib import artifacts
from hyperllama_lib.params import ParamError, load_params
from hyperllama_lib.pipeline import runner

ALL = ["est", "fao", "isl", "fas", "swe"]


def smoke(tmp_path=None, **overrides):
    if tmp_path is not None:
        overrides["run_dir"] = str(tmp_path / "run")
    return load_params("smoke", overrides, need_data=False)


def test_plan_has_every_job_once_in_dependency_order():
    jobs = runner.plan_jobs(smoke(eval_jobs="per_model", cpt_jobs="per_language"))
    names = [j.name for j in jobs]
    assert len(names) == len(set(names)) == 1 + 1 + 5 * 6 + 5 + 5 * 8 + 1  # 5 default setups, 2 of them LoRA
    assert len({j.label for j in jobs}) == len(jobs)
    seen = set()
    for job in jobs:
        assert set(job.deps) <= seen, job.name
        seen.add(job.name)
    by_name = {j.name: j for j in jobs}
    assert by_name["cpt/2x/multilingual"].parameters == {"lang": "multilingual", "setups": ["2x"]}
    assert by_name["merge/1x"].deps == tuple(f"cpt/1x/{lang}" for lang in ALL)
    assert by_name["eval/2x/merged"].deps == ("merge/2x",)
    assert by_name["eval/1x_cloned/base"].parameters == {"setups": ["1x_cloned"], "eval_models": "base"}
    assert set(by_name["analysis"].deps) == {n for n in names if n.startswith("eval/")}
    assert by_name["cpt/1x/est"].label == "03_cpt-1x-est"


def test_plan_follows_languages_setups_and_methods():
    jobs = runner.plan_jobs(smoke(langs=["est", "fao"], setups=["2x"], merge_methods=[], eval_jobs="per_model",
                                  cpt_jobs="per_language"))
    assert [j.name for j in jobs] == ["data", "upscale", "cpt/2x/multilingual", "cpt/2x/est", "cpt/2x/fao",
                                      "eval/2x/base", "eval/2x/multilingual", "eval/2x/est", "eval/2x/fao",
                                      "analysis"]
    per_setup = runner.plan_jobs(smoke(langs=["est", "fao"], setups=["2x"], eval_jobs="per_setup",
                                       cpt_jobs="per_language"))
    assert [j.name for j in per_setup][-2:] == ["eval/2x", "analysis"]
    assert per_setup[-2].deps == ("upscale", "cpt/2x/multilingual", "cpt/2x/est", "cpt/2x/fao", "merge/2x")
    assert per_setup[-2].parameters == {"setups": ["2x"]}


def test_jobs_that_never_run_beside_another():
    jobs = runner.plan_jobs(smoke(langs=["est", "fao"], setups=["2x", "1x_lora"]))
    assert runner.alone(jobs) == {"data", "upscale", "analysis"}
    # a merge needs only the monolingual models: without the multilingual job, nothing runs beside another
    assert runner.alone(runner.select_jobs(jobs, ["merge/2x"])) == {"data", "upscale", "cpt/2x/each", "merge/2x"}
    assert runner.alone(runner.select_jobs(jobs, ["cpt/2x/*"])) == {"data", "upscale"}


def test_cpt_jobs_per_setup_trains_each_language_in_one_job():
    jobs = runner.plan_jobs(smoke(langs=["est", "fao"], setups=["2x", "1x_lora"], eval_jobs="per_setup",
                                  cpt_jobs="per_setup"))
    by_name = {j.name: j for j in jobs}
    assert [n for n in by_name if n.startswith("cpt/")] == ["cpt/2x/multilingual", "cpt/2x/each",
                                                            "cpt/1x_lora/multilingual", "cpt/1x_lora/each"]
    assert by_name["cpt/2x/each"].parameters == {"lang": "each", "setups": ["2x"]}
    assert by_name["cpt/2x/each"].label == "03_cpt-2x-each"
    assert by_name["merge/1x_lora"].deps == ("cpt/1x_lora/each",)
    assert by_name["eval/2x"].deps == ("upscale", "cpt/2x/multilingual", "cpt/2x/each", "merge/2x")


def test_only_selects_steps_with_what_they_need():
    jobs = runner.select_jobs(runner.plan_jobs(smoke(cpt_jobs="per_language")), ["merge/2x"])
    assert [j.name for j in jobs] == ["data", "upscale", *[f"cpt/2x/{lang}" for lang in ALL], "merge/2x"]
    with pytest.raises(ParamError, match="no step matches"):
        runner.select_jobs(runner.plan_jobs(smoke()), ["cpt/3x/*"])


def test_plan_commands_carry_every_parameter():
    p = smoke(langs=["est", "fao"])
    commands = runner.plan_commands(p, {"langs": ["est", "fao"], "lr": 0.001})
    assert len(commands) == len(runner.plan_jobs(p))
    argv = shlex.split(commands[2])  # cpt/1x/multilingual
    assert argv[:3] == ["papermill", "notebooks/03_cpt.ipynb", "runs/smoke/notebooks/03_cpt-1x-multilingual.ipynb"]
    scalars, yamls = {}, {}
    rest = argv[3:]
    while rest:
        if rest[0] == "-p":
            scalars[rest[1]] = rest[2]
            rest = rest[3:]
        else:
            assert rest[0] == "-y"
            yamls.update(yaml.safe_load(rest[1]))
            rest = rest[2:]
    assert scalars == {"scale": "smoke", "lr": "0.001", "lang": "multilingual"}
    assert yamls == {"langs": ["est", "fao"], "setups": ["1x"]}


# -- running stand-in notebooks --------------------------------------------------------------------

def write_notebook(folder, name, code):
    book = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('scale = "smoke"\nlang = None')
    params.metadata["tags"] = ["parameters"]
    book.cells = [params, nbformat.v4.new_code_cell(code)]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, folder / f"{name}.ipynb")


@pytest.fixture
def toy(tmp_path):
    """Jobs a -> b -> c and a -> d; b's notebook fails."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks, "ok", "print('ok', lang)")
    write_notebook(notebooks, "fails", "raise ValueError('boom ' + lang)")
    jobs = [runner.Job("t/a", "ok", {"lang": "est"}), runner.Job("t/b", "fails", {"lang": "fao"}, ("t/a",)),
            runner.Job("t/c", "ok", {"lang": "isl"}, ("t/b",)), runner.Job("t/d", "ok", {"lang": "swe"}, ("t/a",))]
    p = smoke(tmp_path)
    return p, jobs, notebooks


def run_toy(p, jobs, notebooks, overrides=None, parallel=2):
    lines = []
    code = runner.Runner(p, overrides or {"run_dir": str(p.run_path)}, parallel=parallel, log=lines.append,
                       jobs=jobs, notebooks=notebooks).run()
    return code, "\n".join(lines)


def test_a_failure_stops_only_what_needs_it_and_the_next_run_does_the_rest(toy):
    p, jobs, notebooks = toy
    code, out = run_toy(p, jobs, notebooks)
    assert code == 1
    records = {j.name: runner.read_record(p, j) for j in jobs}
    assert records["t/a"]["state"] == records["t/d"]["state"] == "done"
    assert records["t/b"]["state"] == "failed" and records["t/b"]["error"] == "ValueError: boom fao"
    assert records["t/c"] is None
    assert "t/c not run: a job it needs failed" in out
    executed = p.run_path / "notebooks" / "fails-b.ipynb"
    assert "FAILED t/b: ValueError: boom fao" in out and str(executed) in out
    assert executed.exists() and executed.with_suffix(".html").stat().st_size > 1000
    assert "ok est" in (p.run_path / "notebooks" / "ok-a.log").read_text()

    write_notebook(notebooks, "fails", "print('fixed', lang)")
    code, out = run_toy(p, jobs, notebooks)
    assert code == 0
    assert "t/a up to date, skipped" in out and "t/d up to date, skipped" in out
    assert "t/b done" in out and "t/c done" in out

    code, out = run_toy(p, jobs, notebooks, parallel=1)
    assert code == 0 and out.count("up to date, skipped") == 4


def test_changed_parameters_or_upstream_rerun_a_job(toy):
    p, jobs, notebooks = toy
    write_notebook(notebooks, "fails", "print('fine')")
    overrides = {"run_dir": str(p.run_path)}
    assert run_toy(p, jobs, notebooks)[0] == 0
    records = {j.name: runner.read_record(p, j) for j in jobs}
    assert runner.why_not_done(p, overrides, jobs[2], records) is None
    assert runner.why_not_done(p, {**overrides, "lr": 0.1}, jobs[2], records) == "parameters changed"
    records["t/b"] = {**records["t/b"], "finished": records["t/c"]["started"] + 1}
    assert runner.why_not_done(p, overrides, jobs[2], records) == "t/b ran after it"
    # a recorded manifest step whose output changed makes the job stale
    out = p.run_path / "thing.txt"
    with artifacts.Step(p.run_path, "thing", {"x": 1}, log=lambda m: None) as s:
        artifacts.atomic.write_text(out, "one")
        s.outputs = [out]
    records = {j.name: runner.read_record(p, j) for j in jobs}
    records["t/c"]["steps"] = {"thing": s.fp}
    assert runner.why_not_done(p, overrides, jobs[2], records) is None
    out.write_text("two")
    assert "differs from the manifest" in runner.why_not_done(p, overrides, jobs[2], records)


def test_steps_a_job_runs_are_recorded_with_it(tmp_path, monkeypatch):
    steps = tmp_path / "job.steps"
    monkeypatch.setenv(artifacts.JOB_STEPS_ENV, str(steps))
    with artifacts.Step(tmp_path / "run", "cpt/1x/est", {"a": 1}, log=lambda m: None) as s:
        s.outputs = []
    assert steps.read_text() == f"cpt/1x/est\t{s.fp}\n"


def test_one_reproduction_per_run_directory(tmp_path):
    p = smoke(tmp_path)
    with runner.run_lock(p):
        with pytest.raises(RuntimeError, match="another reproduction is running"):
            with runner.run_lock(p):
                pass
    with runner.run_lock(p):  # released
        pass


def test_status_table_reports_states(toy):
    p, jobs, notebooks = toy
    run_toy(p, jobs, notebooks)
    records = {j.name: runner.read_record(p, j) for j in jobs}
    assert json.loads(runner.record_path(p, jobs[1]).read_text())["state"] == "failed"
    overrides = {"run_dir": str(p.run_path)}
    assert runner.why_not_done(p, overrides, jobs[1], records) == "failed"
    assert runner.why_not_done(p, overrides, jobs[2], records) == "never run"
