import numpy as np
import pytest

from bcarena.envs.duel import DuelConfig, DuelEnv, DuelMatch, DuelVectorEnv
from bcarena.envs.duel.bots import BOTS


def _rollout(env, actions):
    obs, _ = env.reset(seed=123)
    trace = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append((obs, reward, terminated))
        if terminated:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def test_same_seed_and_actions_give_identical_matches():
    actions = np.random.default_rng(5).integers(0, 8, size=700)  # spans more than two matches
    a, b = _rollout(DuelEnv("pro"), actions), _rollout(DuelEnv("pro"), actions)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_equal(x, y)


def test_different_seeds_give_different_matches():
    env = DuelEnv("random")
    first = env.reset(seed=1)[0]
    second = env.reset(seed=2)[0]
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    "round_seconds, steps",
    [(8.0, 200), pytest.param(30.0, 650, marks=pytest.mark.slow)],  # 8 s rounds: 80 decisions, >= 2 autoresets
)
def test_vector_env_matches_single_envs_bit_for_bit_across_autoresets(round_seconds, steps):
    n, seed = 5, 40
    config = DuelConfig(round_seconds=round_seconds)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 8, size=(steps, n))
    vec = DuelVectorEnv(n, opponent="pro", config=config)
    vobs, _ = vec.reset(seed=seed)
    singles = [DuelEnv("pro", config=config) for _ in range(n)]
    sobs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    ended = 0
    for t in range(steps):
        np.testing.assert_array_equal(vobs, np.stack(sobs))
        vobs, vrew, vterm, _, infos = vec.step(actions[t])
        for i, env in enumerate(singles):
            obs, rew, term, _, info = env.step(int(actions[t, i]))
            assert rew == vrew[i] and term == vterm[i]
            if term:
                ended += 1
                np.testing.assert_array_equal(obs, infos["final_obs"][i])
                assert info["winner"] == infos["winner"][i]
                obs, _ = env.reset()
            sobs[i] = obs
    assert ended >= n  # every sub-env went through at least one autoreset


def test_a_match_does_not_depend_on_its_batch():
    seeds = [7, 8, 9, 10]
    rng = np.random.default_rng(1)
    batch = DuelMatch(len(seeds))
    alone = DuelMatch(1)
    batch.reset(seeds)
    alone.reset(seeds[2:3])
    while not batch.all_done:
        actions = rng.integers(0, 8, size=(len(seeds), 2))
        batch.step(actions)
        if not alone.all_done:
            alone.step(actions[2:3])
    for key, value in alone.core.get_state().items():
        np.testing.assert_array_equal(value[0], batch.core.get_state([2])[key][0], err_msg=key)


def test_every_bot_is_deterministic_per_match():
    for name in BOTS:
        traces = []
        for _ in range(2):
            env = DuelVectorEnv(3, opponent=name)
            env.reset(seed=3)
            traces.append([env.step(np.full(3, i % 8))[0] for i in range(40)])
        np.testing.assert_array_equal(np.stack(traces[0]), np.stack(traces[1]), err_msg=name)
