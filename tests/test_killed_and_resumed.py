"""Faults: recorders, trainers and runs killed by SIGKILL, and resumes that must not mix or leave anything behind.

Each kill is a real ``SIGKILL`` of a subprocess, placed at a known point (the process kills itself from
a policy or a write it makes), so the tests know exactly what was in flight and take a few seconds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from bcarena.envs.duel import DuelConfig
from bcarena.recordings import RecordingError, RecordOptions, build_dataset, load_episode, record_duel
from bcarena.recordings.episode import META_FILE, find_episodes
from bcarena.recordings.recorder import RECORDING_FILE

KILL_TIMEOUT_S = 120  # a subprocess that has not killed itself by then is a failure, not a hang

# brawler against these, 20 s rounds, seed 0: the first batch of four ends after 62, 200, 112 and 100 frames.
OPPONENTS = ("idle", "pro", "mover", "random")
CONFIG = {"round_seconds": 20.0}
OPTIONS = {"video": False, "progress": False, "batch_size": 4}


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def _run_until_killed(code: str, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], timeout=KILL_TIMEOUT_S, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def _same_episode(a: Path, b: Path) -> bool:
    """Same meta.json (the agent-view hash aside: Matroska writes a random segment id) and the same frames."""
    meta_a, meta_b = (json.loads((p / META_FILE).read_text()) for p in (a, b))
    for meta in (meta_a, meta_b):
        meta["files"].pop("agent_view.mkv")
    return meta_a == meta_b and (load_episode(a).labels == load_episode(b).labels).all()


# ------------------------------------------------------------------------------ record --resume
def _record(out: Path, episodes: int = 1, resume: bool = False, **changes) -> list[Path]:
    settings = {"source": "pro", "opponents": ("brawler",), "seed": 0, "config": DuelConfig(round_seconds=3.0)}
    settings.update(changes)
    options = RecordOptions(video=False, progress=False, max_frames=10, resume=resume)
    source, opponents, seed, config = settings.values()
    return record_duel(source, opponents, episodes, out, seed=seed, config=config, options=options)


def test_resume_with_other_settings_is_refused_naming_each_difference(tmp_path):
    out = tmp_path / "rec"
    _record(out)
    before = (out / RECORDING_FILE).read_text()
    with pytest.raises(RecordingError) as info:
        _record(out, 2, True, source="brawler", opponents=("turtle",), seed=5, config=DuelConfig(round_seconds=4.0))
    message = str(info.value)
    for difference in (
        "source.name: 'pro' (recorded) vs 'brawler' (now)",
        "opponents: ['brawler'] (recorded) vs ['turtle'] (now)",
        "seed: 0 (recorded) vs 5 (now)",
        "game_config.round_seconds: 3.0 (recorded) vs 4.0 (now)",
    ):
        assert difference in message, message
    assert "\n" not in message and [p.name for p in find_episodes(out)] == ["episode_000000"]
    assert (out / RECORDING_FILE).read_text() == before  # the refused resume changed nothing

    # The same settings resume (and may ask for more episodes): the folder holds one player's episodes.
    _record(out, 2, True)
    assert [p.name for p in find_episodes(out)] == ["episode_000000", "episode_000001"]
    assert json.loads((out / RECORDING_FILE).read_text())["episodes"] == 2


def test_a_recording_folder_is_never_reused_without_resume_or_checked_settings(tmp_path):
    out = tmp_path / "rec"
    _record(out)
    for episode in find_episodes(out):  # a run killed before its first episode leaves only recording.json
        for file in episode.iterdir():
            file.unlink()
        episode.rmdir()
    with pytest.raises(RecordingError, match=r"recording.json: already exists; .* pass resume=True \(--resume\)"):
        _record(out)
    (out / RECORDING_FILE).unlink()  # a folder recorded by an older bcarena: its settings are unknown
    _record(out)
    (out / RECORDING_FILE).unlink()
    with pytest.raises(RecordingError, match="holds episodes but no recording.json"):
        _record(out, 2, True)
    (out / RECORDING_FILE).write_text('{"format": "something else"}')
    with pytest.raises(RecordingError, match="not a bcarena recording settings file"):
        _record(out, 2, True)


_KILLED_RECORDER = """
    import os, signal, sys
    from bcarena.envs.duel import DuelConfig, make_bot
    from bcarena.recordings import RecordOptions, record_duel
    from bcarena.recordings.sources import BotPolicy

    class KilledAt(BotPolicy):
        '''The brawler bot (fed the match's noise, so its matches are the bot's), SIGKILLed at its n-th decision.'''

        def __init__(self, decision):
            super().__init__(make_bot("brawler"))
            self.left = decision

        def act_with_noise(self, obs, noise):
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().act_with_noise(obs, noise)

    opponents, config, options = {opponents!r}, DuelConfig(**{config!r}), RecordOptions(**{options!r})
    record_duel(KilledAt(80), opponents, 8, sys.argv[1], config=config, options=options)
"""


def test_a_killed_recorder_loses_only_the_batch_in_flight_and_resume_cleans_up(tmp_path):
    out = tmp_path / "rec"
    _run_until_killed(_KILLED_RECORDER.format(opponents=OPPONENTS, config=CONFIG, options=OPTIONS), str(out))
    # Killed at decision 80 of the first batch of 4: the match that ended at frame 62 was written when it
    # ended; the three still playing are lost (temporaries); the second batch never started.
    assert [p.name for p in find_episodes(out)] == ["episode_000000"]
    partials = _partials(out)
    assert [name.split(".partial-")[0] for name in partials] == [f".episode_00000{i}" for i in (1, 2, 3)]

    options = RecordOptions(**OPTIONS, resume=True)
    record_duel("brawler", OPPONENTS, 8, out, config=DuelConfig(**CONFIG), options=options)
    assert _partials(out) == [] and len(find_episodes(out)) == 8
    clean = record_duel(
        "brawler", OPPONENTS, 8, tmp_path / "clean", config=DuelConfig(**CONFIG), options=RecordOptions(**OPTIONS)
    )
    assert all(_same_episode(a, b) for a, b in zip(find_episodes(out), clean))


# --------------------------------------------------------------------------------- train --resume
_KILLED_TRAINER = """
    import os, signal, sys
    from bcarena.agents.config import TrainConfig
    from bcarena.agents.train import train_bc
    from bcarena.envs import files

    commit, checkpoints = files.commit_partial, []

    def killed_on_the_second_checkpoint(tmp, path, overwrite=True):
        '''Killed with epoch 2's checkpoint written to its temporary, before the rename.'''
        if str(path).endswith("checkpoint.pt"):
            checkpoints.append(path)
            if len(checkpoints) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return commit(tmp, path, overwrite)

    files.commit_partial = killed_on_the_second_checkpoint
    train_bc(sys.argv[1], TrainConfig(epochs=3, hidden=[8]), sys.argv[2], progress=False)
"""


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    record_duel("pro", ("brawler",), 4, root / "rec", options=RecordOptions(video=False, progress=False, max_frames=40))
    return build_dataset(root / "rec", root / "ds", split=(0.5, 0.25, 0.25), progress=False).path


def test_a_killed_training_resumes_without_its_temporaries(tiny_dataset, tmp_path):
    from bcarena.agents.config import TrainConfig
    from bcarena.agents.train import train_bc

    out = tmp_path / "train"
    _run_until_killed(_KILLED_TRAINER, str(tiny_dataset), str(out))
    [partial] = _partials(out)
    assert partial.startswith(".checkpoint.pt.partial-")
    result = train_bc(tiny_dataset, TrainConfig(epochs=3, hidden=[8]), out, resume=True, progress=False)
    assert len(result.history) == 3 and _partials(out) == []


# ------------------------------------------------------------------------------ bcarena run, killed
EXPERIMENT = """\
name: killed
game: {round_seconds: 3.0}
recording: {player: pro, opponents: [brawler], episodes: 4}
dataset: {split: [0.5, 0.25, 0.25]}
variants:
  - name: naive
    train: {epochs: 1, hidden: [8]}
evaluation: {opponents: [brawler], matches: 2, reference: null}
tracking: {mlflow: false}
"""

_KILLED_RUN = """
    import os, signal, sys
    from rich.console import Console
    from bcarena.experiments import report
    from bcarena.experiments.runner import ExperimentRunner, load

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # results.json is written; the plots, table and the rest are not

    report.plot_accuracy_vs_win_rate = killed
    ExperimentRunner(load(sys.argv[1]), sys.argv[2], progress=False, console=Console(quiet=True)).run()
"""


def test_a_killed_run_is_marked_incomplete_and_the_dashboard_skips_it(tmp_path, monkeypatch):
    from bcarena.experiments import dashboard
    from bcarena.experiments.runner import ExperimentRunner, load

    path, runs = tmp_path / "exp.yaml", tmp_path / "runs"
    path.write_text(EXPERIMENT)
    _run_until_killed(_KILLED_RUN, str(path), str(runs))
    listing = dashboard.scan_runs(runs)
    [killed] = listing.incomplete
    assert (killed / "results.json").is_file() and listing.complete == [] and dashboard.list_runs(runs) == []
    assert json.loads((killed / "environment.json").read_text())["complete"] is False

    finished = ExperimentRunner(load(path), runs, path, progress=False, console=Console(quiet=True)).run()
    environment = json.loads((finished / "environment.json").read_text())
    assert environment["complete"] is True and environment["finished"]
    assert dashboard.scan_runs(runs) == dashboard.RunListing([finished], [killed])

    pytest.importorskip("streamlit", reason="the page needs the dashboard extra")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(dashboard.RUNS_ENV, str(runs))
    page = AppTest.from_file(str(dashboard.APP_FILE), default_timeout=60)
    page.run()
    assert not page.exception and page.sidebar.selectbox[0].options == [str(finished.relative_to(runs))]
    assert any("1 incomplete run folder(s) not listed" in c.value for c in page.sidebar.caption)
