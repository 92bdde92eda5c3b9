"""Architecture rules checked on the real code: one error root, one way to write files, one match loop, agents that
declare what they can do, and an import graph that only points down the layers, without cycles."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bcarena.envs.errors import BcarenaError
from bcarena.envs.files import (
    OutputExistsError,
    OutputPathError,
    atomic_file,
    atomic_folder,
    new_partial,
    remove_partials,
    write_bytes,
    write_json,
    write_text,
)

LAYERS = ("envs", "recordings", "agents", "eval", "experiments")
# Optional extras (pyproject's optional-dependencies): a module needing one that is not installed is skipped.
OPTIONAL_IMPORTS = {
    "ray",
    "optuna",
    "mlflow",
    "streamlit",
    "fastapi",
    "uvicorn",
    "httpx",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "minari",
}
# Modules that are not libraries: importing them does work (a Streamlit script renders its page).
NOT_IMPORTABLE = {"bcarena.experiments.dashboard_app"}
# Exceptions that are deliberately not BcarenaErrors, with the reason.
NOT_USER_ERRORS = {
    # The agent server answers it to the HTTP client as a status code; it never reaches a command-line user.
    "bcarena.eval.service.server.RequestError",
    # Control flow, not an error: the quit key unwinds the match loop and human play catches it.
    "bcarena.recordings.play._QuitPressed",
    # Control flow: a parity recording that holds enough inputs unwinds the match loop; the exporter catches it.
    "bcarena.eval.service.export._Recorded",
}


def _layer_modules() -> list:
    modules = []
    for layer in LAYERS:
        package = importlib.import_module(f"bcarena.{layer}")
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name in NOT_IMPORTABLE:
                continue
            try:
                modules.append(importlib.import_module(info.name))
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in OPTIONAL_IMPORTS:
                    raise
    return modules


def _project_exceptions() -> dict[str, type]:
    found = {}
    for module in _layer_modules():
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_project_error_is_a_bcarena_error():
    exceptions = _project_exceptions()
    assert len(exceptions) > 20  # the walk really found the layers' error classes
    outside = sorted(
        name for name, cls in exceptions.items() if not issubclass(cls, BcarenaError) and name not in NOT_USER_ERRORS
    )
    assert not outside, f"derive these from bcarena.envs.errors.BcarenaError (or allow-list them): {outside}"
    stale = sorted(NOT_USER_ERRORS - set(exceptions))
    assert not stale, f"allow-listed exceptions that no longer exist: {stale}"
    names = [name.rsplit(".", 1)[1] for name in exceptions]
    shared = sorted({name for name in names if names.count(name) > 1})
    assert not shared, f"two error classes share a name: {shared}"


def test_a_bcarena_error_reads_as_its_message_and_keeps_its_builtin_type():
    from bcarena.envs.duel.bots import UnknownBotError, make_bot

    with pytest.raises(UnknownBotError) as info:
        make_bot("champion")
    assert isinstance(info.value, KeyError) and isinstance(info.value, BcarenaError)
    assert str(info.value).startswith("unknown bot 'champion'")  # not quoted, as a KeyError's str would be


# ------------------------------------------------------------------------------------------ files
def _source_files() -> list[Path]:
    """Every .py file of the five layers, found without importing them."""
    roots = [Path(importlib.util.find_spec(f"bcarena.{layer}").origin).parent for layer in LAYERS]
    return sorted(path for root in roots for path in root.rglob("*.py"))


FILES_MODULE = Path(importlib.util.find_spec("bcarena.envs.files").origin)


def _renames(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that move a finished file into place or make a temporary to write: os.replace/rename, shutil.move,
    tempfile.mkdtemp/mkstemp, and a one-argument ``.rename(x)`` / ``.replace(x)`` (Path's; str.replace takes two)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        call = f"{owner}.{node.func.attr}" if owner else f".{node.func.attr}"
        if call in {"os.replace", "os.rename", "shutil.move", "tempfile.mkdtemp", "tempfile.mkstemp"}:
            found.append((node.lineno, call))
        elif node.func.attr in ("rename", "replace") and len(node.args) == 1 and not node.keywords:
            found.append((node.lineno, call))
    return found


def test_only_envs_files_renames_files_into_place():
    sources = _source_files()
    assert FILES_MODULE in sources and len(sources) > 50
    offenders = [
        f"{path.relative_to(path.parents[1])}:{line} {call}"
        for path in sources
        if path != FILES_MODULE
        for line, call in _renames(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, f"write through bcarena.envs.files instead: {offenders}"
    assert _renames(ast.parse(FILES_MODULE.read_text()))  # the check sees the renames where they belong


def test_the_rename_check_catches_hand_written_atomic_writes():
    code = (
        "import os, tempfile\nos.replace(a, b)\nPath(a).rename(b)\ntmp.replace(path)\n"
        "tempfile.mkdtemp(dir=d)\ns.replace('a', 'b')\ndf.rename(columns={})\n"
    )
    assert [line for line, _ in _renames(ast.parse(code))] == [2, 3, 4, 5]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"old": True})
    with pytest.raises(TypeError):
        write_bytes(target, "not bytes")  # fails while writing the temporary
    with pytest.raises(RuntimeError, match="writer crashed"):
        with atomic_file(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp.name.startswith(".report.json.partial-")
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == '{\n  "old": true\n}\n'
    assert _entries(tmp_path) == ["report.json"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n" and _entries(tmp_path) == ["report.json"]


def test_a_file_in_the_way_of_an_output_folder_is_named(tmp_path):
    (tmp_path / "runs").write_text("a file, not a folder")
    with pytest.raises(OutputPathError, match=r"r1/results.json: cannot create its folder because .*runs is a file"):
        write_text(tmp_path / "runs" / "r1" / "results.json", "{}")
    assert isinstance(OutputPathError("x"), BcarenaError)


def test_atomic_folder_replaces_an_old_folder_only_when_the_new_one_is_complete(tmp_path):
    target = tmp_path / "agent"
    with atomic_folder(target) as tmp:
        (tmp / "weights").write_text("v1")
    assert _entries(target) == ["weights"] and _entries(tmp_path) == ["agent"]

    with pytest.raises(OutputExistsError, match="agent: already exists") as info:
        with atomic_folder(target) as tmp:
            (tmp / "weights").write_text("v2")
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, BcarenaError)
    with pytest.raises(RuntimeError):
        with atomic_folder(target, overwrite=True) as tmp:
            (tmp / "weights").write_text("v2, half")
            raise RuntimeError("killed while saving")
    assert (target / "weights").read_text() == "v1" and _entries(tmp_path) == ["agent"]

    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "config").write_text("v3")
        assert (target / "weights").read_text() == "v1"  # the old folder stays until the new one is done
    assert _entries(target) == ["config"] and _entries(tmp_path) == ["agent"]


def test_a_folder_that_appears_while_filling_is_kept(tmp_path):
    target = tmp_path / "entry"
    with pytest.raises(OutputExistsError):
        with atomic_folder(target) as tmp:
            (tmp / "ours").write_text("ours")
            target.mkdir()
            (target / "theirs").write_text("theirs")
    assert _entries(target) == ["theirs"] and _entries(tmp_path) == ["entry"]


def test_remove_partials_removes_only_the_temporaries(tmp_path):
    keep = ["dataset", "notes.partial-1.txt", ".hidden", "results.json"]
    (tmp_path / "dataset").mkdir()
    for name in keep[1:]:
        (tmp_path / name).write_text("x")
    partial_folder = new_partial(tmp_path / "dataset", folder=True)
    (partial_folder / "frames.parquet").write_text("half")
    partial_file = new_partial(tmp_path / "results.json")
    removed = remove_partials(tmp_path)
    assert sorted(removed) == sorted([partial_folder, partial_file])
    assert _entries(tmp_path) == sorted(keep)
    assert remove_partials(tmp_path / "missing") == []


def _version_lookups(tree: ast.AST) -> list[int]:
    """Lines calling ``metadata.version(...)`` / ``importlib.metadata.version(...)`` (a hand-written version stamp)."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "version"
        and ast.unparse(node.func.value).endswith("metadata")
    ]


def test_only_envs_files_reads_package_versions_and_hashes_files():
    offenders = []
    for path in _source_files():
        if path == FILES_MODULE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        offenders += [f"{path.name}:{line} metadata.version" for line in _version_lookups(tree)]
        offenders += [
            f"{path.name}:{node.lineno} def {node.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name in ("sha256_file", "write_atomic")
        ]
    assert not offenders, f"use bcarena.envs.files (package_version(s), sha256_file, write_*): {offenders}"
    assert _version_lookups(ast.parse(FILES_MODULE.read_text()))
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("bcarena.eval.files")


# ------------------------------------------------------------------------------------- match loop
PLAY_MODULE = Path(importlib.util.find_spec("bcarena.envs.play").origin)
PACKAGE_ROOT = Path(importlib.util.find_spec("bcarena.envs").origin).parents[1]  # holds envs/, eval/, ...
# Every ``<receiver>.step(...)`` outside envs/play.py, by module and receiver, with why it is not a match loop.
STEPS_ALLOWED = {
    ("envs/duel/env.py", "self.core"): "DuelMatch, DuelEnv and DuelVectorEnv are the gymnasium views of the core",
    ("envs/duel/parallel.py", "self.core"): "DuelParallelEnv: the PettingZoo view of the core (its users step it)",
    ("envs/boxing.py", "env"): "the seeded NOOPs of a Boxing reset",
    ("envs/boxing.py", "self.env"): "BoxingView wraps one emulator",
    ("envs/boxing.py", "self.vector"): "BoxingBatch.step: Boxing's Match, which the loop drives",
    ("recordings/games.py", "core"): "the converter replays one logged decision to check a key log; no policy acts",
    ("agents/sb3.py", "block"): "DuelSB3VecEnv: SB3's training env over DuelVectorEnv blocks (PPO steps it)",
    ("experiments/benchmarks/match_throughput.py", "env"): "the one-match-at-a-time baseline the loop is timed against",
    ("experiments/benchmarks/env_throughput.py", "env"): "measures the vector env itself",
}
OPTIMIZERS = {"optimizer", "opt"}  # torch optimizers step too
NOISE_MODULES = {"envs/play.py", "envs/duel/env.py", "envs/duel/__init__.py"}  # the loop, the definition, its export


def _step_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, receiver) of every ``<receiver>.step(...)`` call."""
    return sorted(
        (node.lineno, ast.unparse(node.func.value))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step"
    )


def test_only_the_match_loop_steps_matches():
    offenders, allowed_seen = [], set()
    sources = _source_files()
    assert PLAY_MODULE in sources
    for path in sources:
        module = path.relative_to(PACKAGE_ROOT).as_posix()
        for line, receiver in _step_calls(ast.parse(path.read_text(), str(path))):
            if path == PLAY_MODULE or receiver in OPTIMIZERS:
                continue
            if (module, receiver) in STEPS_ALLOWED:
                allowed_seen.add((module, receiver))
            else:
                offenders.append(f"{module}:{line} {receiver}.step(...)")
    assert not offenders, f"play matches with bcarena.envs.play.play (hooks see every step): {offenders}"
    assert allowed_seen == set(STEPS_ALLOWED), f"stale allow-list entries: {set(STEPS_ALLOWED) - allowed_seen}"
    assert [r for _, r in _step_calls(ast.parse(PLAY_MODULE.read_text()))].count("match") == 1  # the one loop


def test_the_step_check_catches_a_hand_written_match_loop():
    code = "while not match.all_done:\n    obs, events = match.step(actions)\n    self.core.step(a)\noptimizer.step()\n"
    assert _step_calls(ast.parse(code)) == [(2, "match"), (3, "self.core"), (4, "optimizer")]


def test_per_match_bot_noise_is_drawn_in_the_match_loop_only():
    users = {
        path.relative_to(PACKAGE_ROOT).as_posix()
        for path in _source_files()
        if any(
            isinstance(node, (ast.Name, ast.alias, ast.Attribute))
            and "bot_noise" in (getattr(node, "id", None), getattr(node, "name", None), getattr(node, "attr", None))
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
        )
    }
    assert users == NOISE_MODULES, f"bots get their noise from the match loop (envs/play.py): {users - NOISE_MODULES}"


# ----------------------------------------------------------------------------------------- agents
# What each built-in agent kind claims it can do (beyond act): the capability Protocols on its class.
CAPABILITY_CLAIMS = {
    "bot": {"Stochastic"},
    "torch": {"Exportable", "FrameStacked", "Stochastic"},
    "composite": {"Exportable", "FrameStacked", "Stochastic"},
    "sb3_ppo": {"Exportable", "FrameStacked", "Stochastic"},
}
# Members callers used to probe with getattr before the Agent base and the Protocols declared them.
CAPABILITY_MEMBERS = {
    "export_module",
    "input_shape",
    "stacked",
    "act_stacked",
    "scores_stacked",
    "selection",
    "frame_stack",
    "game",
    "action_names",
    "obs_type",
    "name",
    "reset",
    "greedy",
    "seed",
}


class _Echo:
    """The parts of an Agent the tests below fill in: ``out(obs)`` is what ``_act`` returns."""

    name = "echo"

    def __init__(self, out=None, obs_type="state"):
        self.out, self.obs_type = out, obs_type

    def _act(self, obs):
        return self.out(obs) if self.out else np.zeros(obs.shape[0], dtype=np.int64)


def _echo(out=None, obs_type="state"):
    from bcarena.agents.base import Agent

    return type("EchoAgent", (_Echo, Agent), {})(out, obs_type)


def test_agent_act_checks_observations_by_shape_and_dtype_naming_the_agent():
    from bcarena.agents.base import ObservationError

    agent = _echo()
    assert agent.act(np.zeros((3, 37), np.float64)).dtype == np.int64  # real dtypes convert to float32
    cases = [
        (np.zeros((3, 36), np.float32), r"\(B, 37\) float32, got \(3, 36\) float32"),
        (np.zeros(37, np.float32), r"got \(37,\) float32"),
        (np.zeros((3, 37), dtype="<U1"), r"got \(3, 37\) <U1"),
    ]
    for obs, message in cases:
        with pytest.raises(
            ObservationError, match=rf"^agent 'echo': expected state observations of shape .*{message}$"
        ):
            agent.act(obs)
    pixels = _echo(obs_type="pixels")
    assert pixels.act(np.zeros((2, 84, 84, 1), np.uint8)).shape == (2,)
    with pytest.raises(ObservationError, match=r"\(B, 84, 84, 1\) uint8, got \(2, 84, 84, 1\) float32"):
        pixels.act(np.zeros((2, 84, 84, 1), np.float32))  # floats in [0, 1] would be another picture
    with pytest.raises(ObservationError, match=r"agent 'echo' observes 'rgb'; duel offers \['state', 'pixels'\]"):
        _echo(obs_type="rgb").act(np.zeros((1, 37), np.float32))


def test_agent_act_checks_actions_with_the_one_validator_naming_the_agent():
    from bcarena.envs.play import PolicyError

    obs = np.zeros((4, 37), np.float32)
    cases = [
        (lambda o: np.zeros(3, np.int64), r"act\(\) must return \(4,\) integer action ids, got int64 \(3,\)"),
        (lambda o: np.zeros(4, np.float32), r"act\(\) must return \(4,\) integer action ids, got float32"),
        (lambda o: np.array([0, 1, 8, -1]), r"actions must be in \[0, 8\), got \[-1, 0, 1, 8\]"),
    ]
    for out, message in cases:
        with pytest.raises(PolicyError, match=rf"^agent 'echo': {message}"):
            _echo(out).act(obs)
    assert _echo(lambda o: [7, 0, 1, 2]).act(obs).tolist() == [7, 0, 1, 2]


def test_agents_declare_game_actions_and_observations():
    from bcarena.agents.base import BotAgent
    from bcarena.envs.boxing import ACTION_NAMES as BOXING_ACTIONS

    bot = BotAgent("pro")
    assert (bot.game, bot.num_actions, bot.obs_shape, bot.obs_dtype) == ("duel", 8, (37,), np.float32)
    boxer = type("Boxer", (_Echo, importlib.import_module("bcarena.agents.base").Agent), {"game": "boxing"})(
        obs_type="pixels"
    )
    assert boxer.action_names == list(BOXING_ACTIONS) and boxer.num_actions == 18
    assert boxer.obs_shape == (84, 84, 1)
    assert boxer.act(np.zeros((2, 84, 84, 1), np.uint8)).shape == (2,)


def _agent_classes() -> list[type]:
    from bcarena.agents.base import Agent

    found = {
        value
        for module in _layer_modules()
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, Agent) and value.__module__ == module.__name__
    }
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def test_every_agent_implements_act_through_the_checked_base():
    from bcarena.agents.base import Agent

    classes = _agent_classes()
    names = {cls.__name__ for cls in classes}
    assert {"BotAgent", "TorchAgent", "CompositeAgent", "SB3Agent", "RemoteAgent"} <= names
    overriding = [cls.__qualname__ for cls in classes if cls is not Agent and "act" in vars(cls)]
    assert not overriding, f"implement _act, not act (Agent.act checks inputs and outputs): {overriding}"
    concrete = [cls for cls in classes if not inspect.isabstract(cls)]
    assert all(cls._act is not Agent._act for cls in concrete)
    assert "act" in Agent.__dict__ and getattr(Agent.act, "__final__", False)


def test_every_builtin_agent_kind_declares_the_capabilities_it_claims():
    from bcarena.agents import capabilities
    from bcarena.agents.base import agent_class
    from bcarena.agents.registry import AGENT_KINDS

    assert set(CAPABILITY_CLAIMS) == set(AGENT_KINDS)
    protocols = {name: getattr(capabilities, name) for name in ("Exportable", "FrameStacked", "Stochastic")}
    for kind, claimed in CAPABILITY_CLAIMS.items():
        cls = agent_class(kind)
        declared = {name for name, proto in protocols.items() if proto in cls.__mro__}
        assert declared == claimed, f"{kind}: declares {declared}, claims {claimed}"
        assert not inspect.isabstract(cls), f"{kind}: {sorted(cls.__abstractmethods__)} left unimplemented"
    samples = _sample_agents()
    for kind, agent in samples.items():
        found = {name for name, proto in protocols.items() if isinstance(agent, proto)}
        assert found == CAPABILITY_CLAIMS[kind], f"{kind}: an instance satisfies {found}"


def _sample_agents() -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3.common.policies import ActorCriticPolicy

    from bcarena.agents.base import BotAgent
    from bcarena.agents.composite import CompositeAgent
    from bcarena.agents.policies import MLPPolicy, ScoreModel
    from bcarena.agents.sb3 import SB3Agent, policy_kwargs
    from bcarena.agents.torch_agent import TorchAgent
    from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
    from bcarena.envs.duel.env import observation_space

    def mlp(n, names, skills):
        return TorchAgent(ScoreModel(MLPPolicy(37, n, (8,)), torch.zeros(37), torch.ones(37)), names, skills)

    names = list(ACTION_NAMES)
    policy = ActorCriticPolicy(
        observation_space("state"), gym.spaces.Discrete(8), lambda _: 0.0, **policy_kwargs([8], "tanh")
    )
    return {
        "bot": BotAgent("pro"),
        "torch": mlp(8, names, list(SKILL_ACTIONS)),
        "composite": CompositeAgent(
            mlp(5, names[:5], []), mlp(4, ["none", *names[5:]], [1, 2, 3]), names, list(SKILL_ACTIONS), [0, 1, 2, 3, 4]
        ),
        "sb3_ppo": SB3Agent(policy, [8], "tanh"),
    }


def test_callers_do_not_probe_agents_with_getattr():
    probes = []
    for path in _source_files():
        module = path.relative_to(PACKAGE_ROOT).as_posix()
        if module.split("/")[0] not in ("agents", "eval", "experiments"):
            continue  # recordings/ and envs/ sit below agents and take duck-typed policies
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in CAPABILITY_MEMBERS
            ):
                probes.append(f"{module}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
    assert not probes, f"declare it on Agent or a bcarena.agents.capabilities Protocol and use isinstance: {probes}"


def test_agent_kinds_resolve_lazily_and_the_agent_layer_mutates_nothing_on_import():
    code = (
        "import sys, bcarena.agents, bcarena.agents.base; "
        "print(sorted(m for m in ('bcarena.agents.torch_agent', 'bcarena.agents.composite', 'bcarena.agents.sb3', "
        "'torch', 'stable_baselines3', 'bcarena.recordings.sources') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing the Agent base imported {out.strip()}"
    registry = Path(importlib.util.find_spec("bcarena.agents.registry").origin)
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(ast.parse(registry.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not {name for name in imported if name and name.startswith("bcarena.agents")}, imported
    agents_root = registry.parent
    for path in sorted(agents_root.glob("*.py")):
        calls = [
            node.lineno
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
        ]
        assert not calls, f"{path.name}: module-level calls at lines {calls} (no layer changes another on import)"


def test_agent_kinds_come_from_entry_points_and_register_agent_kind(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from bcarena.agents import registry
    from bcarena.agents.base import AgentFileError, BotAgent, load_agent

    folder = BotAgent("turtle", seed=2).save(tmp_path / "bot")
    spec = json.loads((folder / "agent.json").read_text())
    (folder / "agent.json").write_text(json.dumps({**spec, "kind": "thirdparty_bot"}))
    with pytest.raises(AgentFileError, match="unknown agent kind 'thirdparty_bot'"):
        load_agent(folder)
    installed = [EntryPoint("thirdparty_bot", "bcarena.agents.base:BotAgent", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(
        registry.importlib.metadata,
        "entry_points",
        lambda group: installed if group == registry.ENTRY_POINT_GROUP else [],
    )
    registry._installed_kinds.cache_clear()
    registry.resolve_agent_kind.cache_clear()
    try:
        assert registry.agent_kinds()["thirdparty_bot"] == "bcarena.agents.base:BotAgent"
        assert load_agent(folder).name == "turtle"
    finally:
        registry._installed_kinds.cache_clear()
        registry.resolve_agent_kind.cache_clear()
    with pytest.raises(registry.AgentKindError, match="'torch' is already registered"):
        registry.register_agent_kind("torch", "somewhere:Else")
    with pytest.raises(registry.AgentKindError, match="must look like 'package.module:ClassName'"):
        registry.register_agent_kind("mine", "no_colon")
    registry.register_agent_kind("mine", "bcarena.agents.base:BotAgent")
    try:
        (folder / "agent.json").write_text(json.dumps({**spec, "kind": "mine"}))
        assert load_agent(folder).seed == 2
        registry.register_agent_kind("not_a_class", "bcarena.agents.registry:AGENT_KINDS")
        (folder / "agent.json").write_text(json.dumps({**spec, "kind": "not_a_class"}))
        with pytest.raises(registry.AgentKindError, match="is a dict, not a class"):
            load_agent(folder)
    finally:
        registry.unregister_agent_kind("mine")
        registry.unregister_agent_kind("not_a_class")


# ----------------------------------------------------------------------------- the import graph
ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(["bcarena", *(parts[:-1] if parts[-1] == "__init__" else parts)])


def _import_graph() -> dict[str, set[str]]:
    """Module -> the bcarena modules it imports, at the top or inside functions (lazy imports count)."""
    files = {_module_name(path): path for layer in LAYERS for path in (ROOT / layer).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from bcarena.eval import matches" imports a module; "from bcarena.eval.matches import x" its module.
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {target for target in targets if target in files and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_layers_import_only_downward():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [
        f"{source} -> {target}"
        for source, targets in _import_graph().items()
        for target in sorted(targets)
        if rank[target.split(".")[1]] > rank[source.split(".")[1]]
    ]
    assert upward == []


def test_no_module_imports_itself_back_through_others():
    assert _cycles(_import_graph()) == []


def test_the_graph_checks_see_lazy_imports_and_cycles():
    graph = _import_graph()
    # A lazy import inside a function (the remote client is imported where a URL is given as a player).
    assert "bcarena.eval.service.client" in graph["bcarena.eval.matches"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
