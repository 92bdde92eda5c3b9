"""Mistakes caught before any work: experiment files on load, sweep settings before recording or Ray;
and `bcarena run` exits non-zero when a variant failed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bcarena.experiments.cli import app
from bcarena.experiments.config import ExperimentError, check_player
from bcarena.experiments.runner import load

BASE = "name: x\nvariants:\n  - name: a\n"


@pytest.mark.parametrize(
    "extra, needle",
    [
        (
            "evaluation:\n  opponents: [brawler, nosuch]\n",
            r"exp.yaml:5: evaluation.opponents.1: unknown player 'nosuch'",
        ),
        ("evaluation:\n  opponents: [brawler, brawler]\n", r"exp.yaml:5: evaluation.opponents: must not repeat"),
        ("evaluation:\n  opponents: []\n", r"exp.yaml:5: evaluation.opponents: List should have at least 1 item"),
        ("evaluation:\n  reference: champ\n", r"exp.yaml:5: evaluation.reference: unknown bot 'champ'"),
        (
            "evaluation:\n  replay: {opponent: 'pro[skill_drop=2]'}\n",
            r"exp.yaml:5: evaluation.replay.opponent: .*skill_drop must be within \[0, 1\]",
        ),
        ("evaluation:\n  offline: {tolerance_frames: 100000000}\n", r"tolerance_frames: Input should be less than"),
        ("recording:\n  player: nosuch\n", r"exp.yaml:5: recording.player: unknown player 'nosuch'"),
        ("recording:\n  opponents: [brawler, 'random[x=1]']\n", r"recording.opponents.1: .*unknown perturbation 'x'"),
        ("recording:\n  player: FOLDER\n", r"recording.player: '.*' is a folder without agent.json"),
        ("recording:\n  path: FOLDER\n", r"exp.yaml:5: recording.path: '.*' holds no episode folders"),
        ("dataset:\n  split: [0.9, 0, 0.1]\n", r"exp.yaml:5: dataset.split: .*train and val need fractions > 0"),
        ("dataset:\n  split: [0.8, 0.2, 0]\n", r"exp.yaml:5: dataset.split: .*gives 'test' no episodes, but the offl"),
        ("recording:\n  episodes: 2\n", r"exp.yaml:5: recording.episodes: 2 episode\(s\) split .* leave \['val', 'te"),
        ("seeds: [0, 3, 0]\n", r"exp.yaml:4: seeds: must not repeat a value, repeated: \[0\]"),
        ("seeds: [-1]\n", r"exp.yaml:4: seeds.0: Input should be greater than or equal to 0"),
        ("seed: -3\n", r"exp.yaml:4: seed: Input should be greater than or equal to 0"),
        (
            "evaluation:\n  replay: {side_by_side: [a, b]}\n",
            r"exp.yaml:5: evaluation.replay.side_by_side: names \['b'\]",
        ),
    ],
)
def test_names_splits_counts_and_seeds_are_checked_on_load(tmp_path, extra, needle):
    folder = tmp_path / "not_an_agent"
    folder.mkdir()
    path = tmp_path / "exp.yaml"
    path.write_text(BASE + extra.replace("FOLDER", str(folder)))
    with pytest.raises(ExperimentError, match=needle):
        load(path)


def test_players_that_can_play_pass_the_check(tmp_path):
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "agent.json").write_text("{}")  # read (and checked) when it plays
    for spec in ("pro", "pro[skill_drop=0.9]", "brawler[random=0.2,skill_drop=0]", str(agent), "http://host:8000"):
        assert check_player(spec) == spec


TINY = """\
name: tiny
game: {round_seconds: 3.0}
recording: {player: pro, opponents: [brawler], episodes: 4}
dataset: {split: [0.5, 0.25, 0.25]}
variants:
  - name: naive
    train: {epochs: 1, hidden: [8]}
  - name: needs_pixels
    train: {policy: cnn, epochs: 1}
evaluation: {opponents: [brawler], matches: 2, reference: null}
tracking: {mlflow: false}
"""


def test_run_checks_the_file_before_any_work_and_exits_1_when_a_variant_fails(tmp_path):
    runs = tmp_path / "runs"
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("opponents: [brawler], matches", "opponents: [nosuch], matches"))
    result = CliRunner().invoke(app, ["run", str(bad), "--runs", str(runs), "--no-progress"])
    assert result.exit_code == 2 and not runs.exists(), result.output  # nothing recorded, trained or written
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: invalid experiment: ") and "evaluation.opponents.0: unknown player 'nosuch'" in line

    good = tmp_path / "tiny.yaml"
    good.write_text(TINY)
    result = CliRunner().invoke(app, ["run", str(good), "--runs", str(runs), "--no-progress"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: 1 of 2 variants failed: needs_pixels-s0 (") and "pixels" in line
    [run_dir] = (runs / "tiny").iterdir()  # the others finished, and the run folder is complete
    assert json.loads((run_dir / "environment.json").read_text())["complete"] is True
    assert str(run_dir) in line


_SWEEP_MISTAKES = """
    import json, sys
    from typer.testing import CliRunner
    from bcarena.experiments.cli import app

    good, bad, runs = sys.argv[1:]
    outcomes = []
    for args in ([good, "--opponent", "nosuch"], [bad], [good, "--opponent", "pro[skill_drop=1.5]"]):
        result = CliRunner().invoke(app, ["sweep", *args, "--runs", runs])
        outcomes.append([result.exit_code, result.stderr.strip().splitlines()])
    print(json.dumps({"outcomes": outcomes, "ray_imported": "ray" in sys.modules}))
"""


def test_sweep_checks_the_experiment_and_its_settings_before_recording_or_importing_ray(tmp_path):
    good, bad, runs = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "runs"
    good.write_text(TINY)
    bad.write_text(TINY.replace("player: pro,", "player: champ,"))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SWEEP_MISTAKES), str(good), str(bad), str(runs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (code1, [line1]), (code2, [line2]), (code3, [line3]) = report["outcomes"]
    assert code1 == code2 == code3 == 2
    assert line1.startswith("error: opponent: unknown player 'nosuch'")
    assert line2.startswith("error: invalid experiment: ") and "recording.player: unknown player 'champ'" in line2
    assert "skill_drop must be within [0, 1], got 1.5" in line3
    assert not report["ray_imported"] and not runs.exists()


def test_sweep_settings_out_of_range_are_refused_before_ray(tmp_path):
    from bcarena.experiments.sweep import SweepError, SweepSettings, run_sweep

    path = tmp_path / "exp.yaml"
    path.write_text(TINY)
    for settings, needle in (
        (SweepSettings(trials=0), r"out of range .*'trials': 0"),
        (SweepSettings(matches=10**9, eval_every=0), r"'matches': 1000000000, 'eval_every': 0"),
        (SweepSettings(cpus_per_trial=0), "cpus_per_trial must be > 0"),
        (SweepSettings(match_seed=-1), r"match_seed must be within \[0, "),
    ):
        with pytest.raises(SweepError, match=needle):
            run_sweep(path, tmp_path / "sweep", settings, runs_root=tmp_path / "runs", console=Console(quiet=True))
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "runs").exists()
