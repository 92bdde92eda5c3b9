"""ALE Boxing: the RAM map, the expert, and the same record -> dataset pipeline as Duel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bcarena.envs import boxing
from bcarena.recordings import RecordOptions, build_dataset, record_episodes
from bcarena.recordings.episode import META_FILE, STATES_FILE, parse_meta


def _step_ram(env, action: str, times: int) -> np.ndarray:
    for _ in range(times):
        env.step(boxing.ACTION_INDEX[action])
    return boxing.ram_info(env.unwrapped.ale.getRAM())


def test_ram_addresses_move_as_documented() -> None:
    env = boxing.make_env()
    try:
        env.reset(seed=0)
        start = _step_ram(env, "NOOP", 2)
        right = _step_ram(env, "RIGHT", 3)
        assert right["player_x"][0] > start["player_x"][0]
        left = _step_ram(env, "LEFT", 3)
        assert left["player_x"][0] < right["player_x"][0]
        down = _step_ram(env, "DOWN", 3)
        assert down["player_y"][0] > left["player_y"][0]
        up = _step_ram(env, "UP", 3)
        assert up["player_y"][0] < down["player_y"][0]
        assert start["player_score"][0] == start["enemy_score"][0] == 0
        assert 100 < start["seconds_left"][0] <= 120  # the 2-minute clock is running down
        assert _step_ram(env, "NOOP", 30)["seconds_left"][0] < start["seconds_left"][0]
    finally:
        env.close()


def test_bcd_and_features() -> None:
    assert boxing.bcd(np.array([0x00, 0x09, 0x10, 0x59, 0x99])).tolist() == [0, 9, 10, 59, 99]
    ram = np.zeros((1, 128), dtype=np.uint8)
    ram[0, [32, 33, 34, 35, 18, 19, 16, 17]] = [40, 60, 45, 50, 0x12, 0x07, 0x1B, 0x30]
    features = dict(zip(boxing.STATE_FEATURES, boxing.ram_features(ram)[0]))
    assert features["dx"] == pytest.approx(20 / 80) and features["dy"] == pytest.approx(5 / 90)
    assert features["player_score"] == pytest.approx(0.12) and features["enemy_score"] == pytest.approx(0.07)
    assert features["time_left"] == pytest.approx(90 / 120)


def test_expert_punches_only_in_range() -> None:
    expert = boxing.BoxingExpert(seed=0)
    ram = np.zeros((3, 128), dtype=np.uint8)
    ram[:, 32] = 40
    ram[:, 34] = 40
    ram[:, 33] = [60, 90, 60]  # in range, far, in range
    ram[:, 35] = [50, 50, 40]  # off-centre, off-centre, level (the CPU's own punches miss; so do ours)
    names = [boxing.ACTION_NAMES[a] for a in expert.act(boxing.ram_features(ram))]
    assert "FIRE" in names[0] and "FIRE" not in names[1] and "FIRE" not in names[2]
    assert "RIGHT" in names[1]  # closes the distance
    # after a punch it waits before the next one
    assert "FIRE" not in boxing.ACTION_NAMES[expert.act(boxing.ram_features(ram))[0]]


def test_boxing_recording_and_dataset_round_trip(tmp_path: Path) -> None:
    folders = record_episodes(
        "expert",
        episodes=2,
        out_dir=tmp_path / "rec",
        seed=5,
        game="boxing",
        options=RecordOptions(max_frames=120, progress=False),
    )
    ds = build_dataset(tmp_path / "rec", tmp_path / "ds", split=(0.5, 0.5, 0.0), progress=False)
    m = ds.manifest
    assert m["game"] == "boxing" and m["num_frames"] == 240 and len(m["action_names"]) == 18
    assert m["frame_shape"] == [84, 84] and ds.states().shape == (240, len(boxing.STATE_FEATURES))
    assert 0 < m["skill_fraction"] < 0.15
    assert m["lost_presses"]["window-priority"]["lost"] == 0
    # replaying the dataset's actions in the (deterministic) emulator reproduces the recorded RAM and pixels
    meta = parse_meta((folders[0] / META_FILE).read_bytes())
    assert meta.result["truncated"] and meta.players[0].name == "boxing-expert"
    env = boxing.make_env()
    try:
        screen = boxing.reset_with_noops(env, meta.seeds["match"])
        rows = ds.table["episode"].to_numpy() == 0
        rams, views = [], []
        for action in ds.actions()[rows]:
            rams.append(env.unwrapped.ale.getRAM().copy())
            views.append(boxing.agent_view(screen))
            screen, *_ = env.step(int(action))
    finally:
        env.close()
    log = pd.read_parquet(folders[0] / STATES_FILE)  # the recorded player's state features, as the game's log
    assert np.array_equal(
        boxing.ram_features(np.stack(rams)), log[[f"s_{n}" for n in boxing.STATE_FEATURES]].to_numpy()
    )
    assert np.array_equal(np.stack(views), ds.pixels[np.flatnonzero(rows)])
    assert m["action_names"][:3] == ["NOOP", "FIRE", "UP"]  # Boxing's exact names, as agents and matches use them


def test_the_expert_plays_a_bout_the_same_in_any_batch() -> None:
    from bcarena.envs.games import MatchOptions, get_game
    from bcarena.envs.play import play

    game, seeds = get_game("boxing"), np.array([11, 12])
    scores = []
    for size in (2, 1):
        with game.match(size, options=MatchOptions()) as match:
            rows = []
            for start in range(0, 2, size):
                play(match, [game.player("expert")], seeds[start : start + size], max_steps=80)
                rows.append(match.score[:size].copy())
            scores.append(np.concatenate(rows))
    assert np.array_equal(scores[0], scores[1])


def _wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.slow
def test_expert_beats_the_cpu_in_most_of_50_matches() -> None:
    from bcarena.eval.boxing import evaluate_boxing

    report = evaluate_boxing(boxing.BoxingExpert(seed=1000), 50, seed=1000)
    wins = report.wins
    low, high = _wilson(wins, report.matches)
    punch_fraction = report.skill_use_rate
    print(
        f"boxing expert: {wins}/{report.matches} wins, 95% Wilson [{low:.3f}, {high:.3f}], "
        f"punch frames {punch_fraction:.4f}"
    )
    assert low > 0.5
    assert 0.01 <= punch_fraction <= 0.05


@pytest.mark.slow
def test_full_boxing_dataset_shows_rare_punches(tmp_path: Path) -> None:
    record_episodes(
        "expert", episodes=3, out_dir=tmp_path / "rec", seed=0, game="boxing", options=RecordOptions(progress=False)
    )
    ds = build_dataset(tmp_path / "rec", tmp_path / "ds", progress=False)
    assert ds.manifest["num_frames"] > 3 * 1000
    assert 0.01 <= ds.manifest["skill_fraction"] <= 0.05
    assert ds.manifest["lost_presses"]["sample"]["lost"] > 0
