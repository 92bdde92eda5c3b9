"""Command-line commands of the eval layer, added to the `bcarena` app by `register`.

``bcarena eval offline | matches | replay | side-by-side | gap | boxing`` and ``bcarena tournament``.
Players are bot names (``pro``), perturbed bots (``pro[skill_drop=0.9]``) or agent folders.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.table import Table

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate agents: offline metrics, matches, replays, the gap report.")
# Player names hold brackets ('pro[skill_drop=0.9]'): no rich markup, or they would vanish.
console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)
PLAYER_HELP = "bot name (pro, brawler, ...), perturbed bot like 'pro[skill_drop=0.9]', or agent folder"


def _clean_errors(command: Callable) -> Callable:
    """Bad input ends the command with its one-line message (exit code 2), not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from bcarena.agents.base import AgentFileError
        from bcarena.envs.duel.bots import UnknownBotError
        from bcarena.envs.video import VideoError
        from bcarena.eval.errors import EvalError
        from bcarena.experiments.ray_map import RayUnavailable
        from bcarena.recordings.dataset import DatasetError

        try:
            return command(*args, **kwargs)
        except (EvalError, DatasetError, AgentFileError, UnknownBotError, VideoError, RayUnavailable) as exc:
            err_console.print(f"error: {exc}", style="red")
            raise typer.Exit(2) from None

    return wrapper


def _pct(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


@eval_app.command("offline")
@_clean_errors
def offline(agent: str = typer.Option(..., help=PLAYER_HELP),
            dataset: Path = typer.Option(..., help="action dataset folder"),
            split: str = typer.Option("test", help="train | val | test"),
            tolerance: int = typer.Option(2, min=0, help="event timing: +-frames within which a skill press counts"),
            out: Path = typer.Option(Path("runs/eval/offline"), help="folder for offline.json, confusion.json/.png")
            ) -> None:
    """Offline metrics of an agent on a dataset split: accuracy, balanced accuracy, macro-F1, per class,
    confusion matrix, action-distribution divergence and skill timing within +-k frames."""
    from bcarena.eval.matches import load_player
    from bcarena.eval.offline import evaluate_offline
    from bcarena.recordings.dataset import ActionDataset

    report = evaluate_offline(load_player(agent), ActionDataset.load(dataset), split, tolerance, progress=True)
    console.print(f"{report.agent} on {dataset} ({split}: {report.frames} frames, "
                  f"{report.episodes} episodes)")
    console.print(f"accuracy {report.accuracy:.1%}   balanced accuracy {report.balanced_accuracy:.1%}   "
                  f"macro-F1 {report.macro_f1:.3f}   JS divergence {report.js_divergence:.3f}")
    table = Table("action", "expert frames", "agent frames", "precision", "recall", "F1")
    for c in report.per_class:
        table.add_row(c.action, str(c.support), str(c.predicted), _num(c.precision), _num(c.recall), _num(c.f1))
    console.print(table)
    events = Table(f"skill timing (+-{tolerance} frames)", "expert presses", "agent presses", "precision",
                   "recall", "F1")
    for e in report.events:
        events.add_row(e.event, str(e.expert_presses), str(e.agent_presses), _num(e.precision), _num(e.recall),
                       _num(e.f1))
    console.print(events)
    for path in report.write(out).values():
        console.print(f"wrote {path}")


@eval_app.command("matches")
@_clean_errors
def matches(agent: str = typer.Option(..., help=PLAYER_HELP),
            opponent: list[str] = typer.Option(["brawler"], help="opponent(s), repeatable: " + PLAYER_HELP),
            num_matches: int = typer.Option(1000, "--matches", help="matches per opponent (per side)"),
            seed: int = typer.Option(0, help="first match seed: seeds are seed, seed+1, ... for every agent"),
            both_sides: bool = typer.Option(False, help="play each seed twice, once from each side"),
            batch_size: int = typer.Option(None, help="matches stepped together (default: all)"),
            out: Path = typer.Option(None, help="also write the reports as JSON here")) -> None:
    """Vectorized matches of an agent against opponents: win/draw/loss with Wilson 95% intervals, HP
    difference, damage, skill use, KO rate and match length, on a fixed seed list."""
    from bcarena.eval.files import write_json
    from bcarena.eval.matches import evaluate_matches

    reports = [evaluate_matches(agent, o, num_matches, seed, both_sides, batch_size=batch_size, progress=True)
               for o in opponent]
    table = Table("agent", "opponent", "W/D/L", "win rate [95% CI]", "HP diff", "dealt", "taken", "skill use",
                  "KO rate", "length (s)")
    for r in reports:
        lo, hi = r.win_rate_ci95
        table.add_row(r.agent, r.opponent, f"{r.wins}/{r.draws}/{r.losses}", f"{r.win_rate:.1%} [{lo:.1%}, {hi:.1%}]",
                      f"{r.hp_diff_mean:+.1f}", f"{r.damage_dealt_mean:.1f}", f"{r.damage_taken_mean:.1f}",
                      f"{r.skill_use_rate:.2%}", f"{r.ko_rate:.1%}", f"{r.length_mean_seconds:.1f}")
    console.print(table)
    if out:
        console.print(f"wrote {write_json(out, {'reports': [r.to_dict() for r in reports]})}")


@eval_app.command("replay")
@_clean_errors
def replay(player0: str = typer.Argument(..., help="player 0: " + PLAYER_HELP),
           player1: str = typer.Argument("brawler", help="player 1: " + PLAYER_HELP),
           seed: int = typer.Option(0, help="match seed"),
           caption: str = typer.Option(None, help="text under the match"),
           out: Path = typer.Option(Path("runs/eval/replay.mp4"), help=".mp4, .mkv (lossless) or .gif")) -> None:
    """Write one match as a video or GIF."""
    from bcarena.eval.replays import record_replay

    result = record_replay(player0, player1, seed, out, caption=caption)
    winner = "draw" if result["winner"] < 0 else result["players"][result["winner"]]
    console.print(f"{' vs '.join(result['players'])} (seed {seed}): winner {winner}, HP {result['hp']} -> {out}")


@eval_app.command("side-by-side")
@_clean_errors
def side_by_side(left: str = typer.Argument(..., help="left agent: " + PLAYER_HELP),
                 right: str = typer.Argument(..., help="right agent: " + PLAYER_HELP),
                 opponent: str = typer.Option("brawler", help="the opponent both face: " + PLAYER_HELP),
                 seed: int = typer.Option(0, help="match seed, the same for both"),
                 left_caption: str = typer.Option(None, help="caption of the left panel (default: its name)"),
                 right_caption: str = typer.Option(None, help="caption of the right panel"),
                 out: Path = typer.Option(Path("runs/eval/side_by_side.mp4"), help=".mp4, .mkv or .gif")) -> None:
    """Two agents against the same opponent on the same seed, side by side with captions."""
    from bcarena.eval.matches import load_player
    from bcarena.eval.replays import record_side_by_side

    agents = [load_player(left), load_player(right)]
    captions = (left_caption or agents[0].name, right_caption or agents[1].name)
    result = record_side_by_side(agents[0], agents[1], opponent, seed, out, captions)
    for side in ("left", "right"):
        r = result[side]
        outcome = "draw" if r["winner"] < 0 else ("won" if r["winner"] == 0 else "lost")
        console.print(f"{side}: {r['players'][0]} {outcome} (HP {r['hp']}, {r['skill_actions'][0]} skill presses)")
    console.print(f"wrote {out}")


@eval_app.command("gap")
@_clean_errors
def gap(agent: list[str] = typer.Option(..., help="agents to compare (>= 3), repeatable: " + PLAYER_HELP),
        dataset: Path = typer.Option(..., help="action dataset folder (the expert's recordings)"),
        opponent: list[str] = typer.Option(["brawler"], help="opponent(s) for the win rate, repeatable"),
        num_matches: int = typer.Option(200, "--matches", min=1, help="matches per agent and opponent"),
        seed: int = typer.Option(0, help="first match seed (the same seed list for every agent)"),
        split: str = typer.Option("test", help="dataset split for the offline metrics"),
        tolerance: int = typer.Option(2, min=0, help="event timing tolerance, +-frames"),
        out: Path = typer.Option(Path("runs/eval/gap"), help="folder for gap.json, gap.md and scatter plots")) -> None:
    """The offline-online gap: each offline metric's Spearman rank correlation with win rate across
    agents (bootstrap 95% interval), with accuracy and win rate side by side."""
    from bcarena.eval.gap import gap_report
    from bcarena.recordings.dataset import ActionDataset

    report = gap_report(agent, ActionDataset.load(dataset), opponent, num_matches, seed, split, tolerance,
                        progress=True)
    table = Table("agent", "win rate [95% CI]", "accuracy", "balanced acc.", "event-F1 (any skill)")
    for r in sorted(report.rows, key=lambda r: -r.win_rate):
        lo, hi = r.win_rate_ci95
        table.add_row(r.agent, f"{r.win_rate:.1%} [{lo:.1%}, {hi:.1%}]", _pct(r.offline["accuracy"]),
                      _pct(r.offline["balanced_accuracy"]), _num(r.offline["event_f1_any_skill"]))
    console.print(table)
    corr = Table("offline metric", "Spearman rho vs win rate", "bootstrap 95% CI")
    for name, c in list(report.correlations.items())[:7]:
        corr.add_row(name, "undefined" if c.rho is None else f"{c.rho:+.2f}",
                     f"[{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}]" if c.ci95 else (c.note or "undefined"))
    console.print(corr)
    for path in report.write(out).values():
        console.print(f"wrote {path}")


@eval_app.command("boxing")
@_clean_errors
def boxing(agent: str = typer.Option(..., help="agent folder of a Boxing agent, or 'expert' (the scripted RAM boxer)"),
           num_matches: int = typer.Option(20, "--matches", min=1, help="bouts against the built-in CPU"),
           seed: int = typer.Option(0, help="first bout seed: seeds are seed, seed+1, ..."),
           num_envs: int = typer.Option(8, min=1, help="bouts played together"),
           workers: int = typer.Option(2, min=1, help="processes stepping the emulators"),
           out: Path = typer.Option(None, help="also write the report as JSON here")) -> None:
    """ALE Boxing: bouts of an agent against the console's CPU, reported like Duel matches (points for HP)."""
    from bcarena.agents.base import load_agent
    from bcarena.envs.boxing import BoxingExpert
    from bcarena.eval.boxing import evaluate_boxing
    from bcarena.eval.files import write_json

    player = BoxingExpert(seed=seed) if agent == "expert" else load_agent(agent)
    r = evaluate_boxing(player, num_matches, seed, num_envs, workers, progress=True)
    lo, hi = r.win_rate_ci95
    console.print(f"{r.agent} vs Boxing CPU: {r.wins}/{r.draws}/{r.losses} (W/D/L), win rate {r.win_rate:.1%} "
                  f"[{lo:.1%}, {hi:.1%}], points {r.damage_dealt_mean:.1f} scored / {r.damage_taken_mean:.1f} "
                  f"conceded, punches {r.skill_use_rate:.1%} of decisions, KO rate {r.ko_rate:.1%}")
    if out:
        console.print(f"wrote {write_json(out, r.to_dict())}")


def tournament(players: list[str] = typer.Argument(..., help="2+ players: " + PLAYER_HELP),
               num_matches: int = typer.Option(200, "--matches", min=1, help="seeds per pairing"),
               seed: int = typer.Option(0, help="first match seed"),
               both_sides: bool = typer.Option(True, help="play every seed from both sides"),
               out: Path = typer.Option(Path("runs/eval/tournament"),
                                        help="folder for tournament.json, win_rate.png, ratings.png"),
               executor: str = typer.Option("local", help="local (this process) | ray (pairings sharded over Ray "
                                                          "workers; pip install -e .[ray])"),
               address: str = typer.Option(None, help="Ray cluster to join (auto, ray://head:10001); default: a "
                                                      "local Ray instance"),
               shard_size: int = typer.Option(None, min=1, help="pairings per Ray task (default: 4 shards per CPU)")
               ) -> None:
    """Round-robin tournament: win-rate matrix (heatmap) and OpenSkill ratings with their uncertainty."""
    from bcarena.experiments.ray_map import RayMap
    from bcarena.eval.tournament import run_tournament

    if executor not in ("local", "ray"):
        raise typer.BadParameter(f"--executor must be local or ray, got {executor!r}")
    runner = RayMap(address=address, shard_size=shard_size) if executor == "ray" else map
    result = run_tournament(players, num_matches, seed, both_sides, progress=True, runner=runner)
    table = Table("rank", "player", "mu", "sigma", "ordinal (mu - 3 sigma)")
    for r in result.ratings:
        table.add_row(str(r.rank), r.player, f"{r.mu:.2f}", f"{r.sigma:.2f}", f"{r.ordinal:.2f}")
    console.print(table)
    for path in result.write(out).values():
        console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add this layer's commands and sub-apps to the root `bcarena` app."""
    app.add_typer(eval_app, name="eval")
    app.command("tournament")(_clean_errors(tournament))
