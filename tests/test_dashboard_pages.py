"""The "Key moments" and "Labeling" dashboard pages: Streamlit AppTest on a small real run, and headless Chromium.

The run folder is real: 6 short pro episodes recorded with video, their dataset, two briefly trained clones,
``results.json`` / ``dataset_stats.json`` as the runner writes them, and the first clone's moments saved as
``bcarena eval moments --out <run>/moments/naive-s0`` writes them, all under one runs folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bcarena.agents.config import make_train_config
from bcarena.agents.train import train_bc
from bcarena.envs.duel import DuelConfig
from bcarena.eval import moments as M
from bcarena.experiments import dashboard as dash
from bcarena.experiments.benchmarks import dashboard_first_view as bench
from bcarena.experiments.results import AgentResult, RunResults, save_results
from bcarena.recordings.converter import build_dataset
from bcarena.recordings.overlay import OVERLAY_FILE, read_overlay, save_overlay
from bcarena.recordings.recorder import RecordOptions, record_duel

pytest.importorskip("streamlit", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")
from streamlit.testing.v1 import AppTest  # noqa: E402

CHROMIUM, CHROMEDRIVER = bench.CHROMIUM, bench.CHROMEDRIVER
ARTIFACTS = Path(os.environ.get("BCARENA_TEST_ARTIFACTS", Path(__file__).parents[1] / "runs/test-artifacts"))


def make_run(root: Path) -> Path:
    """A runs folder holding one complete run of a clone trained on 6 recorded short pro episodes."""
    recordings = root / ".cache" / "recordings" / "rec"
    record_duel(
        "pro",
        ("brawler", "random"),
        6,
        recordings,
        seed=5,
        config=DuelConfig(round_seconds=8.0),
        options=RecordOptions(video=True, progress=False),
    )
    dataset = build_dataset(recordings, root / ".cache" / "datasets" / "ds", split=(0.5, 0.17, 0.33), progress=False)
    cfg = make_train_config({"epochs": 2, "hidden": [32], "allow_missing_classes": True})
    agents, clones = [], []
    for variant in ("naive", "again"):
        folder = root / ".cache" / "agents" / variant / "agent"
        clones.append(train_bc(dataset, cfg.model_copy(update={"seed": len(agents)}), progress=False, name=variant))
        clones[-1].agent.save(folder)
        agents.append(AgentResult(f"{variant}-s0", variant, 0, "bc", str(folder)))
    run = root / "story" / "20260101-000000"
    run.mkdir(parents=True)
    M.write_moments(M.explore(clones[0].agent, dataset, "test", 2), dataset, run / "moments" / "naive-s0", top=5)
    save_results(run, RunResults("story", "20260101-000000", agents, "brawler"))
    (run / "dataset_stats.json").write_text(json.dumps({"dataset": str(dataset.path)}))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pages") / "runs"
    make_run(root)
    return root


@pytest.fixture
def fresh_runs(runs, tmp_path) -> Path:
    """A private copy (the labeling tests write the overlay); paths in the run are rewritten to the copy."""
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    run = copy / "story" / "20260101-000000"
    for path in (
        run / "results.json",
        run / "dataset_stats.json",
        copy / ".cache" / "datasets" / "ds" / "manifest.json",
    ):
        path.write_text(path.read_text().replace(str(runs), str(copy)))
    return copy


def app_page(root: Path, monkeypatch, page: str) -> AppTest:
    monkeypatch.setenv(dash.RUNS_ENV, str(root))
    at = AppTest.from_file(str(dash.APP_FILE), default_timeout=120)
    at.run()
    at.sidebar.radio[0].set_value(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_key_moments_page_counts_filters_side_by_side_and_closed_loop(runs, monkeypatch):
    at = app_page(runs, monkeypatch, "Key moments")
    assert not at.error, [e.value for e in at.error]
    caption = at.caption[0].value
    assert "**naive-s0**" in caption and "key moments" in caption and "opportune" in caption
    assert "saved by `bcarena eval moments`" in caption  # the first view read the saved files
    assert at.dataframe[0].value.columns[:5].tolist() == ["event", "missed", "late", "early", "right"]
    listed = at.dataframe[1].value
    assert listed["rank"].tolist() == list(range(1, len(listed) + 1)) and len(listed) > 10
    at.multiselect(key="moments_labels").set_value(["missed"]).run()
    assert set(at.dataframe[1].value["label"]) == {"missed"}
    (filmstrip,) = at.get("image")  # the chosen moment's
    assert "frames -2..+2" in filmstrip.proto.imgs[0].caption
    at.selectbox(key="moments_b").set_value("again-s0").run()
    both = at.dataframe[1].value
    assert {"label_left", "label_right"} <= set(both.columns) and set(both["label_left"]) == {"missed"}
    at.number_input(key="loop_matches").set_value(2).run()
    at.button(key="loop_play").click().run()
    assert not at.exception, [e.value for e in at.exception]
    types = at.dataframe[-1].value
    assert list(types.columns) == ["expert_action", "agent_action", "bucket", "moments", "lost", "lost_rate"]
    # an agent without saved moments: the page says how to save them, and computes them when asked
    at.selectbox(key="moments_b").set_value("(none)").run()
    at.selectbox(key="moments_agent").set_value("again-s0").run()
    assert "No saved moments of **again-s0**" in at.info[0].value and "--out" in at.info[0].value
    assert not at.dataframe
    at.button(key="moments_compute").click().run()
    assert not at.exception and "(computed now)" in at.caption[0].value and len(at.dataframe[1].value) > 10


def test_the_moments_module_the_page_imports_loads_no_torch():
    code = "import sys, bcarena.eval.moments; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0, "eval.moments imported torch"


@pytest.mark.slow  # ~25 s here (a fresh interpreter imports the dashboard); the test above is its fast twin
def test_the_first_view_of_key_moments_reads_saved_files_and_imports_no_torch(runs):
    # in a fresh interpreter, as a new dashboard server (`bcarena bench dashboard` times both pages this way)
    _, _, torch = bench._fresh(bench._server_side, str(runs), "Key moments")
    assert not torch, "the first view of Key moments imported torch"


def test_labeling_round_trip_marks_on_the_page_change_the_built_dataset_exactly(fresh_runs, monkeypatch, tmp_path):
    recordings = fresh_runs / ".cache" / "recordings" / "rec"
    at = app_page(fresh_runs, monkeypatch, "Labeling")
    assert not at.error, [e.value for e in at.error]
    assert at.text_input(key="label_folder").value == str(recordings)
    at.text_input(key="label_who").set_value("ana").run()
    marks = [(0, 12, 14), (0, 40, 40), (3, 7, 8)]  # (episode index, first frame, last frame)
    for episode, first, last in marks:
        at.selectbox(key="label_episode").set_value(f"episode_{episode:06d}").run()
        at.slider(key="label_frame").set_value(first).run()
        at.radio(key="label_kind").set_value("mark_moment").run()
        at.slider(key="label_range").set_value((first, last)).run()
        at.button(key="label_apply").click().run()
    at.slider(key="label_range").set_value((20, 21)).run()
    at.radio(key="label_kind").set_value("relabel").run()
    at.selectbox(key="label_value").set_value("heavy").run()
    at.button(key="label_apply").click().run()
    at.button(key="label_undo").click().run()  # the relabel is undone before the save
    assert not (recordings / OVERLAY_FILE).exists()  # nothing is written before Save
    at.button(key="label_save").click().run()
    assert not at.exception and "Saved revision 5 (3 edits)" in at.success[0].value
    saved = read_overlay(recordings)
    assert [(e.kind, e.who, e.start, e.end) for e in saved.edits] == [("mark_moment", "ana", a, b) for _, a, b in marks]
    data = build_dataset(recordings, tmp_path / "ds", split=(0.5, 0.17, 0.33), pixels=False, progress=False)
    assert data.manifest["event_counts"]["marked"] == sum(b - a + 1 for _, a, b in marks) == 6
    marked = data.table[data.table["event_marked"]]
    assert sorted(zip(marked["episode"], marked["frame"])) == [(0, 12), (0, 13), (0, 14), (0, 40), (3, 7), (3, 8)]

    # someone else saves meanwhile: the page's next save is refused with their edit named, then merged on request
    other = save_overlay(recordings, saved.edit("exclude_segment", "episode_000005", 0, 9, who="ben"), saved)
    at.selectbox(key="label_episode").set_value("episode_000001").run()
    at.radio(key="label_kind").set_value("mark_moment").run()
    at.slider(key="label_range").set_value((30, 30)).run()
    at.button(key="label_apply").click().run()
    at.button(key="label_save").click().run()
    message = at.error[0].value
    assert "Not saved" in message and "revision 6 on disk, this save is based on revision 5" in message
    assert "exclude_segment episode_000005 frames 0-9 by ben" in message and read_overlay(recordings) == other
    at.checkbox(key="label_merge").check().run()
    at.button(key="label_save").click().run()
    assert "Saved revision 7 (5 edits)" in at.success[0].value
    assert [e.who for e in read_overlay(recordings).edits] == ["ana", "ana", "ana", "ben", "ana"]


def test_labeling_page_names_a_recording_it_cannot_open(fresh_runs, monkeypatch, tmp_path):
    recordings = fresh_runs / ".cache" / "recordings" / "rec"
    (recordings / OVERLAY_FILE).write_text("{not json")
    at = app_page(fresh_runs, monkeypatch, "Labeling")
    assert "This recording cannot be labelled" in at.error[0].value and "not valid JSON" in at.error[0].value
    at.text_input(key="label_folder").set_value(str(tmp_path / "nowhere")).run()
    assert "no recordings folder here" in at.error[0].value and not at.exception
    assert (recordings / OVERLAY_FILE).read_text() == "{not json"  # the page never rewrites what it cannot read


@pytest.mark.slow  # ~80 s here (a Streamlit server and Chromium); the AppTest tests above are its fast twins
def test_pages_in_headless_chromium(runs):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: needs {CHROMIUM} and {CHROMEDRIVER}")
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="the browser test needs selenium")
    root = Path(os.environ.get("BCARENA_PAGES_RUNS", runs))  # a real run folder for the README screenshots
    seconds = bench.chromium_first_views(root, bench.DONE, ARTIFACTS)  # `bcarena bench dashboard` measures more
    for name in ("moments.png", "labeling.png"):
        assert (ARTIFACTS / name).stat().st_size > 20_000
    print(f"first view in Chromium, right after the first page: {seconds} (runs {root})")
