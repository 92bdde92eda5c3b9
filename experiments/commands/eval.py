"""``bcarena eval offline | matches | replay | side-by-side | gap | boxing`` and ``bcarena tournament``.

Players are bot names (``pro``), perturbed bots (``pro[skill_drop=0.9]``), agent folders or the URL
of a ``bcarena serve`` server; :func:`bcarena.eval.matches.load_player` says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from bcarena.envs.limits import MAX_MATCH_BATCH, MAX_MATCHES, MAX_PARALLEL, MAX_SEED
from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import EXECUTOR, choice, path_to

app = command_app()
eval_app = command_app("Evaluate agents: offline metrics, matches, replays, the gap report.")
app.add_typer(eval_app, name="eval")
PLAYER_HELP = "bot name (pro, brawler, ...), perturbed bot like 'pro[skill_drop=0.9]', agent folder or server URL"
if TYPE_CHECKING:  # the names are known at run time only: to a type checker each choice is a str
    SPLIT = str
else:
    SPLIT = choice("bcarena.recordings.dataset:SPLITS")
REPLAY_SUFFIXES = "bcarena.eval.replays:REPLAY_SUFFIXES"


GAME_HELP = "the game (default: the agents' own; bot names play Duel)"


def _pct(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


@eval_app.command("offline")
def offline(
    agent: str = typer.Option(..., help=PLAYER_HELP),
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="action dataset folder"),
    split: SPLIT = typer.Option("test", help="dataset split"),
    tolerance: int = typer.Option(2, min=0, max=1000, help="event timing: +-frames within which a skill press counts"),
    out: Path = typer.Option(
        Path("runs/eval/offline"), parser=path_to("folder"), help="folder for offline.json, confusion.json/.png"
    ),
) -> None:
    """Offline metrics of an agent on a dataset split: accuracy, balanced accuracy, macro-F1, per class,
    confusion matrix, action-distribution divergence and skill timing within +-k frames."""
    from bcarena.eval.matches import load_player
    from bcarena.eval.offline import evaluate_offline
    from bcarena.recordings.dataset import ActionDataset

    player = load_player(agent)
    data = ActionDataset.load(dataset, pixels=player.obs_type == "pixels")  # a state agent never reads pixels.npy
    report = evaluate_offline(player, data, split, tolerance, progress=True)
    console.print(f"{report.agent} on {dataset} ({split}: {report.frames} frames, {report.episodes} episodes)")
    console.print(
        f"accuracy {report.accuracy:.1%}   balanced accuracy {report.balanced_accuracy:.1%}   "
        f"macro-F1 {report.macro_f1:.3f}   JS divergence {report.js_divergence:.3f}"
    )
    table = Table("action", "expert frames", "agent frames", "precision", "recall", "F1")
    for c in report.per_class:
        table.add_row(c.action, str(c.support), str(c.predicted), _num(c.precision), _num(c.recall), _num(c.f1))
    console.print(table)
    events = Table(
        f"skill timing (+-{tolerance} frames)", "expert presses", "agent presses", "precision", "recall", "F1"
    )
    for e in report.events:
        events.add_row(
            e.event, str(e.expert_presses), str(e.agent_presses), _num(e.precision), _num(e.recall), _num(e.f1)
        )
    console.print(events)
    for path in report.write(out).values():
        console.print(f"wrote {path}")


@eval_app.command("moments")
def moments(
    agent: str = typer.Argument(..., help="agent folder (or bot name) to examine"),
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="action dataset folder (the expert's)"),
    split: SPLIT = typer.Option("test", help="dataset split"),
    window: int = typer.Option(2, min=0, max=100, help="+-frames within which a late/early choice counts"),
    top: int = typer.Option(50, min=0, max=10_000, help="worst moments summarized and drawn as filmstrips"),
    event: list[str] = typer.Option([], help="only moments with this event (repeatable; default: every event)"),
    num_matches: int = typer.Option(
        0, "--matches", min=0, max=MAX_MATCHES, help="closed loop: matches per opponent (0: offline moments only)"
    ),
    opponent: list[str] = typer.Option(
        [], help="closed loop: opponent(s), repeatable (default: Duel brawler, another game its first): " + PLAYER_HELP
    ),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="closed loop: first match seed"),
    out: Path = typer.Option(
        Path("runs/eval/moments"), parser=path_to("folder"), help="folder for moments.parquet/.json, filmstrips/"
    ),
) -> None:
    """Key moments: the expert's skill presses, hits, KOs and action changes ranked by how badly the agent
    misses them (missed / late / early / right within +-window frames), with filmstrips; with --matches,
    also the closed-loop moments (Duel, Boxing, any game with an expert) where the agent's choice differed
    from the expert's, ranked by lost exchanges (the agent was hit within the next second)."""
    from bcarena.envs.games import get_game
    from bcarena.eval import moments as M
    from bcarena.eval.matches import load_player
    from bcarena.recordings.dataset import ActionDataset

    player = load_player(agent)
    if num_matches:  # a bad opponent fails before the offline moments, not after them
        M.closed_loop_players(player, opponent or None, get_game(player.game), None)
    data = ActionDataset.load(dataset)
    found = M.explore(player, data, split, window, event or None)
    summary = M.top_summary(found, top)
    table = Table("event (moments with it)", *M.LABELS, "total")
    for name, row in M.counts(found).items():
        table.add_row(name, *(str(row[label]) for label in M.LABELS), str(row["total"]))
    console.print(f"{player.name} on {dataset} ({split}): {len(found)} key moments, +-{window} frames")
    console.print(table)
    opportune = summary.get("skill_presses_in_opportune_states")
    console.print(
        f"top {summary['top']}: {summary['missed']} missed, skill presses {_pct(summary['skill_presses'])}"
        + ("" if opportune is None else f", skill presses in opportune states {_pct(opportune)}")
    )
    for path in M.write_moments(found, data, out, top).values():
        console.print(f"wrote {path}")
    if num_matches:
        loop = M.closed_loop(player, opponent or None, num_matches, seed, progress=True)
        types = Table("expert", "agent", "state", "moments", "lost", "lost rate")
        for r in loop.types.head(10).itertuples():
            types.add_row(r.expert_action, r.agent_action, r.bucket, str(r.moments), str(r.lost), _pct(r.lost_rate))
        console.print(
            f"closed loop: {len(loop.moments)} of {loop.decisions} decisions differ from the {loop.game} "
            f"{loop.expert}; hit within {loop.horizon} decisions after {_pct(loop.base_lost_rate)} of all decisions"
        )
        console.print(types)
        for path in loop.write(out).values():
            console.print(f"wrote {path}")


@eval_app.command("matches")
def matches(
    agent: str = typer.Option(..., help=PLAYER_HELP),
    opponent: list[str] = typer.Option(
        [], help="opponent(s), repeatable (default: Duel brawler, another game its first): " + PLAYER_HELP
    ),
    num_matches: int = typer.Option(1000, "--matches", min=1, max=MAX_MATCHES, help="matches per opponent (per side)"),
    seed: int = typer.Option(
        0, min=0, max=MAX_SEED, help="first match seed: seeds are seed, seed+1, ... for every agent"
    ),
    both_sides: bool = typer.Option(False, help="play each seed twice, once from each side"),
    batch_size: int | None = typer.Option(
        None, min=1, max=MAX_MATCH_BATCH, help="matches stepped together (default: all)"
    ),
    out: Path | None = typer.Option(None, parser=path_to("file"), help="also write the reports as JSON here"),
    game: str | None = typer.Option(None, help="the game (default: the agent's; bot names play Duel)"),
) -> None:
    """Vectorized matches of an agent against opponents: win/draw/loss with Wilson 95% intervals, HP
    difference, damage, skill use, KO rate and match length, on a fixed seed list. In games without HP
    (Boxing) the HP columns hold the score."""
    from bcarena.agents.threads import torch_threads
    from bcarena.envs.files import write_json
    from bcarena.envs.games import default_opponent, get_game
    from bcarena.eval.matches import evaluate_matches, game_of, game_player, load_player

    played = get_game(game or game_of(agent))  # an unknown game: one line listing the known ones
    opponent = opponent or [default_opponent(played)]
    for spec in (agent, *opponent):  # a bad spec fails before the first opponent's matches, not after them
        load_player(spec) if played.name == "duel" else game_player(spec, played)
    with torch_threads(1):  # as in `bcarena run`: more threads only spin on a busy machine (agents.threads)
        reports = [
            evaluate_matches(
                agent, o, num_matches, seed, both_sides, batch_size=batch_size, progress=True, game=played.name
            )
            for o in opponent
        ]
    table = Table(
        "agent",
        "opponent",
        "W/D/L",
        "win rate [95% CI]",
        "HP diff",
        "dealt",
        "taken",
        "skill use",
        "KO rate",
        "length (s)",
    )
    for r in reports:
        lo, hi = r.win_rate_ci95
        table.add_row(
            r.agent,
            r.opponent,
            f"{r.wins}/{r.draws}/{r.losses}",
            f"{r.win_rate:.1%} [{lo:.1%}, {hi:.1%}]",
            f"{r.hp_diff_mean:+.1f}",
            f"{r.damage_dealt_mean:.1f}",
            f"{r.damage_taken_mean:.1f}",
            f"{r.skill_use_rate:.2%}",
            f"{r.ko_rate:.1%}",
            f"{r.length_mean_seconds:.1f}",
        )
    console.print(table)
    if out:
        console.print(f"wrote {write_json(out, {'reports': [r.to_dict() for r in reports]})}")


@eval_app.command("replay")
def replay(
    player0: str = typer.Argument(..., help="player 0: " + PLAYER_HELP),
    player1: str | None = typer.Argument(
        None, help="player 1 (default: Duel brawler, another game its first opponent): " + PLAYER_HELP
    ),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="match seed"),
    caption: str | None = typer.Option(None, help="text under the match"),
    out: Path = typer.Option(
        Path("runs/eval/replay.mp4"),
        parser=path_to("file", REPLAY_SUFFIXES),
        help="video file: .mp4, .mkv (lossless) or .gif",
    ),
    game: str | None = typer.Option(None, help=GAME_HELP),
) -> None:
    """Write one match of any game as a video or GIF."""
    from bcarena.envs.games import default_opponent
    from bcarena.eval.matches import game_of_players
    from bcarena.eval.replays import record_replay

    played = game_of_players([player0, *([player1] if player1 else [])], game)
    result = record_replay(player0, player1 or default_opponent(played), seed, out, caption=caption, game=played)
    winner = "draw" if result["winner"] < 0 else result["players"][result["winner"]]
    console.print(
        f"{' vs '.join(result['players'])} ({played.name}, seed {seed}): winner {winner}, "
        f"score {result['score']} -> {out}"
    )


@eval_app.command("side-by-side")
def side_by_side(
    left: str = typer.Argument(..., help="left agent: " + PLAYER_HELP),
    right: str = typer.Argument(..., help="right agent: " + PLAYER_HELP),
    opponent: str | None = typer.Option(
        None, help="the opponent both face (default: Duel brawler, another game its first): " + PLAYER_HELP
    ),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="match seed, the same for both"),
    left_caption: str | None = typer.Option(None, help="caption of the left panel (default: its name)"),
    right_caption: str | None = typer.Option(None, help="caption of the right panel"),
    out: Path = typer.Option(
        Path("runs/eval/side_by_side.mp4"),
        parser=path_to("file", REPLAY_SUFFIXES),
        help="video file: .mp4, .mkv or .gif",
    ),
    game: str | None = typer.Option(None, help=GAME_HELP),
) -> None:
    """Two agents against the same opponent on the same seed, side by side with captions (any game: the
    agents')."""
    from bcarena.envs.games import default_opponent
    from bcarena.eval.matches import game_of_players
    from bcarena.eval.replays import record_side_by_side

    played = game_of_players([left, right], game)
    rival = opponent or default_opponent(played)
    result = record_side_by_side(left, right, rival, seed, out, (left_caption, right_caption), game=played)
    for side in ("left", "right"):
        r = result[side]
        outcome = "draw" if r["winner"] < 0 else ("won" if r["winner"] == 0 else "lost")
        console.print(
            f"{side}: {r['players'][0]} {outcome} (score {r['score']}, {r['skill_actions'][0]} skill presses)"
        )
    console.print(f"wrote {out}")


@eval_app.command("gap")
def gap(
    agent: list[str] = typer.Option(..., help="agents to compare (>= 3), repeatable: " + PLAYER_HELP),
    dataset: Path = typer.Option(
        ..., exists=True, file_okay=False, help="action dataset folder (the expert's recordings)"
    ),
    opponent: list[str] = typer.Option(
        [], help="opponent(s) for the win rate, repeatable (default: Duel brawler, another game its first)"
    ),
    num_matches: int = typer.Option(200, "--matches", min=1, max=MAX_MATCHES, help="matches per agent and opponent"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="first match seed (the same seed list for every agent)"),
    split: SPLIT = typer.Option("test", help="dataset split for the offline metrics"),
    tolerance: int = typer.Option(2, min=0, max=1000, help="event timing tolerance, +-frames"),
    out: Path = typer.Option(
        Path("runs/eval/gap"), parser=path_to("folder"), help="folder for gap.json, gap.md and scatter plots"
    ),
) -> None:
    """The offline-online gap: each offline metric's Spearman rank correlation with win rate across
    agents (bootstrap 95% interval), with accuracy and win rate side by side. The game is the dataset's."""
    from bcarena.envs.games import default_opponent, get_game
    from bcarena.eval.gap import gap_report
    from bcarena.recordings.dataset import ActionDataset

    data = ActionDataset.load(dataset)
    rivals = opponent or [default_opponent(get_game(str(data.manifest["game"])))]
    report = gap_report(agent, data, rivals, num_matches, seed, split, tolerance, progress=True)
    table = Table("agent", "win rate [95% CI]", "accuracy", "balanced acc.", "event-F1 (any skill)")
    for r in sorted(report.rows, key=lambda r: -r.win_rate):
        lo, hi = r.win_rate_ci95
        table.add_row(
            r.agent,
            f"{r.win_rate:.1%} [{lo:.1%}, {hi:.1%}]",
            _pct(r.offline["accuracy"]),
            _pct(r.offline["balanced_accuracy"]),
            _num(r.offline["event_f1_any_skill"]),
        )
    console.print(table)
    corr = Table("offline metric", "Spearman rho vs win rate", "bootstrap 95% CI")
    for name, c in list(report.correlations.items())[:7]:
        corr.add_row(
            name,
            "undefined" if c.rho is None else f"{c.rho:+.2f}",
            f"[{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}]" if c.ci95 else (c.note or "undefined"),
        )
    console.print(corr)
    for path in report.write(out).values():
        console.print(f"wrote {path}")


@eval_app.command("boxing")
def boxing(
    agent: str = typer.Option(..., help="agent folder of a Boxing agent, or 'expert' (the scripted RAM boxer)"),
    num_matches: int = typer.Option(20, "--matches", min=1, max=MAX_MATCHES, help="bouts against the built-in CPU"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="first bout seed: seeds are seed, seed+1, ..."),
    num_envs: int = typer.Option(8, min=1, max=MAX_PARALLEL, help="bouts played together"),
    workers: int = typer.Option(2, min=1, max=MAX_PARALLEL, help="processes stepping the emulators"),
    out: Path | None = typer.Option(None, parser=path_to("file"), help="also write the report as JSON here"),
) -> None:
    """ALE Boxing: bouts of an agent against the console's CPU, reported like Duel matches (points for HP)."""
    from bcarena.agents.base import load_agent
    from bcarena.agents.threads import torch_threads
    from bcarena.envs.boxing import BoxingExpert
    from bcarena.envs.files import write_json
    from bcarena.eval.boxing import evaluate_boxing

    player = BoxingExpert(seed=seed) if agent == "expert" else load_agent(agent)
    with torch_threads(1):  # a pixel agent took 12x the CPU with torch's default threads
        r = evaluate_boxing(player, num_matches, seed, num_envs, workers, progress=True)
    lo, hi = r.win_rate_ci95
    console.print(
        f"{r.agent} vs Boxing CPU: {r.wins}/{r.draws}/{r.losses} (W/D/L), win rate {r.win_rate:.1%} "
        f"[{lo:.1%}, {hi:.1%}], points {r.damage_dealt_mean:.1f} scored / {r.damage_taken_mean:.1f} "
        f"conceded, punches {r.skill_use_rate:.1%} of decisions, KO rate {r.ko_rate:.1%}"
    )
    if out:
        console.print(f"wrote {write_json(out, r.to_dict())}")


@app.command("tournament")
def tournament(
    players: list[str] = typer.Argument(..., help="2+ players of one game: " + PLAYER_HELP),
    num_matches: int = typer.Option(200, "--matches", min=1, max=MAX_MATCHES, help="seeds per pairing"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="first match seed"),
    both_sides: bool = typer.Option(True, help="play every seed from both sides"),
    out: Path = typer.Option(
        Path("runs/eval/tournament"),
        parser=path_to("folder"),
        help="folder for tournament.json, win_rate.png, ratings.png",
    ),
    executor: EXECUTOR = typer.Option(
        "local", help="local: this process; ray: pairings sharded over Ray workers (needs .[ray])"
    ),
    address: str | None = typer.Option(
        None, help="Ray cluster to join (auto, ray://head:10001); default: a local Ray instance"
    ),
    shard_size: int | None = typer.Option(None, min=1, help="pairings per Ray task (default: 4 shards per CPU)"),
    game: str | None = typer.Option(None, help=GAME_HELP),
) -> None:
    """Round-robin tournament: win-rate matrix and OpenSkill ratings.

    Players are one two-player game's: its built-in players by name and agents of that game. Writes the
    matrix as a heatmap and the ratings with their uncertainty.
    """
    from bcarena.eval.tournament import run_tournament
    from bcarena.experiments.ray_map import RayMap

    if executor == "local" and (address or shard_size):
        raise typer.BadParameter("--address and --shard-size need --executor ray")
    runner = RayMap(address=address, shard_size=shard_size) if executor == "ray" else map
    result = run_tournament(players, num_matches, seed, both_sides, progress=True, runner=runner, game=game)
    table = Table("rank", "player", "mu", "sigma", "ordinal (mu - 3 sigma)")
    for r in result.ratings:
        table.add_row(str(r.rank), r.player, f"{r.mu:.2f}", f"{r.sigma:.2f}", f"{r.ordinal:.2f}")
    console.print(table)
    for path in result.write(out).values():
        console.print(f"wrote {path}")
