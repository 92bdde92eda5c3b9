import json

import numpy as np
import pytest
from PIL import Image

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import DuelConfig
from bcarena.envs.video import VideoError, read_video
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import match_seeds
from bcarena.eval.replays import record_replay, record_side_by_side
from bcarena.eval.tournament import play_pairing, run_tournament


@pytest.fixture(scope="module")
def tournament():
    return run_tournament(["pro", "brawler", "idle"], matches=30, seed=0)


def test_round_robin_win_rates_and_ratings(tournament, tmp_path):
    t = tournament
    assert t.players == ["pro", "brawler", "idle"] and len(t.pairings) == 3
    for p in t.pairings:
        assert p.matches == 60 and p.wins_a + p.draws + p.wins_b == 60
        assert t.win_rate[p.a][p.b] + t.win_rate[p.b][p.a] + p.draws / p.matches == pytest.approx(1.0)
    assert t.win_rate[0][1] > 0.9 and t.win_rate[1][2] == 1.0 and t.win_rate[0][0] is None
    assert [r.player for r in t.ratings] == ["pro", "brawler", "idle"]
    for r in t.ratings:
        assert 0 < r.sigma < 25 / 3 and r.ordinal == pytest.approx(r.mu - 3 * r.sigma)
    paths = t.write(tmp_path)
    data = json.loads(paths["report"].read_text())
    assert data["ratings"][0]["player"] == "pro" and data["pairings"][0]["win_rate_a_ci95"][1] <= 1
    for key in ("win_rate_png", "ratings_png"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"


def test_pairings_are_pure_and_shardable(tournament):
    seeds = match_seeds(0, 30)
    alone = play_pairing(0, 1, ["pro", "brawler", "idle"], seeds)
    assert alone == tournament.pairings[0]
    # Any map-like runner can schedule the pairings (workers get the specs); completion order is irrelevant.
    calls = []

    def reversed_runner(job, pairs):
        pairs = list(pairs)[::-1]
        calls.extend(pairs)
        return [job(p) for p in pairs]

    sharded = run_tournament(["pro", "brawler", "idle"], matches=30, seed=0, runner=reversed_runner)
    assert calls == [(1, 2), (0, 2), (0, 1)]
    assert sharded.to_dict() == tournament.to_dict()


def test_tournament_bad_input():
    with pytest.raises(EvalError, match="at least 2 players"):
        run_tournament(["pro"], matches=5)
    with pytest.raises(EvalError, match=r"listed more than once: \['pro'\]"):
        run_tournament(["pro", "idle", "pro"], matches=5)
    with pytest.raises(EvalError, match="unknown player 'ghost'"):
        run_tournament(["pro", "ghost"], matches=5)
    with pytest.raises(EvalError, match="matches must be >= 1"):
        run_tournament(["pro", "idle"], matches=0)


def test_replay_as_mp4_and_gif(tmp_path, short_round):
    mp4 = record_replay("pro", "brawler", 0, tmp_path / "m.mp4", config=short_round, hold_end_seconds=0.5)
    frames = read_video(tmp_path / "m.mp4")
    assert frames.shape == (mp4["decisions"] + 1 + 5, 360, 640, 3)
    gif = record_replay(
        BotAgent("pro", config=short_round),
        BotAgent("brawler", config=short_round),
        0,
        tmp_path / "m.gif",
        config=short_round,
        hold_end_seconds=0.5,
        caption="pro vs brawler",
    )
    assert {k: v for k, v in gif.items() if k != "path"} == {k: v for k, v in mp4.items() if k != "path"}
    with Image.open(tmp_path / "m.gif") as image:
        assert image.size == (320, 180)
        durations = []  # Pillow merges identical frames (the held end) into one longer frame
        for i in range(image.n_frames):
            image.seek(i)
            durations.append(image.info["duration"])
    assert sum(durations) == frames.shape[0] * 100  # 10 FPS: the GIF lasts as long as the video
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gif", "m.mp4"]  # no partial files left
    with pytest.raises(VideoError, match=r"unsupported replay format '.webm'.*'.gif'"):
        record_replay("pro", "brawler", 0, tmp_path / "m.webm")


def test_side_by_side_same_opponent_same_seed(tmp_path):
    # 12-second rounds, seed 12: the naive clone loses on time (120 decisions), the pro wins by KO sooner (96).
    result = record_side_by_side(
        "pro[skill_drop=1]",
        "pro",
        "brawler",
        12,
        tmp_path / "s.mp4",
        captions=("naive clone", "fixed clone"),
        config=DuelConfig(round_seconds=12.0),
        hold_end_seconds=0,
    )
    left, right = result["left"], result["right"]
    assert left["skill_actions"][0] == 0 and right["skill_actions"][0] > 0
    assert left["winner"] == 1 and right["winner"] == 0
    assert left["decisions"] != right["decisions"]  # the shorter match's panel is held to the longer one's end
    frames = read_video(tmp_path / "s.mp4")
    assert frames.shape[1:] == (360 + 36, 640 * 2 + 8, 3)
    assert frames.shape[0] == max(left["decisions"], right["decisions"]) + 1
    # The opponent's start is the same on both sides: the first frames' panels differ only in names/captions.
    first = frames[0].astype(int)
    arena = slice(36 + 100, 36 + 300)
    assert np.abs(first[arena, :640] - first[arena, 648:]).mean() < 2
