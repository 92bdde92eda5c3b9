"""The PettingZoo ParallelEnv view of Duel: PettingZoo's own API and seed tests, and what it reports."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

from bcarena.envs.duel import Action, DuelError, DuelMatch  # noqa: E402
from bcarena.envs.duel.parallel import AGENTS, DuelParallelEnv, MultiagentExtraMissing  # noqa: E402
from bcarena.envs.errors import BcarenaError  # noqa: E402


def _brawl(env: DuelParallelEnv) -> dict[str, int]:
    """player_0 walks up and jabs; player_1 stands still (a KO well inside the time limit)."""
    x0, x1 = env.core.x[0]
    if abs(x1 - x0) > 1.0:
        return {"player_0": int(Action.RIGHT if x1 > x0 else Action.LEFT), "player_1": int(Action.IDLE)}
    return {"player_0": int(Action.LIGHT), "player_1": int(Action.IDLE)}


def _play(env: DuelParallelEnv, policy, seed: int):
    env.reset(seed=seed)
    steps = []
    while env.agents:
        steps.append(env.step(policy(env)))
    return steps


@pytest.mark.parametrize("obs_type", ["state", "pixels"])
def test_passes_pettingzoo_parallel_api_test(obs_type):
    env = DuelParallelEnv(obs_type=obs_type, config={"round_seconds": 10.0}, render_mode="rgb_array")
    parallel_api_test(env, num_cycles=1000)  # two full matches of random actions
    obs, _ = env.reset(seed=3)
    assert env.observation_space("player_0").contains(obs["player_0"])
    assert obs["player_0"].shape == ((37,) if obs_type == "state" else (84, 84, 1))
    assert env.render().shape == (360, 640, 3)
    assert env.state().shape == env.state_space.shape == (37,)


def test_converts_to_an_aec_env_that_passes_pettingzoo_api_test():
    from pettingzoo.test import api_test
    from pettingzoo.utils.conversions import parallel_to_aec

    api_test(parallel_to_aec(DuelParallelEnv(config={"round_seconds": 5.0})), num_cycles=200)


def test_passes_pettingzoo_seed_test():
    parallel_seed_test(lambda: DuelParallelEnv(config={"round_seconds": 10.0}), num_cycles=500)


def test_same_match_as_duel_match_bit_for_bit():
    env = DuelParallelEnv(obs_type="pixels")
    obs, infos = env.reset(seed=11)
    match = DuelMatch(1, obs_type="pixels")
    expected = match.reset([infos["player_0"]["match_seed"]])
    actions = np.random.default_rng(0).integers(0, 8, size=(40, 2))
    for a0, a1 in actions:
        for p, agent in enumerate(AGENTS):
            np.testing.assert_array_equal(obs[agent], expected[0, p])
        obs, *_ = env.step({"player_0": a0, "player_1": a1})
        expected, _ = match.step(np.array([[a0, a1]]))


def test_knockout_terminates_and_rewards_are_zero_sum():
    env = DuelParallelEnv()
    steps = _play(env, _brawl, seed=5)
    _, rewards, terminations, truncations, infos = steps[-1]
    assert terminations == {"player_0": True, "player_1": True}
    assert truncations == {"player_0": False, "player_1": False}
    assert infos["player_0"] | {"damage_dealt": 0, "damage_taken": 0} == {
        "damage_dealt": 0,
        "damage_taken": 0,
        "winner": "player_0",
        "ko": True,
    }
    total = {agent: sum(step[1][agent] for step in steps) for agent in AGENTS}
    dealt = sum(step[4]["player_0"]["damage_dealt"] for step in steps)
    assert dealt >= env.config.max_hp and env.core.hp[0, 0] == env.config.max_hp  # a KO, no damage taken
    assert total["player_0"] == pytest.approx(dealt / env.config.max_hp + 1.0)  # HP swing plus the win bonus
    assert total["player_1"] == pytest.approx(-total["player_0"])
    assert len(steps) < env.config.round_ticks // env.config.action_repeat
    assert env.agents == []


def test_time_out_truncates_with_a_draw():
    env = DuelParallelEnv(config={"round_seconds": 3.0})
    steps = _play(env, lambda _: {"player_0": 0, "player_1": 0}, seed=1)
    _, rewards, terminations, truncations, infos = steps[-1]
    assert len(steps) == 30  # 3 s at 10 decisions/s
    assert truncations == {"player_0": True, "player_1": True} and not any(terminations.values())
    assert rewards == {"player_0": 0.0, "player_1": 0.0}
    assert infos["player_1"]["winner"] is None and infos["player_1"]["ko"] is False


def test_episodes_after_a_seed_follow_the_duel_env_convention():
    env = DuelParallelEnv()
    seeds = [env.reset(seed=7)[1]["player_0"]["match_seed"]] + [env.reset()[1]["player_0"]["match_seed"]]
    again = DuelParallelEnv()
    assert seeds == [again.reset(seed=7)[1]["player_0"]["match_seed"], again.reset()[1]["player_0"]["match_seed"]]
    assert seeds[0] != seeds[1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda env: env.step({"player_0": 0}), r"needs a dict with an action for each of \['player_0', 'player_1'\]"),
        (lambda env: env.step({"player_0": 0, "player_1": 9}), r"action of player_1 must be an integer in \[0, 8\)"),
        (lambda env: env.observation_space("player_2"), r"unknown agent 'player_2'; Duel's agents are"),
        (lambda env: env.reset(seed=-1), "seed must be a non-negative integer, got -1"),
    ],
)
def test_bad_use_is_a_one_line_duel_error(call, message):
    env = DuelParallelEnv()
    env.reset(seed=0)
    with pytest.raises(DuelError, match=message):
        call(env)


def test_bad_settings_and_a_finished_match_are_refused():
    with pytest.raises(DuelError, match="obs_type must be one of"):
        DuelParallelEnv(obs_type="rgb")
    with pytest.raises(DuelError, match="render_mode must be one of"):
        DuelParallelEnv(render_mode="ansi")
    env = DuelParallelEnv(config={"round_seconds": 0.5})
    _play(env, lambda _: {"player_0": 0, "player_1": 0}, seed=0)
    with pytest.raises(DuelError, match=r"the match is finished: call reset\(\)"):
        env.step({"player_0": 0, "player_1": 0})


def test_without_pettingzoo_duel_imports_and_the_view_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pettingzoo", None)  # what an install without the extra looks like
    monkeypatch.delitem(sys.modules, "bcarena.envs.duel.parallel")
    importlib.reload(importlib.import_module("bcarena.envs.duel"))  # the package itself needs no pettingzoo
    with pytest.raises(ImportError, match=r"pip install 'bcarena\[multiagent\]'") as caught:
        importlib.import_module("bcarena.envs.duel").DuelParallelEnv  # noqa: B018
    # The module ran afresh, so its error class is a new object: compare what it is, not its identity.
    assert caught.type.__name__ == MultiagentExtraMissing.__name__ and isinstance(caught.value, BcarenaError)
