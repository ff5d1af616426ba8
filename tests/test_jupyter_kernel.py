"""The notebooks' kernel is this environment's interpreter, even where the user's home holds kernels of the
same name or `python3`; progress bars are text under papermill and widgets in a notebook frontend."""
import json
import os
import subprocess
import sys

import nbformat
import pytest

from hyperllama_lib import jupyter_kernel, progress
from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import runner

WIDGET_JSON = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def decoy_home(tmp_path, monkeypatch):
    """A user-level `hyperllama` and `python3` kernel (this interpreter, marked by an environment variable),
    and jupyter told to prefer the user's kernels, as on a researcher's machine outside a virtualenv."""
    data = tmp_path / "home" / ".local" / "share" / "jupyter"
    for name in (jupyter_kernel.KERNEL_NAME, "python3"):
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"decoy {name}", "language": "python", "env": {"DECOY_KERNEL": name}}
        (data / "kernels" / name).mkdir(parents=True)
        (data / "kernels" / name / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    jupyter_kernel.register()
    return data


def _spec_jupyter_finds(env: dict) -> dict:
    """What jupyter_client (papermill's and JupyterLab's kernel lookup) resolves the notebooks' kernel name to."""
    code = ("import json, sys; from jupyter_client.kernelspec import KernelSpecManager as M; "
            "s = M().get_kernel_spec(sys.argv[1]); print(json.dumps({'dir': s.resource_dir, 'argv': s.argv}))")
    out = subprocess.run([sys.executable, "-c", code, jupyter_kernel.KERNEL_NAME], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_the_lookup_finds_the_environment_kernel_not_the_users(decoy_home):
    assert os.path.realpath(_spec_jupyter_finds(dict(os.environ))["dir"]).startswith(str(decoy_home)), \
        "the decoy should win without the companion's setting (else this test shows nothing)"
    found = _spec_jupyter_finds(jupyter_kernel.environment())
    assert found["dir"] == str(jupyter_kernel.kernel_dir())
    assert found["argv"][0] == sys.executable


def test_notebooks_name_the_environment_kernel():
    for path in sorted(runner.NOTEBOOKS.glob("*.ipynb")):
        assert nbformat.read(path, as_version=4).metadata.kernelspec["name"] == jupyter_kernel.KERNEL_NAME, path.name


CHECK = """import json, os, sys
from hyperllama_lib.progress import tqdm
from tqdm import auto  # noqa: F401  (as the libraries we import do)
for _ in tqdm(range(3), desc="counting"):
    pass
print(json.dumps({"executable": sys.executable, "prefix": sys.prefix, "decoy": os.environ.get("DECOY_KERNEL"),
                  "bar": tqdm.__module__}))"""


def test_a_grid_job_runs_in_the_environment_with_text_bars(decoy_home, tmp_path, monkeypatch):
    # as in the `make test` environment, without ipywidgets, where tqdm.auto would warn "IProgress not found"
    hidden = tmp_path / "no_widgets" / "ipywidgets"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("ipywidgets hidden by the test")\n')
    monkeypatch.setenv("PYTHONPATH", str(hidden.parent))
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    book = nbformat.v4.new_notebook(metadata={"kernelspec": dict(jupyter_kernel.KERNELSPEC)})
    params = nbformat.v4.new_code_cell('scale = "smoke"')
    params.metadata["tags"] = ["parameters"]
    book.cells = [params, nbformat.v4.new_code_cell(CHECK)]
    nbformat.write(book, notebooks / "check.ipynb")
    p = load_params("smoke", {"run_dir": str(tmp_path / "run")}, need_data=False)
    job = runner.Job("check", "check")
    assert runner.Runner(p, {"run_dir": str(p.run_path)}, jobs=[job], notebooks=notebooks, log=print).run() == 0
    outputs = nbformat.read(runner.executed_path(p, job), as_version=4).cells[-1].outputs
    seen = json.loads([o.text for o in outputs if o.get("name") == "stdout"][-1].strip().splitlines()[-1])
    assert seen == {"executable": sys.executable, "prefix": sys.prefix, "decoy": None, "bar": "tqdm.std"}
    everything = json.dumps(outputs)
    assert WIDGET_JSON not in everything and "IProgress" not in everything
    assert "counting: 100%" in everything and "3/3" in everything


def test_bars_are_widgets_only_in_a_kernel_with_a_frontend():
    pytest.importorskip("ipywidgets", reason="the lab extra (ipywidgets) is not installed")
    kernel = {"ipykernel.zmqshell": object()}
    assert progress.bar_class({}, kernel).__module__ == "tqdm.notebook"
    assert progress.bar_class({jupyter_kernel.PROGRESS_ENV: "text"}, kernel).__module__ == "tqdm.std"
    assert progress.bar_class({}, {}).__module__ == "tqdm.std"  # a terminal, a log, a test
