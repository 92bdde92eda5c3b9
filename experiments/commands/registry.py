"""``bcarena register``: an agent folder as a new version of a registered model in the MLflow registry.

Serve a registered version with ``bcarena serve models:/NAME@champion`` (or ``models:/NAME/3``); move aliases
with ``bcarena ab CHAMPION CHALLENGER --promote``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bcarena.envs.limits import MAX_MATCHES
from bcarena.experiments.commands import command_app, console

app = command_app()
TRACKING_HELP = "MLflow tracking URI (default: sqlite:///mlruns/mlflow.db under the current folder)"


@app.command("register")
def register(
    agent: Path = typer.Argument(..., exists=True, file_okay=False, help="agent folder"),
    name: str = typer.Option(..., help="registered model name"),
    alias: str | None = typer.Option(None, help="point this alias (e.g. champion, challenger) at the new version"),
    tracking_uri: str | None = typer.Option(None, help=TRACKING_HELP),
    check: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="a `bcarena check` JSON report to log as the requirements check"
    ),
    opponent: list[str] = typer.Option([], help="measure and log the win rate against this player (repeatable)"),
    matches: int = typer.Option(200, min=1, max=MAX_MATCHES, help="matches per --opponent (each seed on both sides)"),
    run_id: str | None = typer.Option(None, help="the experiment run (MLflow run id or run folder) it came from"),
) -> None:
    """Register an agent as a new MLflow model version (metrics, win rates, lineage, alias)."""
    from bcarena.eval.matches import evaluate_matches
    from bcarena.eval.service.registry import register as register_model
    from bcarena.experiments.runner import _git_commit

    requirements = json.loads(check.read_text(encoding="utf-8")) if check is not None else None
    win_rates = {}
    for player in opponent:
        report = evaluate_matches(str(agent), player, matches, both_sides=True, progress=True)
        win_rates[player] = report.win_rate
        console.print(f"win rate vs {player}: {report.win_rate:.1%} over {report.matches} matches")
    lineage = {"git_commit": _git_commit(Path(__file__).resolve().parents[2])}
    if run_id is not None:
        lineage["experiment_run"] = run_id
    version = register_model(
        agent,
        name,
        win_rates=win_rates,
        requirements=requirements,
        lineage=lineage,
        tracking_uri=tracking_uri,
        alias=alias,
    )
    where = f" and alias {alias!r}" if alias else ""
    console.print(f"registered {agent} as models:/{name}/{version}{where}")
