import json

import numpy as np
import pytest
from fixtures.quickdraw_data import quickdraw_files, registered_quickdraw
from PIL import Image

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import DuelConfig
from bcarena.envs.video import VideoError, read_video
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import match_seeds
from bcarena.eval.replays import _Frame, record_replay, record_side_by_side
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
    assert frames.shape == (mp4["decisions"] + 1 + 5, 36 + 360, 640, 3)  # caption strip over Duel's screen
    assert mp4["game"] == "duel" and mp4["players"] == ["pro", "brawler"] and len(mp4["score"]) == 2
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
        assert image.size == (320, 198)
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
    assert frames.shape[1:] == (36 + 36 + 360, 640 * 2 + 8, 3)  # title, each panel's caption, Duel's screen
    assert frames.shape[0] == max(left["decisions"], right["decisions"]) + 1
    # The opponent's start is the same on both sides: the first frames' panels differ only in their captions.
    first = frames[0].astype(int)
    arena = slice(72 + 100, 72 + 300)
    assert np.abs(first[arena, :640] - first[arena, 648:]).mean() < 2


# ------------------------------------------------------------------------- any game: the quick-draw fixture
@pytest.fixture(scope="module")
def quickdraw(tmp_path_factory):
    with registered_quickdraw() as game:
        yield game, quickdraw_files(tmp_path_factory)


def test_a_quickdraw_tournament_of_built_in_players_and_agents(quickdraw):
    _, files = quickdraw
    specs = ["gunslinger", "slowpoke", str(files["naive"]), str(files["weighted"])]
    t = run_tournament(specs, matches=20, seed=0)  # the game comes from the agents' agent.json
    assert t.game == "quickdraw" and t.to_dict()["game"] == "quickdraw"
    assert t.players == ["gunslinger", "slowpoke", "naive", "weighted"] and len(t.pairings) == 6
    assert all(p.matches == 40 and p.wins_a + p.draws + p.wins_b == 40 for p in t.pairings)
    assert t.win_rate[0][1] > 0.5 and t.win_rate[1][0] == 0.0  # the slowpoke never beats the gunslinger
    assert [r.player for r in t.ratings].index("gunslinger") < [r.player for r in t.ratings].index("slowpoke")
    assert play_pairing(0, 1, specs, match_seeds(0, 20), game="quickdraw") == t.pairings[0]  # pure, shardable


def test_tournament_players_must_be_one_games(quickdraw, tmp_path):
    _, files = quickdraw
    duel_agent = BotAgent("pro").save(tmp_path / "duel_pro")
    with pytest.raises(EvalError, match=r"^players of two games: '.*duel_pro' plays 'duel', '.*' plays 'quickdraw'"):
        run_tournament([str(duel_agent), str(files["naive"])], matches=2)
    with pytest.raises(EvalError, match=r"'brawler' is a Duel bot; game 'quickdraw' has players \['slowpoke', 'gun"):
        run_tournament(["brawler", str(files["naive"])], matches=2)
    with pytest.raises(EvalError, match=r"trained on game 'quickdraw', not 'duel'"):
        run_tournament(["pro", str(files["naive"])], matches=2, game="duel")
    with pytest.raises(EvalError, match=r"game 'boxing' plays each agent against its built-in opponent \['cpu'\]"):
        run_tournament(["expert", "cpu"], matches=2, game="boxing")


def test_quickdraw_replays_show_the_gray_view_under_captions(quickdraw, tmp_path):
    _, files = quickdraw
    one = record_replay(files["naive"], "slowpoke", 3, tmp_path / "q.mp4", hold_end_seconds=0)
    assert one["game"] == "quickdraw" and one["players"] == ["naive", "slowpoke"] and one["winner"] in (-1, 0, 1)
    assert read_video(tmp_path / "q.mp4").shape == (one["decisions"] + 1, 36 + 336, 336, 3)  # 84x84 view, 4x
    both = record_side_by_side(
        files["naive"], files["weighted"], "slowpoke", 3, tmp_path / "s.mp4", (None, "fixed"), hold_end_seconds=0
    )
    assert both["game"] == "quickdraw" and both["captions"] == ["naive", "fixed"] and both["opponent"] == "slowpoke"
    frames = read_video(tmp_path / "s.mp4")
    assert frames.shape == (max(both["left"]["decisions"], both["right"]["decisions"]) + 1, 36 + 36 + 336, 680, 3)
    scripted = record_replay("gunslinger", "slowpoke", 3, tmp_path / "g.mp4", game="quickdraw", hold_end_seconds=0)
    assert scripted["winner"] == 0 and scripted["skill_actions"] == [1, 0]  # it shot first; the slowpoke never did
    with pytest.raises(EvalError, match="unknown player 'gunslinger'"):  # names alone declare no game: Duel
        record_replay("gunslinger", "slowpoke", 3, tmp_path / "x.mp4")


def test_tournament_and_replay_commands_take_any_game(quickdraw, tmp_path):
    from typer.testing import CliRunner

    from bcarena.experiments.cli import app

    _, files = quickdraw
    cli = CliRunner()
    done = cli.invoke(
        app,
        ["tournament", "gunslinger", "slowpoke", str(files["logit"]), "--matches", "5"]
        + ["--out", str(tmp_path / "t"), "--no-both-sides"],
    )
    assert done.exit_code == 0, done.output
    data = json.loads((tmp_path / "t" / "tournament.json").read_text())
    assert data["game"] == "quickdraw" and data["players"] == ["gunslinger", "slowpoke", "logit"]
    done = cli.invoke(app, ["eval", "replay", "gunslinger", "--game", "quickdraw", "--out", str(tmp_path / "r.gif")])
    assert done.exit_code == 0 and "gunslinger vs slowpoke (quickdraw, seed 0)" in done.output, done.output


@pytest.mark.slow  # one full Boxing bout (~1,200 decisions of 480x420 screens): a few minutes on 2 cores
def test_a_boxing_replay_films_the_console_screen(tmp_path):
    import cv2

    pytest.importorskip("ale_py")
    result = record_replay("expert", "cpu", 0, tmp_path / "b.mp4", game="boxing", hold_end_seconds=0)
    assert (
        result["game"] == "boxing" and result["players"] == ["boxing-expert", "cpu"] and result["skill_actions"][0] > 0
    )
    video = cv2.VideoCapture(str(tmp_path / "b.mp4"))
    ok, first = video.read()
    assert ok and first.shape == (36 + 420, 480, 3)  # caption strip over the console screen, 3x2 pixels each
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == result["decisions"] + 1


def test_replay_frames_are_kept_compressed_and_given_back_exactly():
    """A two-minute Boxing side-by-side held its frames raw: 3.4 GB; kept compressed, 0.4 GB, the same video."""
    screen = np.full((456, 480, 3), 40, np.uint8)  # flat colours and a few sprites, as game screens are
    screen[100:140, 200:240] = (200, 30, 30)
    screen[300:310, ::7] = 255
    frame = _Frame.of(screen)
    assert np.array_equal(frame.image(), screen) and frame.image().shape == (456, 480, 3)
    assert len(frame.data) < screen.nbytes / 20
