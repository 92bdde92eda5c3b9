"""Export to ONNX / TorchScript: action parity on recorded observations, refusal, integrity, frame stacks."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.agents.selection import Selection
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, DuelMatch
from bcarena.eval.service import export as ex
from bcarena.eval.service.client import FrameStack
from bcarena.eval.service.export import (
    EXPORT_FILE,
    ExportError,
    ObsLayout,
    export_agent,
    load_export,
    load_served,
    record_from_dataset,
    record_from_matches,
)

pytest.importorskip("onnxruntime")


def mlp_agent(k: int = 1, seed: int = 0, mode: str = "argmax") -> TorchAgent:
    torch.manual_seed(seed)
    model = ScoreModel(MLPPolicy(37 * k, 8, (32, 32)), torch.randn(37 * k) * 0.1, torch.rand(37 * k) + 0.5)
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), k, Selection(mode=mode), name=f"mlp{k}")


def cnn_agent(k: int = 2, seed: int = 0) -> TorchAgent:
    torch.manual_seed(seed)
    model = ScoreModel(CNNPolicy(k, 8, (4, 8, 8), hidden=32), torch.tensor(0.0), torch.tensor(255.0))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), k, name="cnn")


@pytest.fixture(scope="module")
def mlp_recording():
    agent = mlp_agent()
    return agent, record_from_matches(agent, 10_000)


def test_recording_holds_distinct_model_inputs_and_the_agents_actions(mlp_recording):
    agent, rec = mlp_recording
    assert rec.inputs.shape == (10_000, 37) and rec.inputs.dtype == np.float32
    assert np.unique(rec.inputs, axis=0).shape[0] == 10_000  # frozen finished matches are not counted twice
    np.testing.assert_array_equal(agent.act(rec.inputs), rec.actions)
    assert "matches of mlp1 vs brawler" in rec.source


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_passes_parity_on_10000_observations_and_round_trips(mlp_recording, tmp_path, fmt):
    agent, rec = mlp_recording
    report = export_agent(agent, fmt, tmp_path / "exp", rec, agent_source="somewhere")
    assert report.parity.passed and report.parity.observations == 10_000 and report.parity.mismatches == 0
    assert report.parity.max_abs_score_diff < 1e-4
    # One self-contained file (ONNX weights embedded, no model.onnx.data) plus metadata, no temp folders left.
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == sorted([ex.FORMATS[fmt].filename, EXPORT_FILE])
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]
    meta = json.loads((tmp_path / "exp" / EXPORT_FILE).read_text())
    assert meta["parity"]["observations"] == 10_000 and meta["layout"]["shape"] == [37]
    served = load_export(tmp_path / "exp")
    assert served.sha256 == report.sha256 and served.format == fmt
    np.testing.assert_array_equal(served.runtime.actions(rec.inputs), rec.actions)  # any batch size works
    np.testing.assert_array_equal(served.runtime.actions(rec.inputs[:1]), rec.actions[:1])


def test_export_is_refused_when_the_exported_model_disagrees(mlp_recording, tmp_path, monkeypatch):
    agent, rec = mlp_recording
    real = ex.FORMATS["torchscript"]

    def save_broken(module, example, path):
        broken = ex.export_module(agent)
        with torch.no_grad():
            broken.class_offsets[5] += 3.0  # prefers LIGHT: argmax changes on many frames
        real.save(broken, example, path)

    monkeypatch.setitem(ex.FORMATS, "torchscript", ex.Format("torchscript", real.filename, save_broken, real.load))
    with pytest.raises(
        ExportError, match=r"export refused: torchscript model's argmax differs from torch on \d+ of 10000"
    ):
        export_agent(agent, "torchscript", tmp_path / "exp", rec)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_export_needs_enough_observations_and_a_known_format(mlp_recording, tmp_path):
    agent, rec = mlp_recording
    small = ex.ParityInputs(rec.inputs[:500], rec.actions[:500], "tiny")
    with pytest.raises(ExportError, match=r">= 10000 recorded observations, got 500"):
        export_agent(agent, "onnx", tmp_path / "a", small)
    with pytest.raises(ExportError, match=r"unknown export format 'tflite'"):
        export_agent(agent, "tflite", tmp_path / "b", rec)
    (tmp_path / "c").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_agent(agent, "torchscript", tmp_path / "c", rec)


def test_tampered_export_is_rejected(mlp_recording, tmp_path):
    agent, rec = mlp_recording
    report = export_agent(agent, "torchscript", tmp_path / "exp", rec)
    data = bytearray(report.model_file.read_bytes())
    data[-20] ^= 0xFF
    report.model_file.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not match export.json"):
        load_export(tmp_path / "exp")
    with pytest.raises(ExportError, match="neither an export folder"):
        load_served(tmp_path)


@pytest.fixture(scope="module")
def onnx_export(mlp_recording, tmp_path_factory):
    """One ONNX export of the MLP agent; tests edit copies of it."""
    agent, rec = mlp_recording
    return export_agent(agent, "onnx", tmp_path_factory.mktemp("onnx") / "exp", rec).path


def _copy_export(onnx_export, folder):
    shutil.copytree(onnx_export, folder)
    return folder


def _edit_export(folder, **fields):
    meta = json.loads((folder / EXPORT_FILE).read_text())
    meta.update(fields)
    (folder / EXPORT_FILE).write_text(json.dumps(meta))


def _hash_and_size(path):
    import hashlib

    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "model_bytes": len(data)}


def test_model_file_must_lie_inside_the_export_folder(onnx_export, tmp_path):
    other = _copy_export(onnx_export, tmp_path / "other") / "model.onnx"
    mine = _copy_export(onnx_export, tmp_path / "mine")
    # Another folder's model, with its correct hash: refused, not served.
    _edit_export(mine, model_file="../other/model.onnx", **_hash_and_size(other))
    with pytest.raises(ExportError, match=r"model_file '../other/model.onnx' lies outside the export folder"):
        load_served(mine)
    passwd = Path("/etc/passwd")
    if passwd.is_file():  # any file on the machine, even with a matching hash: never read, never parsed
        _edit_export(mine, model_file=str(passwd), **_hash_and_size(passwd))
        with pytest.raises(ExportError, match=r"model_file '/etc/passwd' lies outside the export folder"):
            load_export(mine)
    # A link inside the folder that leads out is refused the same way.
    (mine / "link.onnx").symlink_to(other)
    _edit_export(mine, model_file="link.onnx", **_hash_and_size(other))
    with pytest.raises(ExportError, match="lies outside the export folder"):
        load_export(mine)
    _edit_export(mine, model_file="model.onnx", **_hash_and_size(mine / "model.onnx"))
    assert load_export(mine).format == "onnx"  # the folder itself was fine all along


def test_a_model_that_does_not_parse_is_an_export_error(onnx_export, tmp_path):
    folder = _copy_export(onnx_export, tmp_path / "exp")
    (folder / "model.onnx").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")  # the hash is checked first ...
    with pytest.raises(ExportError, match="32 bytes, but export.json says"):
        load_export(folder)
    _edit_export(folder, model_bytes=32)
    with pytest.raises(ExportError, match="does not match export.json"):
        load_export(folder)
    _edit_export(folder, **_hash_and_size(folder / "model.onnx"))  # ... and a matching hash still must parse
    with pytest.raises(ExportError, match=r"model.onnx: not a runnable onnx model for inputs \(37,\) \(Invalid"):
        load_export(folder)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"format": ["onnx"]}, r"format is \"\['onnx'\]\"; expected one of"),
        ({"model_file": 7}, "model_file is '7'; expected the name of the model file"),
        ({"sha256": 12}, "sha256 is '12'; expected 64 lowercase hex digits"),
        ({"model_bytes": 3}, r"model.onnx: \d+ bytes, but export.json says 3"),
        ({"layout": {"obs_type": "state", "shape": ["37"], "wire_dtype": "float32"}}, "layout.shape must be a list of"),
        ({"layout": {"obs_type": "state", "shape": [37], "wire_dtype": "uint8"}}, "layout .* is inconsistent"),
        ({"layout": {"obs_type": "audio", "shape": [37], "wire_dtype": "float32"}}, "unknown obs_type 'audio'"),
        ({"agent": "mlp"}, "agent must be an object with a string 'name'"),
        (
            {"action_names": ["idle"] * 10},
            r"scores of shape \(1, 8\) for one observation; export.json names 10 actions",
        ),
    ],
)
def test_every_export_json_field_is_checked(onnx_export, tmp_path, fields, message):
    folder = _copy_export(onnx_export, tmp_path / "exp")
    _edit_export(folder, **fields)
    with pytest.raises(ExportError, match=message):
        load_export(folder)


def test_non_exportable_agents_are_named():
    from bcarena.agents.base import BotAgent

    with pytest.raises(ExportError, match=r"agent 'brawler' \(BotAgent\) has no export_module"):
        record_from_matches(BotAgent("brawler"), 10)


def test_sampling_agent_is_served_greedily_and_still_passes(tmp_path):
    agent = mlp_agent(mode="sample")
    rec = record_from_matches(agent, 300)
    report = export_agent(agent, "torchscript", tmp_path / "exp", rec, required=300)
    assert report.parity.passed and not report.parity.greedy and report.parity.module_mismatches > 0


def test_frame_stacked_state_agent_exports_and_client_stack_matches_the_agent(tmp_path):
    k = 3
    agent = mlp_agent(k=k)
    rec = record_from_matches(agent, 1000)
    assert rec.inputs.shape[1:] == (37 * k,)
    report = export_agent(agent, "onnx", tmp_path / "exp", rec, required=1000)
    assert report.layout == ObsLayout("state", (37 * k,), "float32", report.layout.features, k)
    _assert_client_stack_equals_agent_stack(agent, report.layout, "state")


def test_composite_agent_exports_and_serves_from_its_folder(tmp_path):
    from bcarena.agents.composite import CompositeAgent

    torch.manual_seed(0)
    movement = TorchAgent(
        ScoreModel(MLPPolicy(37, 5, (16,)), torch.zeros(37), torch.ones(37)),
        list(ACTION_NAMES[:5]),
        [],
        1,
        name="movement",
    )
    skill = TorchAgent(
        ScoreModel(MLPPolicy(37, 4, (16,)), torch.zeros(37), torch.ones(37)),
        ["none", "light", "heavy", "special"],
        [1, 2, 3],
        1,
        name="skill",
    )
    agent = CompositeAgent(movement, skill, list(ACTION_NAMES), list(SKILL_ACTIONS), [0, 1, 2, 3, 4], name="combo")
    rec = record_from_matches(agent, 1000)
    np.testing.assert_array_equal(agent.act(rec.inputs), rec.actions)
    assert export_agent(agent, "onnx", tmp_path / "exp", rec, required=1000).parity.passed
    folder = agent.save(tmp_path / "agent")
    served = load_served(folder)  # torch format: the weights of both parts are hashed and counted
    weights = sorted(folder.rglob("*.safetensors"))
    assert len(weights) == 2 and served.model_bytes == sum(w.stat().st_size for w in weights)
    np.testing.assert_array_equal(served.runtime.actions(rec.inputs), rec.actions)


def test_cnn_agent_exports_with_parity_and_uint8_recording(tmp_path):
    agent = cnn_agent(k=2)
    rec = record_from_matches(agent, 400)  # the full 10,000 under -m slow
    assert rec.inputs.shape == (400, 2, 84, 84) and rec.inputs.dtype == np.uint8
    report = export_agent(agent, "onnx", tmp_path / "exp", rec, required=400)
    assert report.parity.passed and report.layout.frame_stack == 2 and report.layout.wire_dtype == "uint8"
    _assert_client_stack_equals_agent_stack(agent, report.layout, "pixels")


@pytest.mark.slow
def test_cnn_agent_export_on_10000_observations(tmp_path):
    agent = cnn_agent(k=4)
    report = export_agent(agent, "onnx", tmp_path / "exp", record_from_matches(agent, 10_000))
    assert report.parity.passed and report.parity.observations == 10_000


def _assert_client_stack_equals_agent_stack(agent, layout, obs_type):
    """RemoteAgent's FrameStack must build exactly the inputs TorchAgent.stacked builds."""
    match = DuelMatch(3, obs_type=obs_type)
    obs = match.reset([0, 1, 2])
    stack = FrameStack(layout)
    agent.reset(3)
    rng = np.random.default_rng(0)
    for _ in range(6):
        np.testing.assert_array_equal(stack.push(obs[:, 0]).astype(np.float32), agent.stacked(obs[:, 0]))
        obs, _ = match.step(rng.integers(0, 8, size=(3, 2)))


def test_parity_observations_can_come_from_a_dataset(tmp_path):
    from bcarena.recordings.converter import make_duel_dataset

    data = make_duel_dataset(tmp_path / "d", "pro", ("brawler",), episodes=2, seed=1, pixels=False)
    agent = mlp_agent(k=2)
    rec = record_from_dataset(agent, data)
    assert rec.inputs.shape[1] == 74 and len(rec) >= len(data) * 0.9  # (states repeat rarely)
    np.testing.assert_array_equal(agent.act_stacked(rec.inputs), rec.actions)
    assert "dataset" in rec.source
    report = export_agent(agent, "torchscript", tmp_path / "exp", rec, required=len(rec))
    assert report.parity.passed
