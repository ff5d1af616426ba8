import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path:
    return Path(os.environ.get("HYPERLLAMA_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture
def data_dir() -> Path:
    path = shared_data()
    if not (path / "text").is_dir():
        pytest.skip(f"real data not found at {path}: set HYPERLLAMA_DATA or put ../shared/data beside the repo")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`hyperllama ARGS` in this process (a fresh interpreter costs ~8 s of imports); same result shape as
    subprocess.run. tests/test_cli.py keeps one real console-script run."""
    from hyperllama_lib import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help, bad arguments
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(["hyperllama", *args], code, out.getvalue(), err.getvalue())
