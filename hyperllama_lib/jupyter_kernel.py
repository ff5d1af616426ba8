"""The notebooks' Jupyter kernel: this environment's interpreter, registered inside the environment.

The notebooks name the kernel `hyperllama`, not `python3`: a researcher's home often holds a user-level
`python3` kernel of another interpreter, and jupyter_client looks in the user's directory before the
environment's unless JUPYTER_PREFER_ENV_PATH says otherwise (it defaults to the environment only inside a
virtualenv or a non-base conda environment that the user owns). Every Jupyter process this companion starts
(papermill jobs, `hyperllama lab`) therefore also sets JUPYTER_PREFER_ENV_PATH=1, so that even a user-level
kernel named `hyperllama` (say, of another clone) does not win over this environment's."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .errors import JupyterSetupError

KERNEL_NAME = "hyperllama"
DISPLAY_NAME = "Python (hyperllama)"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": DISPLAY_NAME, "language": "python"}
# read by hyperllama_lib.progress: "text" makes the bars plain text even in a kernel that could draw widgets
PROGRESS_ENV = "HYPERLLAMA_PROGRESS"


def kernel_dir(prefix: str | Path | None = None) -> Path:
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def is_registered(prefix: str | Path | None = None) -> bool:
    """The environment holds the kernel, and it starts this interpreter."""
    try:
        spec = json.loads((kernel_dir(prefix) / "kernel.json").read_text())
    except (OSError, ValueError):
        return False
    return spec.get("argv", [None])[0] == sys.executable and spec.get("display_name") == DISPLAY_NAME


def register(prefix: str | Path | None = None) -> Path:
    """Install the kernel into the environment (`ipykernel install --sys-prefix`), unless it is there already."""
    if not is_registered(prefix):
        from ipykernel.kernelspec import install

        try:
            install(kernel_name=KERNEL_NAME, display_name=DISPLAY_NAME, prefix=str(prefix or sys.prefix))
        except PermissionError:
            raise JupyterSetupError(f"cannot register the notebook kernel in {sys.prefix} (not writable): use a "
                                    "virtual environment of your own (`make env`)") from None
    return kernel_dir(prefix)


def environment(environ: dict | None = None, plain_progress: bool = False) -> dict:
    """The environment of a Jupyter process started here: this environment's kernels first, and with
    plain_progress (papermill, whose notebooks have no widget frontend) text progress bars."""
    env = {**(os.environ if environ is None else environ), "JUPYTER_PREFER_ENV_PATH": "1"}
    if plain_progress:
        env[PROGRESS_ENV] = "text"
    return env


def lab_command(notebooks: Path, jupyter_args: list[str]) -> list[str]:
    """JupyterLab from this environment on the notebooks folder (unless the arguments name another)."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        raise JupyterSetupError("JupyterLab is not installed in this environment: `make lab`, or "
                                "`pip install -e '.[lab]'`") from None
    chosen = any(a.startswith(("--ServerApp.root_dir", "--notebook-dir")) for a in jupyter_args)
    return [sys.executable, "-m", "jupyterlab", *([] if chosen else [f"--ServerApp.root_dir={notebooks}"]), *jupyter_args]


if __name__ == "__main__":  # the Makefile's environment setup: `python -m hyperllama_lib.jupyter_kernel`
    print(f"notebook kernel {KERNEL_NAME!r} of {sys.executable} in {register()}")
