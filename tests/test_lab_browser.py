"""JupyterLab in headless Chromium: 03_cpt at smoke scale shows a finished progress bar widget and figures
(tools/lab_screenshot.py). It runs where Chromium, chromedriver, selenium and JupyterLab are installed
(`apt install chromium chromium-driver`, `pip install -e '.[lab]' selenium`) and skips with the reason elsewhere,
e.g. in the `make test` environment, which has neither JupyterLab nor selenium."""
import importlib.util

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("lab_screenshot", REPO / "tools" / "lab_screenshot.py")
lab_screenshot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab_screenshot)


@pytest.mark.slow
def test_a_notebook_runs_in_jupyterlab_with_widget_bars_and_figures(tmp_path, data_dir):
    if lab_screenshot.browser() is None:
        pytest.skip("chromium and chromedriver not installed (Debian: apt install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium not installed (pip install selenium)")
    pytest.importorskip("jupyterlab", reason="JupyterLab not installed (the lab extra: make lab)")
    seen = lab_screenshot.screenshot(tmp_path / "lab.png")
    assert seen["finished"] and seen["progress_bars"] >= 1 and seen["images"] >= 2, seen
    assert (tmp_path / "lab.png").stat().st_size > 10_000
