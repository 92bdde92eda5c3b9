"""Hyperparameter sweeps scored by win rate: ``bcarena sweep EXPERIMENT.yaml``.

Ray Tune runs the trials (each one trains a BC agent with one set of trainer options), Optuna's
TPE sampler proposes the options, and ASHA stops bad trials early. The objective is the win rate
against an opponent in simulated matches, never frame accuracy: that is the whole point of the
sandbox (a 99%-accurate clone can win 0%).

How one trial runs: train ``eval_every`` epochs (``train_bc(stop_after_epochs=...)``), play
``matches`` matches against the opponent, report ``win_rate`` at that epoch, resume training
from the checkpoint, and so on up to ``epochs``. ASHA compares trials at epochs ``grace``,
``2 * grace``, ... and stops those in the bottom half (reduction factor 2).

The sweep plays on match seeds disjoint from the experiment's evaluation seeds
(``evaluation.seed + SEED_OFFSET`` by default), so the final ``bcarena run`` of the written
experiment file is an honest check of the chosen config, not a replay of the seeds it was picked on.

Search space: a YAML mapping of dotted trainer keys (``TrainConfig`` fields, ``event_weighting.weight``)
to either a fixed value or one distribution ``{choice: [...]}``, ``{uniform: [lo, hi]}``,
``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (inclusive). :data:`DEFAULT_SPACE` searches the
loss, class-weight scheme and effective-number beta, and the event window and weight around skill use.
With ``loss: ce`` the class-weight scheme is dropped (plain CE takes no class weights).

Outputs in the sweep folder: ``trials.json`` (every trial: options, status, win rate per epoch),
``sweep.json`` (settings and the best trial), ``win_rate_by_epoch.png``, ``dataset_stats.json``
and ``best_experiment.yaml``: the source experiment with two variants, the base variant and
``<base>-tuned``, validated with ``runner.load`` before it is written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bcarena.agents.config import TrainConfig, make_train_config
from bcarena.envs.errors import BcarenaError
from bcarena.envs.figures import pyplot, save_figure
from bcarena.envs.files import atomic_file
from bcarena.envs.limits import MAX_EPOCHS, MAX_MATCHES, MAX_PARALLEL, MAX_SEED, MAX_TRIALS
from bcarena.envs.yaml_files import YamlError, load_yaml
from bcarena.experiments.config import Experiment, VariantSpec, check_player, game_setup

SEED_OFFSET = 1_000_000  # sweep match seeds start here above evaluation.seed
METRIC = "win_rate"
DEFAULT_SPACE: dict[str, Any] = {
    "loss": {"choice": ["ce", "weighted_ce", "focal", "logit_adjusted"]},
    "class_weights": {"choice": ["inverse", "sqrt_inverse", "effective_number"]},
    "effective_beta": {"choice": [0.9, 0.99, 0.999, 0.9999]},
    "event_weighting.events": ["skill_used"],
    "event_weighting.before": {"randint": [0, 8]},
    "event_weighting.after": {"randint": [0, 4]},
    "event_weighting.weight": {"loguniform": [1.0, 50.0]},
}


def _tune_distributions() -> dict[str, Callable[[list[Any]], Any]]:
    from ray import tune

    return {
        "choice": tune.choice,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(v[0], v[1] + 1),
    }  # tune.randint's upper bound is exclusive


DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")


class SweepError(BcarenaError, ValueError):
    """A sweep cannot start: bad space file, unknown variant, bad settings or opponent."""


# ----------------------------------------------------------------------------------- the space
@dataclass
class SearchSpace:
    """Distributions (searched) and fixed values (applied to every trial), by dotted trainer key."""

    searched: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, where: str = "search space") -> SearchSpace:
        if not isinstance(data, dict) or not data:
            raise SweepError(
                f"{where}: a search space is a non-empty mapping of trainer keys to values or "
                f"distributions {{{' | '.join(f'{d}: [...]' for d in DISTRIBUTIONS)}}}"
            )
        space = cls()
        for key, spec in data.items():
            if isinstance(spec, dict):
                if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                    raise SweepError(
                        f"{where}: {key}: a distribution is one of {list(DISTRIBUTIONS)} with a list, got {spec!r}"
                    )
                ((kind, values),) = spec.items()
                if not isinstance(values, list) or not values or (kind != "choice" and len(values) != 2):
                    raise SweepError(
                        f"{where}: {key}: {kind} takes "
                        f"{'a non-empty list' if kind == 'choice' else '[low, high]'}, got {values!r}"
                    )
                if kind == "choice" and any(isinstance(v, (list, dict)) for v in values):
                    raise SweepError(
                        f"{where}: {key}: choice values must be scalars (Optuna's categorical); "
                        "fix list-valued options as a plain value instead"
                    )
                space.searched[key] = {kind: values}
            else:
                space.fixed[key] = spec
        space.check(where)
        return space

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        try:
            data = load_yaml(path, "search-space")
        except YamlError as exc:
            raise SweepError(str(exc)) from None
        return cls.parse(data, str(path))

    def check(self, where: str = "search space") -> None:
        """Every key must be a trainer option and every value (choices, bounds, fixed) valid for it."""
        for key, spec in {**self.searched, **{k: {"fixed": [v]} for k, v in self.fixed.items()}}.items():
            adapter = _option_adapter(key, where)
            for value in next(iter(spec.values())):
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    raise SweepError(
                        f"{where}: {key}: {value!r} is not a valid value ({exc.errors()[0]['msg']})"
                    ) from None

    def to_tune(self) -> dict[str, Any]:
        dists = _tune_distributions()
        return {key: dists[kind](values) for key, spec in self.searched.items() for kind, values in spec.items()}

    def to_dict(self) -> dict[str, Any]:
        return {**self.searched, **self.fixed}


def _option_adapter(key: str, where: str) -> TypeAdapter:
    """A validator of one dotted ``TrainConfig`` option (its type and bounds)."""
    model: type[BaseModel] = TrainConfig
    *sections, name = key.split(".")
    for part in sections:
        section = model.model_fields.get(part)
        if section is None or not (isinstance(section.annotation, type) and issubclass(section.annotation, BaseModel)):
            raise SweepError(f"{where}: {key}: {part!r} is not a section of the trainer config")
        model = section.annotation
    option = model.model_fields.get(name)
    if option is None:
        raise SweepError(f"{where}: {key}: not a trainer option; options: {sorted(model.model_fields)}")
    annotation = Annotated[(option.annotation, *option.metadata)] if option.metadata else option.annotation
    return TypeAdapter(annotation)


def trial_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Dotted trainer overrides of one trial; plain CE takes no class weights, so the scheme is dropped."""
    overrides = dict(params)
    if overrides.get("loss") == "ce":
        overrides.pop("class_weights", None)
    return overrides


# ---------------------------------------------------------------------------------- a trial
@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs, as plain data (it is shipped to Ray workers)."""

    dataset_dir: str
    base_train: dict[str, Any]
    fixed: dict[str, Any]
    opponent: str
    matches: int
    match_seed: int
    epochs: int
    eval_every: int
    train_seed: int
    game: dict[str, Any]  # the experiment's ``game:`` mapping (experiments.config.game_setup resolves it)


def trial_config(setup: TrialSetup, params: dict[str, Any]) -> TrainConfig:
    overrides = trial_overrides({**setup.fixed, **params})
    return make_train_config(
        setup.base_train, {**overrides, "epochs": setup.epochs, "seed": setup.train_seed}, where="sweep trial"
    )


def run_trial(params: dict[str, Any], setup: TrialSetup, report: Callable[[dict[str, Any]], None]) -> None:
    """Train with ``params`` in chunks of ``eval_every`` epochs; after each, ``report`` the win rate."""
    from bcarena.agents.train import train_bc
    from bcarena.eval.matches import evaluate_matches
    from bcarena.recordings.dataset import ActionDataset

    cfg = trial_config(setup, params)
    game, game_config = game_setup(setup.game)  # as ``bcarena run`` resolves the experiment's game
    dataset = ActionDataset.load(setup.dataset_dir)
    with tempfile.TemporaryDirectory(prefix="bcarena-trial-") as out:
        epoch = 0
        while epoch < cfg.epochs:
            result = train_bc(
                dataset, cfg, out, resume=epoch > 0, progress=False, stop_after_epochs=setup.eval_every, name="trial"
            )
            epoch = len(result.history)
            match = evaluate_matches(
                result.agent, setup.opponent, setup.matches, setup.match_seed, config=game_config, game=game.name
            )
            report(
                {
                    METRIC: match.win_rate,
                    "epoch": epoch,
                    "hp_diff_mean": match.hp_diff_mean,
                    "skill_use_rate": match.skill_use_rate,
                    "val_accuracy": result.val.accuracy,
                    "val_balanced_accuracy": result.val.balanced_accuracy,
                    "finished": result.finished,
                }
            )
            if result.finished:  # the trainer's own early stopping (patience) ended it
                return


TrialFn = Callable[[dict[str, Any], TrialSetup, Callable[[dict[str, Any]], None]], None]


def _tune_trial(params: dict[str, Any], setup: TrialSetup, trial_fn: TrialFn) -> None:
    from ray import tune

    trial_fn(params, setup, tune.report)


# ----------------------------------------------------------------------------------- the sweep
@dataclass
class SweepSettings:
    trials: int = 16
    opponent: str | None = None  # default: the experiment's first evaluation opponent
    matches: int = 100
    epochs: int | None = None  # default: the base variant's epochs
    eval_every: int = 1
    grace: int = 1  # ASHA: epochs every trial gets before it can be stopped
    concurrency: int | None = None  # default: the cluster's CPUs / cpus_per_trial
    cpus_per_trial: float = 1
    seed: int = 0  # Optuna sampler seed
    match_seed: int | None = None  # default: evaluation.seed + SEED_OFFSET


@dataclass
class TrialRecord:
    trial: str
    params: dict[str, Any]
    status: str  # "completed" (all epochs) | "stopped early" (ASHA) | "error"
    epochs: int
    win_rate: float | None  # at its last reported epoch
    win_rate_by_epoch: dict[int, float]
    val_accuracy: float | None
    error: str | None = None


@dataclass
class SweepResult:
    folder: Path
    trials: list[TrialRecord]
    best: TrialRecord
    experiment_file: Path


def _pick_variant(exp: Experiment, name: str | None) -> VariantSpec:
    bc = [v for v in exp.variants if v.kind == "bc"]
    if name is None:
        if not bc:
            raise SweepError(f"experiment {exp.name} has no bc variant to sweep (composite variants are not swept)")
        return bc[0]
    for variant in exp.variants:
        if variant.name == name:
            if variant.kind != "bc":
                raise SweepError(f"variant {name} is {variant.kind}; the sweep tunes bc variants")
            return variant
    raise SweepError(f"experiment {exp.name} has no variant {name!r}; variants: {[v.name for v in exp.variants]}")


def _dataset_dir(exp: Experiment, source: Path, runs_root: Path, folder: Path, console: Console) -> Path:
    """Build (or reuse from the stage cache) the experiment's dataset, exactly as ``bcarena run`` does."""
    from bcarena.experiments.runner import ExperimentRunner

    runner = ExperimentRunner(exp, runs_root, source, progress=False, console=console)
    runner.run_dir = folder  # dataset_stats.json lands in the sweep folder
    _, dataset = runner.prepare_dataset()
    return Path(dataset.path).resolve()


def _records(grid, epochs: int) -> list[TrialRecord]:
    records = []
    for result in grid:
        params = trial_overrides(result.config or {})
        history = result.metrics_dataframe
        by_epoch = (
            {int(e): float(w) for e, w in zip(history["epoch"], history[METRIC])}
            if history is not None and METRIC in history
            else {}
        )
        last = result.metrics or {}
        if result.error is not None:
            status = "error"
        else:
            status = "completed" if last.get("finished") or last.get("epoch", 0) >= epochs else "stopped early"
        records.append(
            TrialRecord(
                trial=str(last.get("trial_id", Path(result.path or "?").name)),
                params=params,
                status=status,
                epochs=int(last.get("epoch", 0)),
                win_rate=last.get(METRIC),
                win_rate_by_epoch=by_epoch,
                val_accuracy=last.get("val_accuracy"),
                error=None if result.error is None else str(result.error).splitlines()[0],
            )
        )
    return records


def best_trial(records: list[TrialRecord]) -> TrialRecord:
    """The best trial that trained all its epochs (what ``bcarena run`` reproduces), by win rate, then
    validation accuracy; trials ASHA stopped were measured after fewer epochs and are not comparable."""
    pool = [r for r in records if r.status == "completed"] or [r for r in records if r.win_rate is not None]
    if not pool:
        raise SweepError("no trial reported a win rate; see trials.json for their errors")
    return max(pool, key=lambda r: (r.win_rate, r.val_accuracy or 0.0))


def minimal_train(config: TrainConfig) -> dict[str, Any]:
    """The trainer options that differ from the defaults (what a person would write in the YAML)."""
    defaults = TrainConfig().to_dict()
    return {k: v for k, v in config.to_dict().items() if v != defaults[k]}


def write_experiment(
    source: Path, exp: Experiment, base_name: str, best: TrainConfig, path: Path, description: str
) -> Path:
    """The source experiment with variants [base, <base>-tuned]; validated by ``runner.load``, written atomically."""
    from bcarena.experiments.runner import load

    data = load_yaml(source, "experiment")
    base = next(v for v in data["variants"] if v["name"] == base_name)
    tuned = {"name": f"{base_name}-tuned", "kind": "bc", "train": minimal_train(best), "description": description}
    data.update(name=f"{exp.name}-tuned", variants=[base, tuned])
    replay = data.get("evaluation", {}).get("replay", {})
    if replay.get("side_by_side"):
        replay["side_by_side"] = [base_name, tuned["name"]]
    with atomic_file(path) as tmp:
        tmp.write_text(f"# written by bcarena sweep from {source}\n" + yaml.safe_dump(data, sort_keys=False))
        load(tmp)  # an ExperimentError leaves no file behind
    return path


def _plot(records: list[TrialRecord], best: TrialRecord, opponent: str, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in records:
        if not r.win_rate_by_epoch:
            continue
        epochs, rates = zip(*sorted(r.win_rate_by_epoch.items()))
        is_best = r is best
        ax.plot(
            epochs,
            rates,
            marker="o",
            lw=2.5 if is_best else 1,
            alpha=1 if is_best else 0.5,
            color="tab:red" if is_best else ("tab:gray" if r.status == "stopped early" else "tab:blue"),
            label="best" if is_best else None,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"win rate vs {opponent}")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Sweep trials (gray: stopped early by ASHA)")
    ax.legend(loc="upper left")
    save_figure(fig, path, dpi=110)


def _check_sweep(source: Path, settings: SweepSettings, variant: str | None) -> tuple[Experiment, VariantSpec, int]:
    """The experiment (validated on load), the variant to tune and its epochs; a SweepError for bad settings.

    The settings are checked first (they need no file), then the experiment, then the opponent (one of the
    experiment's game's) and the epochs the experiment implies.
    """
    from bcarena.experiments.runner import load

    counts = {
        "trials": (settings.trials, MAX_TRIALS),
        "matches": (settings.matches, MAX_MATCHES),
        "epochs": (settings.epochs or 1, MAX_EPOCHS),
        "eval_every": (settings.eval_every, MAX_EPOCHS),
        "grace": (settings.grace, MAX_EPOCHS),
        "concurrency": (settings.concurrency or 1, MAX_PARALLEL),
    }
    bad = {name: value for name, (value, bound) in counts.items() if not 1 <= value <= bound}
    if bad:
        raise SweepError(f"sweep settings out of range (each must be >= 1 and within its bound): {bad}")
    if not 0 < settings.cpus_per_trial <= MAX_PARALLEL:
        raise SweepError(f"cpus_per_trial must be > 0 and <= {MAX_PARALLEL}, got {settings.cpus_per_trial}")
    for name, seed in (("seed", settings.seed), ("match_seed", settings.match_seed)):
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise SweepError(f"{name} must be within [0, {MAX_SEED}], got {seed}")
    exp = load(source)
    if settings.opponent is not None:
        try:
            check_player(settings.opponent, exp.game_name, "opponent")
        except ValueError as exc:
            raise SweepError(f"opponent: {exc}") from None
    base = _pick_variant(exp, variant)
    return exp, base, settings.epochs or make_train_config(base.train, where=f"variant {base.name}").epochs


def _require_tune() -> None:
    from bcarena.experiments.ray_map import RayUnavailable

    try:
        import optuna  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise RayUnavailable(f"the sweep needs Ray Tune and Optuna: pip install -e '.[ray]' ({exc})") from None


def run_sweep(
    experiment_path: str | Path,
    out: str | Path | None = None,
    settings: SweepSettings | None = None,
    space: SearchSpace | None = None,
    variant: str | None = None,
    runs_root: str | Path = "runs",
    address: str | None = None,
    num_cpus: int | None = None,
    console: Console | None = None,
    trial_fn: TrialFn = run_trial,
) -> SweepResult:
    """Search trainer options of one bc variant of an experiment for the best win rate (see module doc).

    Everything is checked before any work: the experiment, the variant, the settings and the
    opponent first, then that Ray Tune and Optuna are installed; only then is the dataset built
    (or reused) and Ray started. ``trial_fn(params, setup, report)`` runs one trial (default
    :func:`run_trial`: train and play matches); it must be picklable, as Ray ships it to the trial's worker.
    """
    settings, space = settings or SweepSettings(), space or SearchSpace.parse(DEFAULT_SPACE)
    console = console or Console()
    source = Path(experiment_path)
    exp, base, epochs = _check_sweep(source, settings, variant)
    _require_tune()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from bcarena.envs.files import write_json
    from bcarena.experiments.ray_map import cluster_cpus, init_ray

    folder = Path(out if out is not None else Path(runs_root) / "sweeps" / exp.name).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    setup = TrialSetup(
        dataset_dir=str(_dataset_dir(exp, source, Path(runs_root), folder, console)),
        base_train=base.train,
        fixed=space.fixed,
        matches=settings.matches,
        opponent=settings.opponent or exp.evaluation.opponents[0],
        match_seed=(exp.evaluation.seed + SEED_OFFSET if settings.match_seed is None else settings.match_seed),
        epochs=epochs,
        eval_every=settings.eval_every,
        train_seed=exp.seeds[0],
        game=exp.game,
    )

    init_ray(address, num_cpus)
    concurrency = settings.concurrency or max(1, int(cluster_cpus() // settings.cpus_per_trial))
    searcher = ConcurrencyLimiter(
        OptunaSearch(metric=METRIC, mode="max", seed=settings.seed), max_concurrent=concurrency
    )
    scheduler = ASHAScheduler(
        time_attr="epoch", max_t=epochs, grace_period=min(settings.grace, epochs), reduction_factor=2
    )
    console.rule(
        f"[bold]sweep[/] {base.name} of {exp.name}: {settings.trials} trials x {epochs} epochs, "
        f"win rate vs {escape(setup.opponent)} over {setup.matches} matches, {concurrency} at a time"
    )
    trainable = tune.with_resources(
        tune.with_parameters(_tune_trial, setup=setup, trial_fn=trial_fn), {"cpu": settings.cpus_per_trial}
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space.to_tune(),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler, num_samples=settings.trials
        ),
        run_config=tune.RunConfig(name="tune", storage_path=str(folder), verbose=0),
    )
    records = _records(tuner.fit(), epochs)
    best = best_trial(records)
    best_cfg = trial_config(setup, best.params)
    experiment_file = write_experiment(
        source,
        exp,
        base.name,
        best_cfg,
        folder / "best_experiment.yaml",
        f"bcarena sweep: best of {len(records)} trials, win rate {best.win_rate:.1%} vs {setup.opponent} "
        f"({setup.matches} matches from seed {setup.match_seed})",
    )
    write_json(folder / "trials.json", [asdict(r) for r in records], default=str)
    write_json(
        folder / "sweep.json",
        {
            "experiment": str(source),
            "variant": base.name,
            "settings": asdict(settings),
            "epochs": epochs,
            "space": space.to_dict(),
            "setup": asdict(setup),
            "objective": f"{METRIC} vs {setup.opponent}",
            "scheduler": {
                "name": "ASHA",
                "time_attr": "epoch",
                "max_t": epochs,
                "grace_period": min(settings.grace, epochs),
                "reduction_factor": 2,
            },
            "search": "Optuna TPE via ray.tune.search.optuna.OptunaSearch",
            "best": asdict(best),
            "best_train": minimal_train(best_cfg),
            "experiment_file": str(experiment_file),
        },
        default=str,
    )
    _plot(records, best, setup.opponent, folder / "win_rate_by_epoch.png")
    _print(records, best, setup.opponent, console)
    console.print(escape(f"best config -> {experiment_file}  (run it: bcarena run {experiment_file})"))
    return SweepResult(folder, records, best, experiment_file)


def _print(records: list[TrialRecord], best: TrialRecord, opponent: str, console: Console) -> None:
    table = Table(title=escape(f"sweep trials (objective: win rate vs {opponent})"))  # opponents hold brackets
    for column in ("trial", "status", "epochs", "win rate", "val acc.", "options"):
        table.add_column(column)
    for r in sorted(records, key=lambda r: -(r.win_rate if r.win_rate is not None else -1)):
        options = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
        status = r.status if not r.error else f"error: {r.error[:30]}"
        table.add_row(
            ("* " if r is best else "") + r.trial,
            escape(status),
            str(r.epochs),
            "—" if r.win_rate is None else f"{r.win_rate:.1%}",
            "—" if r.val_accuracy is None else f"{r.val_accuracy:.1%}",
            escape(options),
        )
    console.print(table)


__all__ = [
    "DEFAULT_SPACE",
    "SearchSpace",
    "SweepError",
    "SweepResult",
    "SweepSettings",
    "TrialRecord",
    "best_trial",
    "run_sweep",
    "run_trial",
    "write_experiment",
]
