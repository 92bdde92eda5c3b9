"""``bcarena sweep``: trainer options tuned for win rate (Ray Tune + Optuna, ASHA early stopping)."""

from __future__ import annotations

from pathlib import Path

import typer

from bcarena.envs.limits import MAX_EPOCHS, MAX_MATCHES, MAX_PARALLEL, MAX_SEED, MAX_TRIALS
from bcarena.experiments.commands import command_app, styled_console
from bcarena.experiments.commands.options import path_to

app = command_app()


@app.command("sweep")
def sweep(
    experiment: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="experiment YAML file (its data and base variant)"
    ),
    variant: str | None = typer.Option(None, help="bc variant to tune (default: the first bc variant)"),
    trials: int = typer.Option(16, min=1, max=MAX_TRIALS, help="number of trials (trainer configs tried)"),
    opponent: str | None = typer.Option(None, help="win-rate opponent (default: the experiment's first)"),
    matches: int = typer.Option(100, min=1, max=MAX_MATCHES, help="matches per win-rate measurement"),
    epochs: int | None = typer.Option(
        None, min=1, max=MAX_EPOCHS, help="max epochs per trial (default: the variant's)"
    ),
    eval_every: int = typer.Option(1, min=1, max=MAX_EPOCHS, help="epochs between win-rate measurements"),
    grace: int = typer.Option(1, min=1, max=MAX_EPOCHS, help="ASHA: epochs before a trial may be stopped"),
    concurrency: int | None = typer.Option(
        None, min=1, max=MAX_PARALLEL, help="trials at a time (default: CPUs per trial fit)"
    ),
    cpus_per_trial: float = typer.Option(1.0, min=0.1, max=MAX_PARALLEL, help="CPUs each trial reserves"),
    space: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="search-space YAML (default: loss, weights, events)"
    ),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Optuna sampler seed"),
    out: Path | None = typer.Option(
        None, parser=path_to("folder"), help="sweep folder (default: <runs>/sweeps/<experiment name>)"
    ),
    runs: Path = typer.Option(
        Path("runs"), parser=path_to("folder"), help="runs root (the dataset comes from its cache)"
    ),
    address: str | None = typer.Option(
        None, help="Ray cluster to join (auto, ray://head:10001); default: a local Ray instance"
    ),
) -> None:
    """Tune a variant's trainer options for win rate (Ray Tune + Optuna, ASHA).

    Writes the best config as an experiment file that `bcarena run` accepts. The experiment, the
    options and the opponent are checked before anything is recorded or Ray is imported.
    """
    from bcarena.experiments.sweep import SearchSpace, SweepSettings, run_sweep

    settings = SweepSettings(
        trials=trials,
        opponent=opponent,
        matches=matches,
        epochs=epochs,
        eval_every=eval_every,
        grace=grace,
        concurrency=concurrency,
        cpus_per_trial=cpus_per_trial,
        seed=seed,
    )
    run_sweep(
        experiment,
        out,
        settings,
        SearchSpace.load(space) if space else None,
        variant,
        runs,
        address,
        console=styled_console,
    )
