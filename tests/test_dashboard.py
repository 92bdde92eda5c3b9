"""The dashboard: data loading, the Streamlit page (AppTest), blind A/B votes, the CLI, and one real browser.

Everything runs on a synthetic but realistic run folder written with the run-folder contract
(``RunResults`` + ``save_results``), real PNG plots, real replay videos and JSON side files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import ACTION_NAMES, DuelConfig
from bcarena.envs.files import safe_name
from bcarena.eval.replays import record_replay
from bcarena.eval.stats import wilson_interval
from bcarena.experiments import dashboard as dash
from bcarena.experiments.preferences import load_preferences
from bcarena.experiments.results import AgentResult, RunResults, save_results

streamlit = pytest.importorskip(
    "streamlit", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'"
)
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(dash.APP_FILE)
MATCHES = 500
# The run's game (its config.resolved.yaml says so): 8-second rounds, so every replay the fixture, the blind
# A/B page and the Replays tab render and transcode has at most 80 decisions instead of 300.
GAME = {"round_seconds": 8.0}
# agent_id -> (kind, accuracy, balanced accuracy, skill-event F1, wins of MATCHES, rating mu)
AGENTS = {
    "pro": ("bot", None, None, None, 462, 38.2),
    "rebalanced-s0": ("bc", 0.931, 0.774, 0.612, 391, 33.5),
    "composite-s0": ("composite", 0.948, 0.702, 0.574, 305, 30.1),
    "turtle": ("bot", None, None, None, 120, 24.0),
    "naive-s0": ("bc", 0.991, 0.412, 0.0, 0, 12.7),
}


def make_run(root: Path, experiment: str = "seed_story", run_id: str = "20250101-120000") -> Path:
    """Write a complete run folder the way the experiment runner does; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = root / experiment / run_id
    run.mkdir(parents=True)
    agents = []
    for agent_id, (kind, acc, bal, skill_f1, wins, _) in AGENTS.items():
        low, high = wilson_interval(wins, MATCHES)
        offline = (
            {}
            if acc is None
            else {
                "accuracy": acc,
                "balanced_accuracy": bal,
                "macro_f1": bal - 0.05,
                "skill_event_recall": skill_f1,
                "skill_event_f1": skill_f1,
            }
        )
        agents.append(
            AgentResult(
                agent_id=agent_id,
                variant=agent_id.split("-s")[0],
                seed=None if kind == "bot" else 0,
                kind=kind,
                agent_path=None if kind == "bot" else f"agents/{agent_id}",
                offline=offline,
                online={
                    "brawler": {
                        "matches": MATCHES,
                        "wins": wins,
                        "win_rate": wins / MATCHES,
                        "win_rate_low": low,
                        "win_rate_high": high,
                    }
                },
                latency_ms_p50=None if kind == "bot" else 0.21,
            )
        )
    agents.append(
        AgentResult(
            agent_id="focal-s0",
            variant="focal",
            seed=0,
            kind="bc",
            agent_path=None,
            error="RuntimeError: loss became NaN at epoch 3",
        )
    )
    ratings = {a: {"mu": mu, "sigma": 1.5, "ordinal": mu - 4.5} for a, (*_, mu) in AGENTS.items()}
    save_results(
        run,
        RunResults(
            experiment,
            run_id,
            agents,
            "brawler",
            ratings=ratings,
            gap_report={"spearman": {"accuracy": -0.4, "balanced_accuracy": 0.9}},
        ),
    )
    (run / "config.resolved.yaml").write_text(
        yaml.safe_dump(
            {
                "name": experiment,
                "game": GAME,
                "evaluation": {"opponents": ["brawler"], "matches": MATCHES, "seed": 10_000},
            }
        )
    )
    (run / "environment.json").write_text(json.dumps({"git_commit": "0123456789abcdef", "wall_seconds": 171.0}))
    counts = [5200, 800, 790, 410, 600, 120, 60, 20]
    (run / "dataset_stats.json").write_text(
        json.dumps(
            {
                "action_names": list(ACTION_NAMES),
                "class_counts": {"train": counts, "val": [c // 5 for c in counts], "test": [c // 5 for c in counts]},
                "event_counts": {
                    "skill_used": 200,
                    "hit_landed": 140,
                    "hit_taken": 95,
                    "ko": 40,
                    "action_change": 2100,
                },
            }
        )
    )
    rng = np.random.default_rng(0)
    for agent_id, (kind, *_) in AGENTS.items():
        if kind == "bot":
            continue
        matrix = rng.integers(0, 30, size=(8, 8)) + np.diag(rng.integers(200, 900, size=8))
        (run / "confusion").mkdir(exist_ok=True)
        (run / "confusion" / f"{agent_id}.json").write_text(
            json.dumps({"labels": list(ACTION_NAMES), "matrix": matrix.tolist()})
        )
        (run / "curves").mkdir(exist_ok=True)
        (run / "curves" / f"{agent_id}.json").write_text(
            json.dumps(
                [{"epoch": e, "train_loss": 1.5 / (e + 1), "val_balanced_accuracy": 0.4 + 0.05 * e} for e in range(6)]
            )
        )
    (run / "plots").mkdir()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.scatter([0.99, 0.93], [0.0, 0.78])
    fig.savefig(run / "plots" / "accuracy_vs_winrate.png")
    plt.close(fig)
    config = DuelConfig.from_dict(GAME)
    record_replay(BotAgent("pro"), BotAgent("brawler"), 10_000, run / "replays" / "side_by_side.mp4", config)
    record_replay(BotAgent("idle"), BotAgent("brawler"), 10_000, run / "replays" / "naive-s0_vs_brawler.mp4", config)
    return run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run(root)
    return root


@pytest.fixture
def fresh_run(tmp_path, runs_root) -> Path:
    """A private copy of the fixture run (tests that vote write into it)."""
    shutil.copytree(runs_root, tmp_path / "runs")
    return tmp_path / "runs" / "seed_story" / "20250101-120000"


def app_on(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv(dash.RUNS_ENV, str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ------------------------------------------------------------------------------------ data helpers
def test_load_run_reads_every_part(runs_root):
    run = dash.load_run(dash.list_runs(runs_root)[0])
    assert run.label == "seed_story / 20250101-120000" and not run.problems
    assert set(run.confusions) == {"rebalanced-s0", "composite-s0", "naive-s0"}
    assert run.confusions["naive-s0"].matrix.shape == (8, 8)
    np.testing.assert_allclose(run.confusions["naive-s0"].row_normalized.sum(axis=1), 1.0)
    assert set(run.curves["metric"]) == {"train_loss", "val_balanced_accuracy"}
    assert len(run.curves) == 3 * 6 * 2
    assert [p.name for p in run.replays] == ["side_by_side.mp4", "naive-s0_vs_brawler.mp4"]
    assert run.plots[0].name == "accuracy_vs_winrate.png"
    assert dash.ab_seeds(run) == list(range(10_000, 10_020))


def test_leaderboard_view_numbers(runs_root):
    run = dash.load_run(dash.list_runs(runs_root)[0])
    view = dash.leaderboard_view(run.results)
    assert list(view["agent"]) == ["pro", "rebalanced-s0", "composite-s0", "turtle", "naive-s0"]  # by win rate
    naive = view.set_index("agent").loc["naive-s0"]
    assert naive["accuracy %"] == pytest.approx(99.1) and naive["win rate %"] == 0.0
    low, high = wilson_interval(0, MATCHES)
    assert naive["win 95% CI"] == f"[{100 * low:.1f}, {100 * high:.1f}]" == "[0.0, 0.8]"
    assert naive["rating"] == 12.7 and naive["A/B votes"] == 0
    assert "focal-s0" not in set(view["agent"]) and [a.agent_id for a in dash.failed_agents(run.results)] == [
        "focal-s0"
    ]


def test_class_distribution_formats():
    per_split = dash.class_distribution({"action_names": ["idle", "light"], "class_counts": {"train": [3, 1]}})
    assert per_split.to_dict("list") == {
        "split": ["train", "train"],
        "action": ["idle", "light"],
        "count": [3, 1],
        "fraction": [0.75, 0.25],
    }
    flat = dash.class_distribution({"class_counts": {"idle": 9, "special": 1}})
    assert list(flat["split"]) == ["all", "all"] and list(flat["fraction"]) == [0.9, 0.1]
    assert dash.class_distribution(None).empty
    with pytest.raises(dash.RunFolderError, match="class_counts is a list of 2 but action_names"):
        dash.class_distribution({"class_counts": [1, 2]})


def test_broken_files_are_named(tmp_path, runs_root):
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root)
    run_dir = dash.list_runs(root)[0]
    (run_dir / "confusion" / "naive-s0.json").write_text(json.dumps({"labels": ["a", "b"], "matrix": [[1, 2]]}))
    (run_dir / "curves" / "naive-s0.json").write_text("{not json")
    run = dash.load_run(run_dir)
    assert "naive-s0" not in run.confusions and len(run.problems) == 2
    assert any("confusion/naive-s0.json: 'matrix' has shape (1, 2), expected (2, 2)" in p for p in run.problems)
    assert any("curves/naive-s0.json: not valid JSON" in p for p in run.problems)
    (run_dir / "results.json").write_text('{"experiment": "x"}')
    with pytest.raises(dash.RunFolderError, match="results.json: does not match the RunResults format"):
        dash.load_run(run_dir)
    with pytest.raises(dash.RunFolderError, match="missing — not a bcarena run folder"):
        dash.load_run(tmp_path)


def test_browser_video_is_webm_with_every_frame(runs_root):
    source = dash.list_runs(runs_root)[0] / "replays" / "side_by_side.mp4"
    data = dash.browser_video(source)
    assert data[:4] == b"\x1a\x45\xdf\xa3" and b"V_VP8" in data[:4096]  # EBML header, VP8 track
    out = source.parent.parent.parent / "check.webm"
    out.write_bytes(data)
    frames = [cv2.VideoCapture(str(p)) for p in (source, out)]
    counts = [int(c.get(cv2.CAP_PROP_FRAME_COUNT)) for c in frames]
    assert counts[0] > 20 and abs(counts[0] - counts[1]) <= 1
    out.unlink()


def test_blind_replay_renders_once_and_hides_the_name(fresh_run):
    run = dash.load_run(fresh_run)
    candidates, skipped = dash.ab_candidates(run)
    assert [a.agent_id for a in candidates] == ["pro", "turtle"]
    assert "not found" in skipped["naive-s0"] and "NaN" in skipped["focal-s0"]
    path = dash.blind_replay(fresh_run, candidates[0], "brawler", 10_003)
    assert path == fresh_run / "replays" / "blind_pro_vs_brawler_s10003.mp4" and path.stat().st_size > 10_000
    stamp = path.stat().st_mtime_ns
    assert dash.blind_replay(fresh_run, candidates[0], "brawler", 10_003).stat().st_mtime_ns == stamp
    # The first frame shows the player's name: the blind replay must match a render under the neutral name.
    reference = fresh_run / "reference.mp4"
    named = fresh_run / "named.mp4"
    config = DuelConfig.from_dict(GAME)  # the run's game, which the blind replay plays
    record_replay(BotAgent("pro"), BotAgent("brawler"), 10_003, named, config)
    blind_agent = BotAgent("pro")
    blind_agent.name = dash.BLIND_NAME
    record_replay(blind_agent, BotAgent("brawler"), 10_003, reference, config)
    first = [cv2.VideoCapture(str(p)).read()[1].astype(int) for p in (path, reference, named)]
    assert np.abs(first[0] - first[1]).mean() < 1.0 < np.abs(first[0] - first[2]).sum()


def test_cli_launches_streamlit_on_the_runs_folder(monkeypatch, runs_root):
    from bcarena.experiments.cli import app

    calls = []
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.chdir(runs_root)
    result = CliRunner().invoke(app, ["dashboard", "--runs", ".", "--port", "8600"])
    assert result.exit_code == 0 and "1 run folder(s)" in result.output and "http://127.0.0.1:8600" in result.output
    ((exe, argv, env),) = calls
    assert argv[:5] == [sys.executable, "-m", "streamlit", "run", str(dash.APP_FILE)]
    assert argv[argv.index("--server.port") + 1] == "8600" and env[dash.RUNS_ENV] == str(runs_root.resolve())


def test_cli_help_and_missing_streamlit(monkeypatch, tmp_path):
    from bcarena.experiments.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0 and "--runs" in result.output and "--port" in result.output
    monkeypatch.setattr(dash, "streamlit_available", lambda: False)
    result = runner.invoke(app, ["dashboard", "--runs", str(tmp_path)])
    assert result.exit_code == 2 and "pip install -e '.[dashboard]'" in result.output


# ------------------------------------------------------------------------------------ Streamlit page
def test_app_leaderboard_and_scatter(runs_root, monkeypatch):
    at = app_on(runs_root, monkeypatch)
    board = at.dataframe[0].value
    assert list(board["agent"]) == ["pro", "rebalanced-s0", "composite-s0", "turtle", "naive-s0"]
    row = board.set_index("agent").loc["rebalanced-s0"]
    assert row["accuracy %"] == pytest.approx(93.1) and row["balanced acc %"] == pytest.approx(77.4)
    assert row["skill-event F1"] == pytest.approx(0.612) and row["win rate %"] == pytest.approx(78.2)
    assert row["rating"] == pytest.approx(33.5) and row["latency ms"] == pytest.approx(0.21)
    assert any("focal-s0 failed during the run" in e.value for e in at.error)
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 5  # scatter, two confusion matrices, class distribution, training curves
    scatter = charts[0].proto
    assert "frame accuracy (%)" in scatter.spec and "win rate vs brawler (%)" in scatter.spec
    points = [pa.ipc.open_stream(d.data.data).read_pandas() for d in scatter.datasets]
    dots = next(p for p in points if "agent" in p).set_index("agent")
    assert sorted(dots.index) == ["composite-s0", "naive-s0", "rebalanced-s0"]  # bots have no offline metric
    assert tuple(dots.loc["naive-s0", ["offline", "win rate"]]) == pytest.approx((99.1, 0.0))  # the story
    assert dots.loc["naive-s0", "high"] == pytest.approx(100 * wilson_interval(0, MATCHES)[1])
    lines = next(p for p in points if "reference" in p)
    assert list(lines["reference"]) == ["pro (reference)", "turtle (reference)"]


def test_app_without_runs(tmp_path, monkeypatch):
    at = app_on(tmp_path / "nothing-here", monkeypatch)
    assert "No runs found" in at.info[0].value and not at.dataframe


def test_app_names_a_broken_run_and_survives_an_empty_one(tmp_path, monkeypatch):
    save_results(tmp_path / "runs" / "empty" / "r1", RunResults("empty", "r1", [], "brawler"))
    at = app_on(tmp_path / "runs", monkeypatch)
    assert at.dataframe[0].value.empty and "No agent has both frame accuracy and a win rate" in at.info[0].value
    at.sidebar.radio[0].set_value("Blind A/B").run()
    assert not at.exception and "needs at least two agents" in at.info[0].value
    (tmp_path / "runs" / "empty" / "r1" / "results.json").write_text("{broken")
    at.sidebar.radio[0].set_value("Compare agents").run()
    assert not at.exception and "results.json: not valid JSON" in at.error[0].value


def test_app_blind_ab_vote_updates_rating(fresh_run, monkeypatch):
    at = app_on(fresh_run.parent.parent, monkeypatch)
    at.sidebar.radio[0].set_value("Blind A/B").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("video")) == 2
    trial = at.session_state["ab_trial"]
    assert sorted(trial["pair"]) == ["pro", "turtle"] and 10_000 <= trial["seed"] < 10_020
    shown = " ".join(str(e.value) for e in [*at.markdown, *at.subheader, *at.success])
    assert not re.search(r"\b(pro|turtle)\b", shown)  # identities stay hidden until the vote
    before = at.dataframe[0].value.set_index("agent")["A/B rating"]
    assert (before == 25.0).all()

    at.button(key="vote_b").click().run()
    assert not at.exception, [e.value for e in at.exception]
    votes = load_preferences(fresh_run)
    left, right = trial["pair"]
    assert len(votes) == 1 and votes[0].pair == (left, right) and votes[0].choice == right
    assert votes[0].seed == trial["seed"] and votes[0].opponent == "brawler" and votes[0].question == "better"
    line = json.loads((fresh_run / "preferences.jsonl").read_text().splitlines()[0])
    assert set(line) == {"timestamp", "question", "pair", "seed", "opponent", "choice"}
    assert f"A was **{left}**, B was **{right}**" in at.success[0].value
    after = at.dataframe[0].value.set_index("agent")
    assert after.loc[right, "A/B rating"] > 25.0 > after.loc[left, "A/B rating"]
    assert after.loc[right, "wins"] == 1 and after.loc[left, "losses"] == 1

    at.button(key="next_pair").click().run()
    assert not at.success and at.session_state["ab_trial"]["choice"] is None
    at.sidebar.radio[0].set_value("Compare agents").run()
    board = at.dataframe[0].value.set_index("agent")
    assert board.loc[right, "A/B votes"] == 1 and board.loc[right, "A/B rating"] > 25.0


# ------------------------------------------------------------------------------------ real browser
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT_ENV = "BCARENA_DASHBOARD_SCREENSHOT"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_in_headless_chromium(runs_root, tmp_path):
    """Serve the page with ``streamlit run`` and load it in a real headless Chromium."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {message}")
        pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    screenshot = Path(os.environ.get(SCREENSHOT_ENV, Path(__file__).parents[1] / "runs/artifacts/dashboard.png"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            APP,
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
            "--client.toolbarMode",
            "viewer",
        ],
        env={**os.environ, dash.RUNS_ENV: str(runs_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    driver = None
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1600,1400",
        ):
            options.add_argument(flag)
        deadline = time.monotonic() + 30
        while True:  # wait for the server to listen
            assert server.poll() is None, server.stdout.read().decode()
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "streamlit did not start listening within 30 s"
            time.sleep(0.2)
        driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(30)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 40)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Leaderboard"))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stDataFrame']")))
        wait.until(
            ec.presence_of_element_located(
                (By.CSS_SELECTOR, "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg")
            )
        )
        # Let the grid and the chart paint before the screenshot: fonts loaded, then two animation frames.
        driver.execute_async_script(
            "const done = arguments[0];"
            "document.fonts.ready.then(() => requestAnimationFrame(() => requestAnimationFrame(() => done())));"
        )
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Offline metric vs win rate" in body and "seed_story / 20250101-120000" in body
        assert "focal-s0 failed during the run" in body
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 20_000
        # Replays are stored as mp4v, which browsers cannot decode: the page must serve something Chromium plays.
        driver.find_element(By.XPATH, "//*[@role='tab'][contains(., 'Replays')]").click()
        playable = "const v = document.querySelector('video'); return v && v.readyState >= 2 && !v.error"
        wait.until(lambda d: d.execute_script(playable))
        width, duration = driver.execute_script(
            "const v = document.querySelector('video'); return [v.videoWidth, v.duration]"
        )
        assert width == 640 and duration > 2.0
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ------------------------------------------------------------------------------------ hostile run folders
def _edit_results(run_dir: Path, edit) -> None:
    data = json.loads((run_dir / "results.json").read_text())
    edit(data)
    (run_dir / "results.json").write_text(json.dumps(data))


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_blind_replay_names_from_results_json_stay_in_the_run_folder(fresh_run):
    sandbox = fresh_run.parents[2]  # tmp_path: anything written outside the run folder shows up here
    climbing = "../../../../x"
    _edit_results(fresh_run, lambda d: d["agents"][0].update(agent_id=climbing))  # the bot "pro", variant "pro"
    run = dash.load_run(fresh_run)
    agent = next(a for a in dash.ab_candidates(run)[0] if a.agent_id == climbing)
    before = _files_under(sandbox)
    path = dash.blind_replay(fresh_run, agent, "brawler", 10_003)
    escaped = Path(os.path.normpath(fresh_run / "replays" / f"blind_{climbing}_vs_brawler_s10003.mp4"))
    assert not escaped.is_relative_to(fresh_run) and not escaped.exists()
    assert path.parent == fresh_run / "replays" and path.is_file()
    assert path.name == f"blind_{safe_name(climbing)}_vs_brawler_s10003.mp4" and "/" not in safe_name(climbing)
    assert {p for p in _files_under(sandbox) - before if not p.is_relative_to(fresh_run)} == set()


def test_safe_name_keeps_plain_ids_and_separates_the_others():
    assert [safe_name(n) for n in ("pro", "naive-s0", "a_b.c")] == ["pro", "naive-s0", "a_b.c"]
    unsafe = ["../x", "..", ".hidden", "", "a/b", "a\\b", "é", "x" * 200]
    names = [safe_name(n) for n in unsafe]
    assert len(set(names)) == len(names) and safe_name("a/b") != safe_name("a_b")
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", n) for n in names), names


def test_replays_folder_linked_elsewhere_is_refused_with_a_message(fresh_run, monkeypatch):
    elsewhere = fresh_run.parents[2] / "elsewhere"
    shutil.move(fresh_run / "replays", elsewhere)
    (fresh_run / "replays").symlink_to(elsewhere, target_is_directory=True)
    run = dash.load_run(fresh_run)
    with pytest.raises(dash.RunFolderError, match="blind replay 'replays/blind_pro_vs_brawler_s10003.mp4' leads out"):
        dash.blind_replay(fresh_run, dash.ab_candidates(run)[0][0], "brawler", 10_003)
    before = _files_under(elsewhere)
    at = app_on(fresh_run.parent.parent, monkeypatch)
    at.sidebar.radio[0].set_value("Blind A/B").run()
    assert not at.exception and _files_under(elsewhere) == before
    assert sum("The replay could not be rendered" in e.value and "leads outside" in e.value for e in at.error) == 2


def test_agent_folders_outside_the_runs_folder_are_not_played(fresh_run, tmp_path_factory):
    outside = BotAgent("turtle").save(tmp_path_factory.mktemp("elsewhere") / "agent")
    _edit_results(fresh_run, lambda d: d["agents"][1].update(agent_path=str(outside)))  # rebalanced-s0
    (fresh_run / "agents" / "composite-s0").mkdir(parents=True)
    BotAgent("idle").save(fresh_run / "agents" / "composite-s0" / "agent")
    _edit_results(fresh_run, lambda d: d["agents"][2].update(agent_path="agents/composite-s0/agent"))
    # A bot row names a bot, never a folder or a server URL (which load_player would also accept).
    _edit_results(fresh_run, lambda d: d["agents"][3].update(agent_id=str(outside), variant=str(outside)))  # turtle
    _edit_results(fresh_run, lambda d: d["agents"][0].update(agent_id="http://127.0.0.1:9/", variant="x"))  # pro
    candidates, skipped = dash.ab_candidates(dash.load_run(fresh_run))
    assert (
        "lies outside" in skipped["rebalanced-s0"]
        and "the dashboard plays only agents saved there" in skipped["rebalanced-s0"]
    )
    assert "not a known bot" in skipped[str(outside)] and "not a known bot" in skipped["http://127.0.0.1:9/"]
    assert [a.agent_id for a in candidates] == ["composite-s0"]  # inside the run folder: fine


HOSTILE_RESULTS = [
    ("not UTF-8", lambda p: p.write_bytes(b'{"experiment": "\xff\xfe"}'), "results.json: not a UTF-8 text file"),
    ("nested past Python's stack", lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    ("nested deeply", lambda p: p.write_text("[" * 40 + "]" * 40), "nested more than 32 levels deep"),
    ("agents not a list", lambda p: _set(p, agents={"a": 1}), r"agents: Input should be a valid list"),
    ("offline a list", lambda p: _set_agent(p, offline=[0.5]), r"agents.0.offline: Input should be a valid dict"),
    (
        "win rate bound a string",
        lambda p: _set_agent(p, online={"brawler": {"win_rate_low": "low"}}),
        r"agents.0.online.brawler.win_rate_low",
    ),
    ("seed a string", lambda p: _set_agent(p, seed="zero"), r"agents.0.seed"),
    ("ratings of numbers", lambda p: _set(p, ratings={"pro": 5}), r"ratings.pro: Input should be a valid dict"),
    ("duplicate agent ids", lambda p: _set_agent(p, agent_id="turtle"), r"agent_id 'turtle' appears 2 times"),
    ("unknown key", lambda p: _set_agent(p, colour="red"), r"unexpected keyword argument 'colour'"),
]


def _set(path: Path, **fields) -> None:
    _edit_results(path.parent, lambda d: d.update(fields))


def _set_agent(path: Path, **fields) -> None:
    _edit_results(path.parent, lambda d: d["agents"][0].update(fields))


@pytest.mark.parametrize("name, corrupt, message", HOSTILE_RESULTS, ids=[h[0] for h in HOSTILE_RESULTS])
def test_a_results_json_that_cannot_be_shown_says_why(fresh_run, name, corrupt, message):
    corrupt(fresh_run / "results.json")
    with pytest.raises(dash.RunFolderError, match=message) as info:
        dash.load_run(fresh_run)
    assert str(fresh_run / "results.json") in str(info.value) and "\n" not in str(info.value)


def test_broken_side_files_are_named_and_the_rest_is_shown(fresh_run):
    (fresh_run / "environment.json").write_text("[1, 2]")
    (fresh_run / "confusion" / "naive-s0.json").write_text(json.dumps({"labels": 8, "matrix": [[1]]}))
    (fresh_run / "curves" / "naive-s0.json").write_text(json.dumps([{"epoch": {"a": 1}, "loss": 1.0}]))
    (fresh_run / "config.resolved.yaml").write_text("a: &x [1, *x]\n")
    (fresh_run / "plots" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    run = dash.load_run(fresh_run)
    expected = [
        "environment.json: expected a JSON object, got list",
        "naive-s0.json: 'labels' must be a list",
        "naive-s0.json: expected a list of objects, each with a numeric 'epoch'",
        "config.resolved.yaml:1: an alias refers to a node that contains it",
        "broken.png: not a readable image",
    ]
    assert all(any(e in p for p in run.problems) for e in expected), run.problems
    assert len(run.problems) == len(expected) and run.environment == {} and run.config == {}
    assert [p.name for p in run.plots] == ["accuracy_vs_winrate.png"] and set(run.confusions) == {
        "rebalanced-s0",
        "composite-s0",
    }
    with pytest.raises(dash.RunFolderError, match="class_counts must map action -> count"):
        dash.class_distribution({"action_names": ["idle"], "class_counts": ["many"]})
    with pytest.raises(dash.RunFolderError, match="event_counts must map event -> count"):
        dash.event_counts({"event_counts": {"ko": {"nested": 1}}})


def test_app_says_why_a_run_cannot_be_shown_and_keeps_the_others(fresh_run, monkeypatch):
    root = fresh_run.parent.parent
    broken = root / "seed_story" / "20250102-120000"
    shutil.copytree(fresh_run, broken)
    (broken / "plots" / "accuracy_vs_winrate.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    os.utime(broken, (time.time() + 60, time.time() + 60))  # the newest run (folder mtime): shown first
    at = app_on(root, monkeypatch)  # a corrupt plot in the default view: named, the page still works
    assert any("accuracy_vs_winrate.png: not a readable image" in w.value for w in at.warning)
    assert list(at.dataframe[0].value["agent"])[:2] == ["pro", "rebalanced-s0"] and not at.get("image")
    (broken / "results.json").write_bytes(b"\xff\xfe not text")
    os.utime(broken, (time.time() + 120, time.time() + 120))
    at.run()
    assert not at.exception and any(
        e.value.startswith("This run cannot be shown: ") and "not a UTF-8 text file" in e.value for e in at.error
    )
    runs = at.sidebar.selectbox[0]
    assert runs.options == ["seed_story/20250102-120000", "seed_story/20250101-120000"]
    runs.set_value("seed_story/20250101-120000").run()
    assert not at.exception and len(at.get("image")) == 1 and "rebalanced-s0" in set(at.dataframe[0].value["agent"])
    (fresh_run / "dataset_stats.json").write_text(json.dumps({"action_names": ["a"], "class_counts": {"a": "x"}}))
    os.utime(fresh_run / "results.json")
    at.run()
    assert not at.exception and any("class_counts must map action -> count" in e.value for e in at.error)
