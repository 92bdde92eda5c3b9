import json

from typer.testing import CliRunner

from bcarena.envs.video import read_video
from bcarena.experiments.benchmarks.env_throughput import run
from bcarena.experiments.cli import app

runner = CliRunner()


def _commands(typer_app, prefix=()):
    """Every command path of the tree (the root loads its command modules lazily: ask it by name)."""
    import typer.main

    stack = [(prefix, typer.main.get_command(typer_app))]
    while stack:
        path, cmd = stack.pop()
        yield path
        for name in cmd.list_commands(None) if hasattr(cmd, "list_commands") else ():
            stack.append((path + (name,), cmd.get_command(None, name)))


def test_every_command_has_help():
    paths = list(_commands(app))
    assert ("demo",) in paths and ("bots", "report") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_match_command_writes_a_replay(tmp_path):
    out = tmp_path / "replay.mp4"
    result = runner.invoke(app, ["match", "pro", "idle", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "winner pro" in result.output
    assert read_video(out).shape[1:] == (396, 640, 3)  # the arena under a 36-pixel caption strip


def test_bots_report_json(tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["bots", "report", "--matches", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {(r["player"], r["opponent"]) for r in report["pairings"]} >= {("pro", "brawler"), ("idle", "brawler")}


def test_env_benchmark_fast_twin():
    results = run(sizes=(1, 16), min_seconds=0.05, render_batch=8)
    assert set(results["vector_env"]) == {"1", "16"}
    assert all(v > 0 for v in results["vector_env"].values())
    assert results["speedup"]["16"] > 1.0  # batching already pays at N=16
    assert results["render_gray84_frames_per_s"] > 0
