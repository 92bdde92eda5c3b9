"""Requirements files: strict validation naming the key; checks report measured values and never pass by default."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bcarena.agents.base import BotAgent
from bcarena.agents.policies import MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
from bcarena.eval.matches import play_matches
from bcarena.eval.service.requirements import RequirementsError, check_requirements, load_requirements
from bcarena.experiments.cli import app

runner = CliRunner()


def mlp_agent() -> TorchAgent:
    torch.manual_seed(1)
    model = ScoreModel(MLPPolicy(37, 8, (32,)), torch.zeros(37), torch.ones(37) * 0.3)
    with torch.no_grad():
        model.class_offsets.copy_(torch.tensor([0, 0.5, 0.5, -2, -1, 1.5, 1.0, 0.5]))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), 1, name="mlp")


def write(tmp_path, text: str, name: str = "req.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


FULL = """
name: release
serving: {format: torch, device: cpu, max_model_mb: 1}
latency:
  - {batch: 1, p50_ms: 50, p99_ms: 100}
  - {batch: 64, p99_ms: 200}
throughput: {min_decisions_per_s: 100, batch: 64}
win_rate:
  - {opponent: turtle, min: 0.0, matches: 4}
  - {opponent: idle, min: 0.5, matches: 10, seed: 5}
offline:
  min: {balanced_accuracy: 0.1, recall_light: 0.0}
  max: {js_divergence: 1.0}
"""


def test_valid_file_loads_with_defaults(tmp_path):
    req = load_requirements(write(tmp_path, FULL))
    assert req.serving.format == "torch" and req.latency[1].batch == 64 and req.latency[1].p50_ms is None
    assert req.win_rate[0].seed == 0 and req.offline.split == "test" and req.offline.tolerance == 2


@pytest.mark.parametrize(
    "text,message",
    [
        ("latency:\n  - {batch: 1, p90_ms: 2}\n", r"latency\.0\.p90_ms: Extra inputs are not permitted"),
        ("latency:\n  - {batch: 1}\n", "give p50_ms and/or p99_ms"),
        (
            "throughput: {min_decisions_per_s: fast}\n",
            r"throughput\.min_decisions_per_s: Input should be a valid number",
        ),
        ("serving: {format: tflite}\n", r"serving\.format: Input should be 'torch', 'onnx' or 'torchscript'"),
        ("serving: {device: tpu}\n", r"serving\.device"),
        ("serving: {max_model_mb: -1}\n", r"serving\.max_model_mb: Input should be greater than 0"),
        ("win_rate:\n  - {opponent: nobody, min: 0.5}\n", r"win_rate\.0\.opponent: .*'nobody' is neither a bot"),
        ("win_rate:\n  - {opponent: pro, min: 1.5}\n", r"win_rate\.0\.min: Input should be less than or equal to 1"),
        ("offline:\n  min: {recall_kick: 0.2}\n", r"offline\.min: .*unknown offline metric 'recall_kick'"),
        ("offline:\n  min: {event_f1_idle: 0.2, event_f1_light: 0.1}\n", "unknown offline metric 'event_f1_idle'"),
        ("latncy: []\n", r"latncy: Extra inputs are not permitted"),
        ("- 1\n- 2\n", "must hold a mapping of sections"),
        ("latency: [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(RequirementsError, match=message) as info:
        load_requirements(path)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RequirementsError, match="nope.yaml: no such requirements file"):
        load_requirements(tmp_path / "nope.yaml")


def test_alias_bomb_requirements_file_is_refused_at_once(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write(tmp_path, "latency: []\n" + "\n".join(levels) + "\n")
    with pytest.raises(RequirementsError, match=r"req.yaml: its aliases expand to \d+ more values"):
        load_requirements(path)


def test_check_measures_every_requirement_and_fails_what_is_not_met(tmp_path):
    agent = mlp_agent()
    path = agent.save(tmp_path / "agent")
    report = check_requirements(agent, load_requirements(write(tmp_path, FULL)), path, parity_observations=500)
    rows = {r.requirement: r for r in report.rows}
    assert rows["device"].passed and rows["device"].measured == "cpu"
    size = (path / "model.safetensors").stat().st_size  # the torch format serves the agent folder's weights
    assert rows["model size (torch)"].value == pytest.approx(size / 1e6) and rows["model size (torch)"].passed
    for name in ("latency batch 1 p50", "latency batch 1 p99", "latency batch 64 p99"):
        assert 0 < rows[name].value < 100 and rows[name].passed and rows[name].measured.endswith(" ms")
    assert rows["throughput batch 64"].value > 100 and rows["throughput batch 64"].passed
    assert rows["win rate vs turtle"].passed  # a 0% bound is met by any rate
    idle = rows["win rate vs idle"]  # this agent times out against a dummy that never comes close
    expected = play_matches(agent, BotAgent("idle"), np.arange(5, 15)).win_rate()
    assert idle.value == expected < 0.5 and not idle.passed
    assert idle.measured.startswith(f"{expected:.1%} [")  # with its Wilson interval
    offline = [r for r in report.rows if r.requirement.startswith("offline")]
    assert len(offline) == 3 and all(not r.passed and "no dataset given" in r.reason for r in offline)
    assert not report.passed
    assert report.details["observations"]["count"] == 500
    json.dumps(report.to_dict())


def test_unavailable_device_is_not_met_with_the_reason(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    agent = mlp_agent()
    req = load_requirements(
        write(
            tmp_path,
            "serving: {device: cuda, max_model_mb: 1}\n"
            "latency:\n  - {batch: 1, p99_ms: 1000}\n"
            "throughput: {min_decisions_per_s: 1}\n",
        )
    )
    report = check_requirements(agent, req, agent.save(tmp_path / "agent"), parity_observations=500)
    rows = {r.requirement: r for r in report.rows}
    assert not rows["device"].passed and "cuda" in rows["device"].reason.lower()
    assert not rows["latency batch 1 p99"].passed and rows["latency batch 1 p99"].measured == "not measured"
    assert not rows["throughput batch 256"].passed and "device row" in rows["throughput batch 256"].reason
    assert rows["model size (torch)"].passed  # still measurable without the device
    assert not report.passed


def test_check_with_onnx_format_and_a_dataset_measures_offline_metrics(tmp_path):
    from bcarena.recordings.converter import make_duel_dataset

    make_duel_dataset(tmp_path / "d", "pro", ("brawler",), episodes=3, seed=2, pixels=False, split=(0.34, 0.33, 0.33))
    agent = mlp_agent()
    path = agent.save(tmp_path / "agent")
    req = write(
        tmp_path,
        "serving: {format: onnx, max_model_mb: 1}\nlatency:\n  - {batch: 1, p99_ms: 50}\n"
        "offline:\n  min: {accuracy: 0.0, balanced_accuracy: 0.99}\n",
    )
    result = runner.invoke(
        app,
        [
            "check",
            str(path),
            "-r",
            str(req),
            "--dataset",
            str(tmp_path / "d" / "dataset"),
            "--parity-observations",
            "300",
            "--out",
            str(tmp_path / "check.json"),
        ],
    )
    assert result.exit_code == 1, result.output  # balanced accuracy 0.99 is not met
    data = json.loads((tmp_path / "check.json").read_text())
    rows = {r["requirement"]: r for r in data["rows"]}
    assert rows["action parity (onnx vs torch)"]["passed"] and rows["action parity (onnx vs torch)"]["value"] == 0
    assert rows["model size (onnx)"]["passed"] and rows["latency batch 1 p99"]["passed"]
    assert rows["offline accuracy (test)"]["passed"] and not rows["offline balanced_accuracy (test)"]["passed"]
    assert 0 <= rows["offline balanced_accuracy (test)"]["value"] <= 1
    assert "dataset" in data["details"]["observations"]["source"]
    assert "offline balanced_accuracy (test)" in result.output and "FAIL" in result.output


def test_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path), "-r", str(write(tmp_path, "latncy: []\n"))])
    assert result.exit_code == 2 and "latncy: Extra inputs are not permitted" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "error:" in result.output


def test_failed_parity_is_a_failed_row_not_a_crash(tmp_path, monkeypatch):
    from bcarena.eval.service import export as ex

    agent = mlp_agent()
    real = ex.FORMATS["torchscript"]

    def save_broken(module, example, path):
        with torch.no_grad():
            module.class_offsets[7] += 5.0  # a different policy: always SPECIAL
        real.save(module, example, path)

    monkeypatch.setitem(ex.FORMATS, "torchscript", ex.Format("torchscript", real.filename, save_broken, real.load))
    req = load_requirements(write(tmp_path, "serving: {format: torchscript}\nlatency:\n  - {batch: 1, p99_ms: 100}\n"))
    report = check_requirements(agent, req, agent.save(tmp_path / "agent"), parity_observations=300)
    rows = {r.requirement: r for r in report.rows}
    parity = rows["action parity (torchscript vs torch)"]
    assert not parity.passed and "export refused" in parity.reason
    assert not rows["latency batch 1 p99"].passed and not report.passed
