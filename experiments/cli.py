"""The ``bcarena`` command line: the root of the one command tree in ``bcarena.experiments.commands``.

The root lists every command from :data:`COMMANDS` and imports a command's module only when that
command runs or shows its help, so ``bcarena --help`` imports no library code. It is also the one
error handler: a user's mistake (a :class:`bcarena.envs.errors.BcarenaError` from any layer, or a
usage error from the flag parser) is printed as one line on stderr with exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer's own click; no public name yet
from typer.core import TyperGroup

# Command -> (module in bcarena.experiments.commands, the summary `bcarena --help` shows). A test checks
# each summary against the first line of the command's own help, so the two cannot drift apart.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("run", "The main job: reproduce the seed story (~96% frame accuracy, 0% wins) and its fixes."),
    "record": ("record", "Record episodes of a bot (Duel), a game's built-in expert (ALE Boxing: expert) or an agent."),
    "play": ("record", "Play Duel against a bot or a trained agent in a window at 10 FPS; the match is recorded."),
    "dataset": ("dataset", "Action datasets: build them from recordings, inspect, export."),
    "train": ("train", "Train a behavior-cloning agent on an action dataset (flags override --config)."),
    "train-composite": ("train", "Train a composite agent: a movement model plus a skill-timing model."),
    "agent": ("train", "Inspect agent folders."),
    "expert": ("train", "Stable-Baselines3 PPO experts on Duel, and BC -> PPO fine-tuning."),
    "eval": ("eval", "Evaluate agents: offline metrics, matches, replays, the gap report."),
    "tournament": ("eval", "Round-robin tournament: win-rate matrix and OpenSkill ratings."),
    "match": ("run", "Play one match between two bots and write its replay video."),
    "bots": ("run", "Scripted Duel bots: list them, measure them."),
    "run": ("run", "Run an experiment end to end (record -> dataset -> train -> evaluate -> report)."),
    "sweep": ("sweep", "Tune a variant's trainer options for win rate (Ray Tune + Optuna, ASHA)."),
    "check": ("service", "Measure an agent against a requirements file and print pass/fail per requirement."),
    "export": ("service", "Export an agent to ONNX or TorchScript, checked for action parity."),
    "serve": (
        "service",
        "Serve an agent over HTTP (FastAPI + uvicorn): POST /act, GET /health[/live|/ready], /metadata, /metrics.",
    ),
    "loadtest": ("service", "Load-test an agent server on loopback: latency percentiles and throughput."),
    "register": ("registry", "Register an agent as a new MLflow model version (metrics, win rates, lineage, alias)."),
    "ab": ("ab", "A/B test a challenger against the champion: paired matches stopped by an SPRT in Elo."),
    "dashboard": ("dashboard", "Compare agents in the browser: leaderboard, accuracy vs win rate, replays, A/B."),
    "bench": ("bench", "Throughput benchmarks (JSON output)."),
}


@functools.cache
def command_group(module: str) -> TyperGroup:
    """The commands of one module of ``bcarena.experiments.commands``, imported on first use."""
    commands = importlib.import_module(f"bcarena.experiments.commands.{module}")
    return typer.main.get_group(commands.app)


def one_line(message: str) -> str:
    """A multi-line message as one line: ``"problems:\\n  a\\n  b"`` -> ``"problems: a; b"``."""
    parts = [line.strip() for line in message.splitlines() if line.strip()]
    text = parts[0] if parts else ""
    for part in parts[1:]:
        text += (" " if text.endswith(":") else "; ") + part
    return text


def fail(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr (plain text: never markup or emoji) and exit with code 2."""
    typer.secho(f"error: {one_line(message)}", err=True, fg="red")
    raise typer.Exit(2)


def _warning_in_one_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    return f"warning: {one_line(str(message))}\n"  # not where in the library it was raised: users act on the text


@contextlib.contextmanager
def warnings_in_one_line() -> Iterator[None]:
    """Warnings printed while a command runs read ``warning: <message>``; recording them (pytest) still works."""
    original = warnings.formatwarning
    warnings.formatwarning = _warning_in_one_line
    try:
        yield
    finally:
        warnings.formatwarning = original


def _usage_message(exc: UsageError) -> str:
    # Typer validates flags with pydantic, whose ValueError wording leaks into the message.
    message = exc.format_message().replace("Value error, ", "")
    return f"{exc.ctx.command_path}: {message} (try '{exc.ctx.command_path} --help')" if exc.ctx else message


@contextlib.contextmanager
def user_mistakes_in_one_line() -> Iterator[None]:
    """The one CLI error handler: a usage error or a BcarenaError -> :func:`fail`; anything else propagates."""
    try:
        yield
    except NoArgsIsHelpError:
        raise  # typer prints the help
    except UsageError as exc:
        fail(_usage_message(exc))
    except Exception as exc:
        # Every error a user can cause subclasses BcarenaError. Looked up, not imported: if one was raised its
        # module is loaded, and `bcarena --help` (typer.Exit, also an Exception) imports no library code.
        errors = sys.modules.get("bcarena.envs.errors")
        if errors is None or not isinstance(exc, errors.BcarenaError):
            raise  # a bug keeps its traceback; typer.Exit and typer.Abort keep their exit codes
        fail(str(exc))


class CommandTree(TyperGroup):
    """The root group: commands loaded lazily from :data:`COMMANDS`; user mistakes become one line, exit 2."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        return command_group(COMMANDS[cmd_name][0]).get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):  # from the table: listing the commands imports none of them
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            close = difflib.get_close_matches(args[0], list(COMMANDS))
            ctx.fail(
                f"No such command {args[0]!r}."
                + (f" Did you mean {', '.join(map(repr, close))}?" if close else f" Commands: {', '.join(COMMANDS)}.")
            )
        return super().resolve_command(ctx, args)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        with user_mistakes_in_one_line():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        with user_mistakes_in_one_line(), warnings_in_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    cls=CommandTree,
    name="bcarena",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)


@app.callback()
def bcarena() -> None:
    """Imitation learning for game AI: record 10 FPS gameplay, clone it, judge clones by win rate."""


if __name__ == "__main__":
    app(prog_name="bcarena")  # `python -m bcarena.experiments.cli` says `bcarena` in usage and errors
