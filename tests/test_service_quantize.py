"""int8 ONNX: quantization methods, the agreement and win-rate gates, the export folder, the requirements field."""

import json

import numpy as np
import pytest
import torch

from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.agents.selection import Selection
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, DuelConfig
from bcarena.eval.service import quantize as q
from bcarena.eval.service.export import (
    EXPORT_FILE,
    OnnxRuntime,
    ParityInputs,
    export_agent,
    load_export,
    load_served,
    record_from_matches,
)
from bcarena.eval.service.requirements import RequirementsError, load_requirements

pytest.importorskip("onnxruntime")
SHORT = DuelConfig(round_seconds=8.0)


def mlp_agent() -> TorchAgent:
    torch.manual_seed(0)
    model = ScoreModel(MLPPolicy(37, 8, (64, 64)), torch.randn(37) * 0.1, torch.rand(37) + 0.5)
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), 1, Selection(), name="mlp")


def cnn_agent() -> TorchAgent:
    torch.manual_seed(0)
    model = ScoreModel(CNNPolicy(2, 8, (4, 8, 8), hidden=32), torch.tensor(0.0), torch.tensor(255.0))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), 2, name="cnn")


OBS = 2_000  # fast twins; the real gate (>= 10,000 recorded observations) runs under -m slow


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small networks run fastest on one thread, and a shared machine punishes thread pools."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    agent = mlp_agent()
    recording = record_from_matches(agent, OBS)
    fp32 = export_agent(agent, "onnx", tmp_path_factory.mktemp("fp32") / "x", recording, required=OBS)
    return agent, recording, fp32


@pytest.fixture
def reuse_fp32(mlp, monkeypatch):
    """export_int8 takes the module's fp32 export instead of exporting again (the ONNX exporter is the slow part)."""
    monkeypatch.setattr(q, "export_agent", lambda *args, **kwargs: mlp[2])


@pytest.mark.parametrize("method", ["dynamic", "weights"])
def test_int8_models_are_smaller_and_agreement_is_counted_per_batch_size(mlp, tmp_path, method):
    agent, recording, fp32 = mlp
    out = tmp_path / "int8.onnx"
    description = q.quantize_onnx(fp32.model_file, out, method)
    assert "int8" in description and out.stat().st_size < 0.6 * fp32.model_bytes
    agreement = q.action_agreement(OnnxRuntime(fp32.model_file), OnnxRuntime(out), recording.inputs)
    assert agreement.observations == OBS and set(agreement.agreed_by_batch) == {4096, 1}
    assert agreement.agreed == min(agreement.agreed_by_batch.values()) and 0.9 < agreement.rate <= 1.0
    if method == "weights":  # no activation ranges: the same actions whatever the batch
        assert len(set(agreement.agreed_by_batch.values())) == 1


@pytest.mark.parametrize("observations", [OBS, pytest.param(10_000, marks=pytest.mark.slow)])
def test_an_accepted_int8_export_is_served_like_any_onnx_export(mlp, tmp_path, observations):
    agent, recording, _ = mlp
    if observations > len(recording):
        recording = record_from_matches(agent, observations)
    report = q.export_int8(
        agent, tmp_path / "int8", recording, opponent="brawler", matches=4, required=observations, config=SHORT
    )
    assert report.agreement.passed(observations) and report.agreement.observations == observations
    assert report.model_bytes < 0.6 * report.fp32_bytes and report.win_rates["accepted"]
    assert report.attempts[0]["method"] == "dynamic" and report.method == report.attempts[-1]["method"]
    meta = json.loads((tmp_path / "int8" / EXPORT_FILE).read_text())
    assert meta["precision"] == "int8" and meta["quantization"]["agreement"]["rate"] >= 0.999
    assert meta["quantization"]["fp32"]["model_bytes"] == report.fp32_bytes
    served = load_served(tmp_path / "int8")
    assert served.format == "onnx" and served.sha256 == report.sha256
    agree = np.mean(served.runtime.actions(recording.inputs) == recording.actions)
    assert agree >= 0.999


def test_an_int8_model_below_the_agreement_bar_is_refused_and_leaves_nothing(mlp, tmp_path, monkeypatch, reuse_fp32):
    agent, recording, _ = mlp
    monkeypatch.setattr(q, "MIN_AGREEMENT", 1.01)
    with pytest.raises(q.QuantizeError, match=r"int8 export refused: .*dynamic: \d+ of 2000 .*weights: \d+ of 2000"):
        q.export_int8(agent, tmp_path / "int8", recording, matches=2, required=OBS)
    assert list(tmp_path.iterdir()) == []


def test_a_win_rate_outside_the_fp32_interval_is_refused(mlp, tmp_path, monkeypatch, reuse_fp32):
    agent, recording, _ = mlp

    def worse(reference, candidate, opponent, matches, seed, config):
        return {"accepted": False, "int8": {"win_rate": 0.1}, "fp32": {"ci95": [0.4, 0.6]}}

    monkeypatch.setattr(q, "paired_win_rates", worse)
    with pytest.raises(q.QuantizeError, match=r"win rate vs pro 10.0% lies outside .* \[40.0%, 60.0%\]"):
        q.export_int8(agent, tmp_path / "int8", recording, required=OBS)
    assert list(tmp_path.iterdir()) == []


def test_paired_win_rates_of_identical_players_differ_by_nothing(mlp):
    agent, _, _ = mlp
    wins = q.paired_win_rates(agent, agent, "brawler", 2, 0, SHORT)
    assert wins["games"] == 4 and wins["difference"] == 0.0 and wins["games_decided_differently"] == 0
    assert wins["accepted"] and wins["fp32"] == wins["int8"]


def test_a_cnn_is_quantized_statically_on_recorded_frame_stacks(tmp_path):
    agent = cnn_agent()
    frames = np.random.default_rng(0).integers(0, 256, size=(300, 2, 84, 84), dtype=np.uint8)
    recording = ParityInputs(frames, agent.act_stacked(frames), "random frame stacks")
    fp32 = export_agent(agent, "onnx", tmp_path / "fp32", recording, required=300)
    out = tmp_path / "int8.onnx"
    description = q.quantize_onnx(fp32.model_file, out, "static", frames[:100])
    assert "static QDQ" in description and "100 inputs" in description
    import onnx

    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    agreement = q.action_agreement(OnnxRuntime(fp32.model_file), OnnxRuntime(out), frames, batches=(64,))
    assert agreement.observations == 300 and agreement.rate > 0.5
    with pytest.raises(q.QuantizeError, match="needs recorded observations to calibrate on"):
        q.quantize_onnx(fp32.model_file, tmp_path / "x.onnx", "static", None)


def test_runtime_agent_plays_like_the_agent_it_was_exported_from(mlp):
    agent, _, fp32 = mlp
    served = load_export(fp32.path)
    player = q.RuntimeAgent(served.runtime, served.layout, "mlp[onnx]")
    wins = q.paired_win_rates(agent, player, "brawler", 2, 0, SHORT)
    assert wins["games_decided_differently"] == 0


def test_the_requirements_file_asks_for_a_precision(tmp_path):
    good = tmp_path / "int8.yaml"
    good.write_text("serving: {format: onnx, precision: int8}\n")
    assert load_requirements(good).serving.precision == "int8"
    assert load_requirements(_write(tmp_path / "default.yaml", "name: x\n")).serving.precision == "fp32"
    with pytest.raises(RequirementsError, match="precision int8 needs format onnx, got format torchscript"):
        load_requirements(_write(tmp_path / "bad.yaml", "serving: {format: torchscript, precision: int8}\n"))
    with pytest.raises(RequirementsError, match="serving.precision"):
        load_requirements(_write(tmp_path / "bad2.yaml", "serving: {format: onnx, precision: int4}\n"))


def _write(path, text):
    path.write_text(text)
    return path
