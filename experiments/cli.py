"""The ``bcarena`` command line. Each layer contributes its commands through ``register(app)``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bcarena.agents import cli as agents_cli
from bcarena.envs.duel import BOTS, DuelConfig
from bcarena.eval import cli as eval_cli
from bcarena.eval import service_cli
from bcarena.experiments import dashboard, sweep
from bcarena.experiments.results import write_json_atomic
from bcarena.recordings import cli as recordings_cli

SEED_STORY = Path(__file__).with_name("seed_story.yaml")
app = typer.Typer(name="bcarena", no_args_is_help=True, add_completion=False,
                  help="Imitation learning for game AI: record 10 FPS gameplay, clone it, judge clones by win rate.")
bots_app = typer.Typer(no_args_is_help=True, help="Scripted Duel bots: list them, measure them.")
bench_app = typer.Typer(no_args_is_help=True, help="Throughput benchmarks (JSON output).")
app.add_typer(bots_app, name="bots")
app.add_typer(bench_app, name="bench")
console = Console(width=None if Console().is_terminal else 200)  # tables stay readable in logs
for layer in (recordings_cli, agents_cli, eval_cli, service_cli, dashboard, sweep):
    layer.register(app)


@bots_app.command("list")
def bots_list() -> None:
    """List the registered bots."""
    table = Table("bot", "description")
    for name, cls in BOTS.items():
        table.add_row(name, cls.description)
    console.print(table)


@bots_app.command("report")
def bots_report(matches: int = typer.Option(400, min=1, help="matches per pairing"),
                seed: int = typer.Option(0, help="first match seed; matches use seed, seed+1, ..."),
                out: Path = typer.Option(None, help="also write the report as JSON here")) -> None:
    """Win rates (Wilson 95% intervals) of the bot ladder and the pro's skill-press statistics."""
    from bcarena.experiments.bot_report import bot_report

    report = bot_report(matches, seed)
    table = Table("player", "opponent", "win", "draw", "loss", "win rate [95% CI]", "skill frames", "length")
    for row in report["pairings"]:
        lo, hi = row["win_rate_ci95"]
        table.add_row(row["player"], row["opponent"], str(row["wins"]), str(row["draws"]), str(row["losses"]),
                      f"{row['win_rate']:.1%} [{lo:.1%}, {hi:.1%}]", f"{row['skill_press_fraction']:.2%}",
                      f"{row['mean_length_frames']:.0f}")
    console.print(table)
    for opponent, rate in report["pro_opportune_press_rate"].items():
        console.print(f"pro vs {opponent}: P(press | opportune state) = {rate:.3f}")
    if out:
        write_json_atomic(out, report)
        console.print(f"wrote {out}")


@app.command()
def match(player0: str = typer.Argument("pro", help=f"bot for player 0, one of {sorted(BOTS)}"),
          player1: str = typer.Argument("brawler", help="bot for player 1"),
          seed: int = typer.Option(0, help="match seed"),
          out: Path = typer.Option(Path("runs/match.mp4"), help="replay video (.mp4 or lossless .mkv)")) -> None:
    """Play one match between two bots and write its replay video."""
    from bcarena.agents.base import BotAgent
    from bcarena.eval.replays import record_replay

    result = record_replay(BotAgent(player0), BotAgent(player1), seed, out, DuelConfig())
    winner = "draw" if result["winner"] < 0 else (player0, player1)[result["winner"]]
    console.print(f"{player0} vs {player1} (seed {seed}): winner {winner}, HP {result['hp']}, "
                  f"{result['decisions']} frames -> {out}")


BENCHMARKS: dict[str, tuple[str, str]] = {  # command -> (module in experiments/benchmarks, summary)
    "env": ("env_throughput", "Vector env decisions/s at N = 1..4096 vs SyncVectorEnv; batched 84x84 rendering."),
    "dataset": ("dataset_build", "Dataset build throughput: frames/s and multiple of real time."),
    "train": ("train_throughput", "BC training samples/s (MLP, CNN; index batching vs DataLoader) and peak memory."),
    "matches": ("match_throughput", "Matches/s of MLP and CNN agents, batched vs one match at a time."),
    "serving": ("serving", "Latency per decision (torch vs ONNX Runtime), HTTP latency and throughput."),
    "ray": ("ray_scaling", "Local vs Ray executor (identical metrics, wall-time ratio); 1,000-agent tournament cost."),
}


def _register_benchmark(name: str, module: str, summary: str) -> None:
    # Forwarding keeps `bcarena --help` fast: a benchmark's heavy imports load only when it runs.
    @bench_app.command(name, help=f"{summary} JSON output; `bcarena bench {name} --help` lists its options.",
                       context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                         "help_option_names": []})
    def command(ctx: typer.Context) -> None:
        import importlib

        bench = typer.Typer(add_completion=False)
        bench.command()(importlib.import_module(f"bcarena.experiments.benchmarks.{module}").main)
        typer.main.get_command(bench).main(args=ctx.args, prog_name=f"bcarena bench {name}")


for _name, (_module, _summary) in BENCHMARKS.items():
    _register_benchmark(_name, _module, _summary)


@app.command("run")
def run_command(experiment: Path = typer.Argument(..., help="experiment YAML file"),
                runs: Path = typer.Option(Path("runs"), help="root folder of run folders (and the stage cache)"),
                progress: bool = typer.Option(True, help="show progress bars"),
                executor: str = typer.Option("local", help="local (this process) | ray (Ray tasks; needs .[ray])"),
                address: str = typer.Option(None, help="Ray cluster to join (auto, ray://head:10001); "
                                                       "default: start a local Ray instance"),
                gpus_per_task: float = typer.Option(0.0, min=0, help="GPUs each training task reserves on Ray")
                ) -> None:
    """Run an experiment end to end (record -> dataset -> train -> evaluate -> report), cached by stage."""
    from bcarena.experiments.ray_map import RayUnavailable
    from bcarena.experiments.config import ExperimentError
    from bcarena.experiments.runner import run_experiment

    if executor not in ("local", "ray"):
        raise typer.BadParameter(f"--executor must be local or ray, got {executor!r}")
    if executor == "local" and (address or gpus_per_task):
        raise typer.BadParameter("--address and --gpus-per-task need --executor ray")
    if address and not runs.is_absolute():  # every node reads and writes the stage cache under it
        raise typer.BadParameter(f"with --address, --runs must be an absolute path on storage every node mounts, "
                                 f"got {str(runs)!r}")
    chosen = None
    if executor == "ray":
        from bcarena.experiments.ray_executor import RayExecutor

        chosen = RayExecutor(address=address, num_gpus_per_task=gpus_per_task, progress=progress)
    try:
        run_experiment(experiment, runs, progress, console, chosen)
    except (ExperimentError, RayUnavailable) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


@app.command()
def demo(runs: Path = typer.Option(Path("runs"), help="root folder of run folders (and the stage cache)"),
         progress: bool = typer.Option(False, help="show per-stage progress bars")) -> None:
    """The main job: reproduce the seed story (~96% frame accuracy, 0% wins) and its fixes, with a side-by-side replay."""
    from bcarena.experiments.runner import run_experiment

    run_experiment(SEED_STORY, runs, progress, console)


if __name__ == "__main__":
    app()
