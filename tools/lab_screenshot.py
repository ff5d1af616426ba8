"""Run 03_cpt in JupyterLab in headless Chromium at smoke scale and save a screenshot of a finished progress
bar widget and a figure (tests/test_lab_browser.py; by hand: `python tools/lab_screenshot.py OUT.png`).

It prepares a smoke run (01_data and 02_upscale on one language, with papermill), copies 03_cpt.ipynb with
smoke parameters for the 1x setup into a scratch folder, starts `hyperllama lab` on that folder (the
environment's kernel, widget progress bars), opens the notebook with selenium and Debian's chromium and
chromedriver, runs all cells and waits until every cell has run."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None where either is missing."""
    chrome = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_notebook(folder: Path, run_dir: Path) -> Path:
    book = nbformat.read(ROOT / "notebooks" / "03_cpt.ipynb", as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = f'scale = "smoke"\nlang = "est"\nlangs = ["est"]\nsetups = ["1x"]\nrun_dir = "{run_dir}"'
    out = folder / "03_cpt.ipynb"
    nbformat.write(book, out)
    return out


def _wait_for_server(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError("JupyterLab did not start")


FINISHED = """const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
return prompts.length > 0 && prompts.every(t => /\\[\\d+\\]/.test(t));"""


def screenshot(out: Path, timeout: float = 240) -> dict:
    """Everything above; returns what the page showed (progress bars, images, errors, seconds)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    chrome, driver_path = browser()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "HOME": str(tmp / "home"), "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config")}
        subprocess.run([sys.executable, "-m", "hyperllama_lib.cli", "reproduce", "--scale", "smoke", "--langs", "est",
                        "--only", "upscale", "--run-dir", str(tmp / "run")], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=300)
        folder = tmp / "lab"
        folder.mkdir()
        _smoke_notebook(folder, tmp / "run")
        port = _free_port()
        log = open(tmp / "lab.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "hyperllama_lib.cli", "lab", "--no-browser", f"--port={port}",
                                   "--ServerApp.token=screenshot", f"--ServerApp.root_dir={folder}",
                                   "--LabApp.expose_app_in_browser=True", f"--LabApp.workspaces_dir={tmp}",
                                   *(["--allow-root"] if os.geteuid() == 0 else [])],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        options = webdriver.ChromeOptions()
        options.binary_location = chrome
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
                    f"--user-data-dir={tmp / 'chromium'}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            _wait_for_server(port, server)
            driver.get(f"http://127.0.0.1:{port}/lab/tree/03_cpt.ipynb?token=screenshot&reset")
            deadline = time.time() + timeout
            while time.time() < deadline and not driver.execute_script(
                    "return !!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-CodeCell'))"
                    " && document.querySelector('.jp-Notebook-ExecutionIndicator') !== null"):
                time.sleep(0.5)
            time.sleep(2)  # the kernel session starts
            driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            while time.time() < deadline and not driver.execute_script(FINISHED):
                time.sleep(1)
            bars = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .jupyter-widgets")
            images = driver.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
            errors = driver.find_elements(By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr']")
            target = bars[0] if bars else None
            if target is not None:
                driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", target)
            time.sleep(1)
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
            return {"finished": driver.execute_script(FINISHED), "progress_bars": len(bars), "images": len(images),
                    "stderr_outputs": [e.text[:200] for e in errors], "seconds": round(time.time() - started, 1)}
        finally:
            driver.quit()
            if server.poll() is None:
                os.killpg(server.pid, 15)
                server.wait(timeout=30)
            log.close()
            shutil.copy(tmp / "lab.log", out.with_suffix(".log"))


if __name__ == "__main__":
    if browser() is None:
        sys.exit("chromium and chromedriver are needed (Debian: apt install chromium chromium-driver)")
    print(screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "lab_screenshot.png")))
