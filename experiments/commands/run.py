"""``bcarena run``, ``demo``, ``match`` and ``bots list | report``: experiments end to end, and the bots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from bcarena.envs.limits import MAX_MATCHES, MAX_SEED
from bcarena.experiments.commands import command_app, console, styled_console
from bcarena.experiments.commands.options import EXECUTOR, choice, path_to

if TYPE_CHECKING:
    from bcarena.experiments.ray_executor import RayExecutor
    from bcarena.experiments.runner import LocalExecutor

app = command_app()
bots_app = command_app("Scripted Duel bots: list them, measure them.")
app.add_typer(bots_app, name="bots")
if TYPE_CHECKING:  # the names are known at run time only: to a type checker each choice is a str
    BOT = str
else:
    BOT = choice("bcarena.envs.duel.bots:BOTS")
SEED_STORY = Path(__file__).parents[1] / "seed_story.yaml"


def _exit_if_any_failed(run_dir: Path) -> None:
    """Exit 1 with one summary line when a variant's training or evaluation failed (the run folder says which)."""
    from bcarena.experiments.results import load_results
    from bcarena.experiments.runner import failure_summary

    summary = failure_summary(load_results(run_dir))
    if summary is not None:
        typer.secho(f"error: {summary}; see {run_dir}", err=True, fg="red")
        raise typer.Exit(1)


@app.command("run")
def run(
    experiment: Path = typer.Argument(..., exists=True, dir_okay=False, help="experiment YAML file"),
    runs: Path = typer.Option(
        Path("runs"), parser=path_to("folder"), help="root folder of run folders (and the stage cache)"
    ),
    progress: bool = typer.Option(True, help="show progress bars"),
    executor: EXECUTOR = typer.Option("local", help="local: this process; ray: Ray tasks (needs .[ray])"),
    address: str | None = typer.Option(
        None, help="Ray cluster to join (auto, ray://head:10001); default: start a local Ray instance"
    ),
    gpus_per_task: float = typer.Option(0.0, min=0, max=64, help="GPUs each training task reserves on Ray"),
    jobs: int = typer.Option(1, min=1, max=64, help="local executor: tasks run in this many worker processes"),
) -> None:
    """Run an experiment end to end (record -> dataset -> train -> evaluate -> report).

    Every stage is cached under RUNS, so a rerun only does what changed. The file is checked before
    any work (exit 2); the exit code is 1 when a variant's training or evaluation failed.
    """
    from bcarena.experiments.runner import LocalExecutor, run_experiment

    if executor == "local" and (address or gpus_per_task):
        raise typer.BadParameter("--address and --gpus-per-task need --executor ray")
    if address and not runs.is_absolute():  # every node reads and writes the stage cache under it
        raise typer.BadParameter(
            f"with --address, --runs must be an absolute path on storage every node mounts, got {str(runs)!r}"
        )
    if executor == "ray" and jobs != 1:
        raise typer.BadParameter("--jobs is for the local executor; Ray schedules its own workers")
    chosen: LocalExecutor | RayExecutor = LocalExecutor(jobs)
    if executor == "ray":
        from bcarena.experiments.ray_executor import RayExecutor

        chosen = RayExecutor(address=address, num_gpus_per_task=gpus_per_task, progress=progress)
    _exit_if_any_failed(run_experiment(experiment, runs, progress, styled_console, chosen))


@app.command("demo")
def demo(
    runs: Path = typer.Option(
        Path("runs"), parser=path_to("folder"), help="root folder of run folders (and the stage cache)"
    ),
    progress: bool = typer.Option(False, help="show per-stage progress bars (with --jobs 1)"),
    jobs: int = typer.Option(
        min(2, os.cpu_count() or 1), min=1, max=64, help="trainings and evaluations run in this many processes"
    ),
) -> None:
    """The main job: reproduce the seed story (~96% frame accuracy, 0% wins) and its fixes.

    Ends with a side-by-side replay of the naive clone and the fixed one. The table does not depend on
    --jobs.
    """
    from bcarena.experiments.runner import LocalExecutor, run_experiment

    _exit_if_any_failed(run_experiment(SEED_STORY, runs, progress, styled_console, LocalExecutor(jobs)))


@app.command("match")
def match(
    player0: BOT = typer.Argument("pro", help="bot for player 0"),
    player1: BOT = typer.Argument("brawler", help="bot for player 1"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="match seed"),
    out: Path = typer.Option(
        Path("runs/match.mp4"),
        parser=path_to("file", "bcarena.eval.replays:REPLAY_SUFFIXES"),
        help="replay video: .mp4, .mkv (lossless) or .gif",
    ),
) -> None:
    """Play one match between two bots and write its replay video."""
    from bcarena.agents.base import BotAgent
    from bcarena.envs.duel import DuelConfig
    from bcarena.eval.replays import record_replay

    result = record_replay(BotAgent(player0), BotAgent(player1), seed, out, DuelConfig())
    winner = "draw" if result["winner"] < 0 else (player0, player1)[result["winner"]]
    console.print(
        f"{player0} vs {player1} (seed {seed}): winner {winner}, HP {result['score']}, "
        f"{result['decisions']} frames -> {out}"
    )


@bots_app.command("list")
def bots_list() -> None:
    """List the registered bots."""
    from bcarena.envs.duel import BOTS

    table = Table("bot", "description")
    for name, cls in BOTS.items():
        table.add_row(name, cls.description)
    console.print(table)


@bots_app.command("report")
def bots_report(
    matches: int = typer.Option(400, min=1, max=MAX_MATCHES, help="matches per pairing"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="first match seed; matches use seed, seed+1, ..."),
    out: Path | None = typer.Option(None, parser=path_to("file"), help="also write the report as JSON here"),
) -> None:
    """Win rates (Wilson 95% intervals) of the bot ladder and the pro's skill-press statistics."""
    from bcarena.envs.files import write_json
    from bcarena.experiments.bot_report import bot_report

    report = bot_report(matches, seed)
    table = Table("player", "opponent", "win", "draw", "loss", "win rate [95% CI]", "skill frames", "length")
    for row in report["pairings"]:
        lo, hi = row["win_rate_ci95"]
        table.add_row(
            row["player"],
            row["opponent"],
            str(row["wins"]),
            str(row["draws"]),
            str(row["losses"]),
            f"{row['win_rate']:.1%} [{lo:.1%}, {hi:.1%}]",
            f"{row['skill_press_fraction']:.2%}",
            f"{row['mean_length_frames']:.0f}",
        )
    console.print(table)
    for opponent, rate in report["pro_opportune_press_rate"].items():
        console.print(f"pro vs {opponent}: P(press | opportune state) = {rate:.3f}")
    if out:
        console.print(f"wrote {write_json(out, report)}")
