"""Benchmark: first view of the dashboard's Key moments and Labeling pages, against computing the moments.

Run: ``bcarena bench dashboard [--runs RUNS] [--out FILE.json] [--no-chromium]`` on a runs folder whose newest
run (the one the dashboard opens) has saved moments (``bcarena eval moments AGENT --dataset D --out
<run>/moments/<agent_id>``).

* **server side**: in a fresh interpreter (imports cold, as a new ``bcarena dashboard``), Streamlit's AppTest
  opens the dashboard on the runs folder, then switches to each page; wall seconds from the switch until the
  page is drawn, and the CPU seconds the process spent meanwhile (all threads: steadier than wall time on a
  busy machine). The JSON says whether torch was imported by then (it must not be: the first view reads
  saved files).
* **chromium**: a Streamlit server and headless Chromium; seconds from clicking the page in the sidebar
  until its last section shows (Key moments: "Closed-loop moments", Labeling: "unsaved change") and its
  script has stopped running, each clicked once the page before has finished running (the background imports
  may still be running). ``--shots DIR`` keeps screenshots.
* **baseline**: what the Key moments page did before it read saved files: in a fresh interpreter, load the
  first agent and score its moments on the dataset (``eval.moments.explore``), imports included.

Timings on a shared machine are noisy: rerun this on an idle one.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from bcarena.experiments.benchmarks import emit

DONE = {"Key moments": "Closed-loop moments", "Labeling": "unsaved change"}  # text each page shows last
TARGET_S = 3.0
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _newest_run(runs: Path) -> Path:
    """The run the dashboard opens first (newest first, as its run list)."""
    from bcarena.experiments.results import find_runs

    found = find_runs(runs)
    if not found:
        raise typer.BadParameter(f"{runs}: no run folders (with results.json) here", param_hint="--runs")
    return found[0]


def _server_side(runs: str, page: str) -> tuple[float, float, bool]:
    """(wall and CPU seconds from switching to ``page`` until it is drawn, torch imported by then)."""
    from streamlit.testing.v1 import AppTest

    from bcarena.experiments import dashboard as dash

    os.environ[dash.RUNS_ENV] = runs
    at = AppTest.from_file(str(dash.APP_FILE), default_timeout=300)
    at.run()
    started, cpu = time.perf_counter(), time.process_time()
    at.sidebar.radio[0].set_value(page).run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    problems = [e.value for e in [*at.exception, *at.error]]
    if problems:
        raise RuntimeError(f"{page}: {problems[0]}")
    return seconds, cpu, "torch" in sys.modules


def _baseline(run: str) -> float:
    """Seconds to load the run's first trained agent and score its moments, imports included."""
    started = time.perf_counter()
    from bcarena.eval.matches import load_player
    from bcarena.eval.moments import explore
    from bcarena.experiments import dashboard as dash
    from bcarena.recordings.dataset import ActionDataset

    view = dash.load_run(run)
    agent = next(a for a in dash.ab_candidates(view)[0] if a.kind != "bot")
    dataset = ActionDataset.load(str((view.dataset_stats or {})["dataset"]))
    explore(load_player(dash.player_spec(view.path, agent)), dataset, "test", 2)
    return time.perf_counter() - started


def _fresh(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh interpreter (spawned: nothing imported yet)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# Streamlit shows this icon while the page's script runs
RUNNING = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]'


def chromium_first_views(runs: Path, pages: dict[str, str], shots: Path | None = None) -> dict[str, float]:
    """Serve the dashboard on ``runs`` and open each page ({name: text it shows last}) in headless Chromium;
    returns each page's seconds from the click to that text; with ``shots``, saves ``<shots>/<last word>.png``."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from bcarena.experiments import dashboard as dash

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", str(dash.APP_FILE), "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    server = subprocess.Popen(
        command, env={**os.environ, dash.RUNS_ENV: str(runs)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    driver, seconds = None, {}
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1600,1800",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
        wait = WebDriverWait(driver, 180)
        deadline = time.monotonic() + 90
        while True:
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                break
            except Exception:  # noqa: BLE001 - the server is not listening yet
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not start") from None
                time.sleep(0.5)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Leaderboard"))
        # A click while a script still runs waits for that run; a person clicks once the page has finished.
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, RUNNING))
        for page, done in pages.items():
            started = time.perf_counter()
            driver.find_element(By.XPATH, f"//label[.//p[text()='{page}']]").click()
            wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), done))
            wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, RUNNING))
            seconds[page] = time.perf_counter() - started
            if shots is not None:
                _screenshot(driver, shots / f"{page.split()[-1].lower()}.png")
        return seconds
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=20)


def _screenshot(driver: Any, out: Path) -> None:
    """The page once its images, fonts and data grids (drawn on a canvas after their data) have painted."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stImage'] img")))
    driver.execute_async_script(
        "const done = arguments[0];"
        "document.fonts.ready.then(() => requestAnimationFrame(() => requestAnimationFrame(() => done())));"
    )
    time.sleep(1.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(out)):
        raise RuntimeError(f"{out}: the screenshot was not saved")


def run(runs: Path, chromium: bool = True, shots: Path | None = None) -> dict:
    """Every measurement of the module docstring, on the newest run under ``runs``."""
    import json

    run_dir = _newest_run(runs)
    stats = json.loads((run_dir / "dataset_stats.json").read_text())
    results: dict[str, Any] = {
        "benchmark": "dashboard_first_view",
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "run": str(run_dir),
        "episodes": stats.get("num_episodes"),
        "frames": stats.get("num_frames"),
        "saved_moments": sorted(p.parent.name for p in (run_dir / "moments").glob("*/moments.parquet")),
        "target_s": TARGET_S,
    }
    server = {page: _fresh(_server_side, str(runs), page) for page in DONE}
    results["server_side_s"] = {page: round(s, 3) for page, (s, _, _) in server.items()}
    results["server_side_cpu_s"] = {page: round(cpu, 3) for page, (_, cpu, _) in server.items()}
    results["torch_imported_by_first_view"] = {page: torch for page, (_, _, torch) in server.items()}
    results["baseline_compute_moments_s"] = round(_fresh(_baseline, str(run_dir)), 3)
    results["speedup_saved_vs_compute"] = round(results["baseline_compute_moments_s"] / server["Key moments"][0], 1)
    if chromium and CHROMIUM.exists() and CHROMEDRIVER.exists():
        views = chromium_first_views(runs, DONE, shots)
        results["chromium_s"] = {page: round(s, 3) for page, s in views.items()}
        results["chromium_within_target"] = all(s <= TARGET_S for s in views.values())
    else:
        results["chromium_s"] = None  # not installed (apt-get install -y chromium chromium-driver) or --no-chromium
    return results


def main(
    runs: Path = typer.Option(Path("runs"), exists=True, file_okay=False, help="runs folder the dashboard shows"),
    chromium: bool = typer.Option(True, help="also measure in headless Chromium (needs chromium, chromedriver)"),
    shots: Path = typer.Option(None, help="folder for the pages' screenshots (Chromium)"),
    out: Path = typer.Option(None, help="also write the JSON here"),
) -> None:
    """Measure and print JSON: first-view seconds of both pages (server side, Chromium) and the baseline."""
    emit(run(runs, chromium, shots), out)


if __name__ == "__main__":
    typer.run(main)
