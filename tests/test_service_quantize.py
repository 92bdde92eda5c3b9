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


@pytest.mark.parametrize("method", [q.DYNAMIC, q.WEIGHTS])
def test_int8_models_are_smaller_and_agreement_is_counted_per_batch_size(mlp, tmp_path, method):
    agent, recording, fp32 = mlp
    out = tmp_path / "int8.onnx"
    description = q.quantize_onnx(fp32.model_file, out, method)
    assert "int8" in description and out.stat().st_size < 0.6 * fp32.model_bytes
    agreement = q.action_agreement(OnnxRuntime(fp32.model_file), OnnxRuntime(out), recording.inputs)
    assert agreement.observations == OBS and set(agreement.agreed_by_batch) == {4096, 1}
    assert agreement.agreed == min(agreement.agreed_by_batch.values()) and 0.9 < agreement.rate <= 1.0
    if method.kind == "weights":  # no activation ranges: the same actions whatever the batch
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


@pytest.fixture(scope="module")
def cnn_fp32(tmp_path_factory):
    """The fixture CNN exported to fp32 ONNX, with 300 random frame stacks."""
    agent = cnn_agent()
    frames = np.random.default_rng(0).integers(0, 256, size=(300, 2, 84, 84), dtype=np.uint8)
    recording = ParityInputs(frames, agent.act_stacked(frames), "random frame stacks")
    return export_agent(agent, "onnx", tmp_path_factory.mktemp("cnn") / "fp32", recording, required=300), frames


def test_a_cnn_is_quantized_statically_on_recorded_frame_stacks(cnn_fp32, tmp_path):
    fp32, frames = cnn_fp32
    out = tmp_path / "int8.onnx"
    description = q.quantize_onnx(fp32.model_file, out, q.Method("s", "static", calibration_rows=100), frames)
    assert "static QDQ" in description and "100 inputs" in description
    import onnx

    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    agreement = q.action_agreement(OnnxRuntime(fp32.model_file), OnnxRuntime(out), frames, batches=(64,))
    assert agreement.observations == 300 and agreement.rate > 0.5
    with pytest.raises(q.QuantizeError, match="needs recorded observations to calibrate on"):
        q.quantize_onnx(fp32.model_file, tmp_path / "x.onnx", q.TRIED["pixels"][0], None)


def test_runtime_agent_plays_like_the_agent_it_was_exported_from(mlp):
    agent, _, fp32 = mlp
    served = load_export(fp32.path)
    player = q.RuntimeAgent(served.runtime, served.layout, "mlp[onnx]", agent)
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


def test_fp32_layers_name_the_first_and_last_weighted_layers_and_the_score_head(cnn_fp32):
    import onnx

    model = onnx.load(str(cnn_fp32[0].model_file))
    ops = {n.name: n.op_type for n in model.graph.node}
    positions = q.weighted_layers(model)
    assert [model.graph.node[i].op_type for i in positions] == ["Conv", "Conv", "Conv", "Gemm", "Gemm"]
    assert [ops[n] for n in q.fp32_nodes(model, ("first",))] == ["Conv"]
    assert [ops[n] for n in q.fp32_nodes(model, ("last",))] == ["Gemm", "LogSoftmax", "Add"]
    assert q.fp32_nodes(model, (1, 3)) == [model.graph.node[positions[1]].name, model.graph.node[positions[3]].name]
    assert q.fp32_nodes(model, ()) == []


@pytest.mark.parametrize("kind", ["static", "weights"])
def test_layers_kept_fp32_are_left_unquantized(cnn_fp32, tmp_path, kind):
    import onnx

    fp32, frames = cnn_fp32
    method = q.Method("x", kind, fp32_layers=("first", "last"), calibration_rows=64)
    out = tmp_path / "int8.onnx"
    assert "fp32 layers: first, last" in q.quantize_onnx(fp32.model_file, out, method, frames)
    model = onnx.load(str(out))
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    # A quantized layer reads its weight (and, static, its input) from a DequantizeLinear node; a kept one does not.
    quantized = [made_by.get(n.input[1]) == "DequantizeLinear" for n in layers]
    assert quantized == [False, True, True, True, False]
    if kind == "static":
        assert made_by.get(layers[0].input[0]) != "DequantizeLinear"
        assert made_by.get(layers[1].input[0]) == "DequantizeLinear"
        assert made_by[model.graph.output[0].name] == "Add"  # the scores are fp32: no int8 ties between actions
    agreement = q.action_agreement(OnnxRuntime(fp32.model_file), OnnxRuntime(out), frames, batches=(300,))
    assert agreement.rate > 0.9


def test_export_int8_keeps_the_first_method_of_the_list_that_agrees(monkeypatch, tmp_path):
    """The methods are data: tried in order, the first to reach the bar is kept and the rest are never built."""
    calls = []

    def fake(fp32, out, method, calibration, reference, inputs):
        calls.append(method.name)
        return (
            "runtime",
            method.describe(len(calibration)),
            q.Agreement(10_000, {1: {"a": 9_000, "b": 9_995}[method.name]}),
        )

    monkeypatch.setattr(q, "quantize_and_compare", fake)
    monkeypatch.setattr(q, "OnnxRuntime", lambda path: "reference")
    methods = (q.Method("a", "static", calibration_rows=7), q.Method("b", "weights"), q.Method("c", "weights"))
    method, runtime, agreement, attempts = q._first_agreeing(
        tmp_path, tmp_path, methods, np.zeros((50, 1)), None, 10_000
    )
    assert method.name == "b" and calls == ["a", "b"] and agreement.agreed == 9_995
    assert [(a["method"], a["calibration_rows"], a["agreed"]) for a in attempts] == [("a", 7, 9_000), ("b", 0, 9_995)]
    refused = r"too few .* \(a: 9000 of 10000 \(90.000%\)\); needs >= 99.9% of >= 10000$"
    with pytest.raises(q.QuantizeError, match=refused):
        q._first_agreeing(tmp_path, tmp_path, methods[:1], np.zeros((50, 1)), None, 10_000)
    assert q.TRIED["pixels"][0].kind == "static" and q.TRIED["state"][0] is q.DYNAMIC


def test_int8_benchmark_fast_twin(monkeypatch, tmp_path):
    """experiments/benchmarks/int8.py on a tiny pixel dataset: one method, one sweep variant and each layer alone."""
    from bcarena.experiments.benchmarks import int8 as bench
    from bcarena.recordings.converter import make_duel_dataset

    make_duel_dataset(tmp_path / "d", episodes=3, seed=1, split=(0.4, 0.3, 0.3), config=SHORT, pixels=True)
    cnn_agent().save(tmp_path / "cnn")
    monkeypatch.setattr(bench, "TRIED", {"pixels": (q.WEIGHTS,)})
    monkeypatch.setattr(bench, "BATCHES", (1, 4))  # a CNN call of 256 rows costs ~0.1 s
    monkeypatch.setattr(bench, "SWEEP", (q.Method("static", "static", calibration_rows=32),))
    row = bench.compare(tmp_path / "cnn", tmp_path / "d" / "dataset", "brawler", matches=1, calls=10, sweep=True)
    assert row["accepted"] is None and "action agreement below 99.9%" in row["refused"]  # < 10,000 observations
    (m,) = row["methods"]
    assert m["method"] == "weights" and 0 < m["size_ratio"] < 0.6 and set(m["latency_p50_ratio"]) == {"1", "4"}
    assert m["win_rates"]["games"] == 2 and row["summary"]["win_rate_difference"] == m["win_rate_difference"]
    assert [s["method"] for s in row["sweep"]] == ["static"] + [f"weights-only-layer-{i}" for i in range(5)]
    assert row["observations"] > row["calibration_inputs"] > 0 and sum(row["fp32_score_margins"].values()) >= 0
