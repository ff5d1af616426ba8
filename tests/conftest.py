import os
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
