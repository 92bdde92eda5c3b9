"""The full comparison (slow): the plain clone's failure on 100 pro episodes, and every fix.

Run with ``pytest -m slow tests/test_agents_slow.py -s`` to see the table of numbers.
"""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bcarena.agents.composite import train_composite
from bcarena.agents.config import make_train_config
from bcarena.agents.sb3 import DuelSB3VecEnv, SB3Agent, ppo_from_bc, random_ppo, win_rate
from bcarena.agents.train import train_bc
from bcarena.recordings.converter import make_duel_dataset

pytestmark = pytest.mark.slow
BASE = {"epochs": 30}
VARIANTS = {
    "weighted_ce": {"loss": "weighted_ce"},
    "focal (inverse-frequency alpha)": {"loss": "focal", "class_weights": "inverse"},
    "logit_adjusted": {"loss": "logit_adjusted"},
    "oversample": {"sampler": "oversample"},
    "event-weighted (skill_used)": {
        "event_weighting": {"events": ["skill_used"], "before": 2, "after": 0, "weight": 30}
    },
}


@pytest.fixture(scope="module")
def pro100(tmp_path_factory):
    """100 pro episodes against brawler/turtle/random/pro; 20 held-out test episodes."""
    return make_duel_dataset(
        tmp_path_factory.mktemp("pro100"), episodes=100, seed=0, split=(0.7, 0.1, 0.2), pixels=False
    )


def test_plain_clone_fails_and_every_fix_raises_skill_frame_recall(pro100):
    plain = train_bc(pro100, make_train_config(BASE), progress=False).test
    rows = {"ce (plain)": plain}
    for name, over in VARIANTS.items():
        rows[name] = train_bc(pro100, make_train_config({**BASE, **over}), progress=False).test
    skill_cfg = make_train_config({**BASE, "loss": "weighted_ce", "class_weights": "sqrt_inverse"})
    rows["composite"] = train_composite(pro100, make_train_config(BASE), skill_cfg, progress=False).test
    print(f"\n{'variant':34s} {'accuracy':>9s} {'skill recall':>13s} {'balanced acc':>13s}")
    for name, m in rows.items():
        print(f"{name:34s} {m.accuracy:9.2%} {m.skill_frame_recall:13.2%} {m.balanced_accuracy:13.2%}")
    assert plain.accuracy >= 0.95 and plain.skill_frame_recall <= 0.05
    for name, m in rows.items():
        if name != "ce (plain)":
            assert m.skill_frame_recall >= plain.skill_frame_recall + 0.15, name


def test_bc_initialized_ppo_starts_above_random_ppo_and_stays_ahead(pro100):
    bc = train_bc(pro100, make_train_config({**BASE, "loss": "weighted_ce"}), progress=False).agent
    seeds = np.arange(20_000, 20_200)
    results = {}
    for name, build in (
        ("bc-init", lambda env: ppo_from_bc(bc, env, seed=0, n_steps=128, batch_size=1024, verbose=0)),
        ("random-init", lambda env: random_ppo(env, seed=0, n_steps=128, batch_size=1024, verbose=0)),
    ):
        model = build(DuelSB3VecEnv(32, ["brawler"]))
        start = win_rate(SB3Agent.from_model(model), "brawler", seeds)["win"]
        model.learn(total_timesteps=32 * 128 * 5)
        results[name] = (start, win_rate(SB3Agent.from_model(model), "brawler", seeds)["win"])
    print(f"\nwin rate vs brawler (200 matches) at PPO step 0 -> after 20480 steps: {results}")
    assert results["bc-init"][0] >= results["random-init"][0] + 0.5
    # RL fine-tuning must not destroy what BC gave (random init may catch up against a weak bot).
    assert results["bc-init"][1] >= results["random-init"][1] and results["bc-init"][1] >= 0.9


def test_killed_training_process_resumes_to_the_same_weights(pro100, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps(
            {
                "epochs": 12,
                "loss": "focal",
                "class_weights": "effective_number",
                "sampler": "weighted",
                "lr_schedule": "cosine",
            }
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "bcarena.experiments.cli",
        "train",
        "--dataset",
        str(pro100.path),
        "--config",
        str(config),
        "--quiet",
    ]
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")])
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() or torch.load(checkpoint, weights_only=True)["epoch"] < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "agent").exists()
    subprocess.run([*cmd, "--out", str(tmp_path / "killed"), "--resume"], check=True, capture_output=True)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "full" / "agent" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "agent" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
