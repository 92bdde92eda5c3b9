import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import bcarena.envs  # noqa: F401  (registers the ids)
from bcarena.envs import DUEL_ID
from bcarena.envs.duel import STATE_DIM, DuelEnv, DuelVectorEnv


@pytest.mark.parametrize("obs_type", ["state", "pixels"])
def test_gymnasium_and_sb3_checkers_pass(obs_type):
    gym_check_env(DuelEnv(obs_type=obs_type), skip_render_check=True)
    sb3_check_env(DuelEnv(obs_type=obs_type), warn=True)


def test_registered_ids_make_the_env_and_the_native_vector_env():
    env = gym.make(DUEL_ID, opponent="brawler")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (STATE_DIM,) and obs.dtype == np.float32
    vec = gym.make_vec(DUEL_ID, num_envs=16, vectorization_mode="vector_entry_point", opponent="brawler")
    assert isinstance(vec.unwrapped, DuelVectorEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (16, STATE_DIM)


def test_pixel_observations_show_the_match():
    env = DuelEnv(obs_type="pixels")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 1) and obs.dtype == np.uint8
    assert obs.max() == 255 and (obs > 0).mean() > 0.02  # the fighters and HUD are drawn


def test_rgb_render_for_people():
    env = DuelEnv(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8


def test_human_render_without_display_fails_clearly():
    with pytest.raises(RuntimeError, match=r"no display"):
        DuelEnv(render_mode="human")


@pytest.mark.parametrize("obs_type, policy, steps", [("state", "MlpPolicy", 2048), ("pixels", "CnnPolicy", 256)])
def test_sb3_ppo_trains_on_the_env(obs_type, policy, steps):
    model = PPO(
        policy,
        DuelEnv(opponent="brawler", obs_type=obs_type),
        n_steps=min(steps, 512),
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
    )
    model.learn(total_timesteps=steps)
    assert model.num_timesteps >= steps
    action, _ = model.predict(DuelEnv(obs_type=obs_type).reset(seed=1)[0], deterministic=True)
    assert 0 <= int(action) < 8
