"""Progress bars: widgets in a notebook that a frontend shows (JupyterLab, Colab), plain text elsewhere.

tqdm.auto draws widgets in every IPython kernel, papermill's included, whose executed notebooks then hold
widget JSON that nothing renders; without ipywidgets it warns "IProgress not found" and falls back to text.
Here a kernel started by papermill (HYPERLLAMA_PROGRESS=text, which the grid runner sets, or a papermill
parent process) and a kernel without ipywidgets get plain text bars, without a warning."""
from __future__ import annotations

import contextlib
import os
import sys

from .jupyter_kernel import PROGRESS_ENV


def _parent_is_papermill() -> bool:
    """papermill run by hand (`papermill in.ipynb out.ipynb`) starts the kernel as its own child."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return b"papermill" in f.read()
    return False


def widgets_wanted(environ=os.environ, modules=sys.modules) -> bool:
    """Draw widgets: inside a Jupyter kernel with ipywidgets, unless the notebook is run without a frontend."""
    if environ.get(PROGRESS_ENV) == "text" or "ipykernel.zmqshell" not in modules:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return not _parent_is_papermill()


def bar_class(environ=os.environ, modules=sys.modules) -> type:
    if widgets_wanted(environ, modules):
        from tqdm.notebook import tqdm as bar
    else:
        from tqdm.std import tqdm as bar
    return bar


tqdm = bar_class()
