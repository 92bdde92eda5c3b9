"""Run an experiment end to end: record -> dataset -> train variants x seeds -> evaluate -> report.

Every stage's output is cached by a content hash of what made it (``experiments.cache``): a re-run
skips finished stages, a run killed mid-way resumes where it stopped, and changing one variant
retrains only that variant. A variant that fails is recorded in the results and the others still
finish (:func:`failure_summary` says which; the command line then exits 1). Each run writes a run
folder (layout in ``experiments.results``) and, optionally, an MLflow run. The run folder's
``environment.json`` is written first with ``"complete": false`` and rewritten with ``true`` once
every file is in place, so a killed run's folder is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.markup import escape

from bcarena.agents.base import Agent, BotAgent, load_agent
from bcarena.agents.composite import train_composite
from bcarena.agents.config import TrainConfig, TrainConfigError, make_train_config
from bcarena.agents.dagger import (
    DAGGER_FILE,
    PLOT_FILE,
    DaggerError,
    check_opponents,
    game_expert,
    make_dagger_config,
    train_dagger,
)
from bcarena.agents.decoding import decode_agent
from bcarena.agents.ensemble import ensemble_key, train_ensemble
from bcarena.agents.threads import torch_threads
from bcarena.agents.torch_agent import TorchAgent
from bcarena.agents.train import train_bc
from bcarena.envs.duel import BOTS
from bcarena.envs.files import (
    OutputExistsError,
    commit_partial,
    discard_partial,
    new_partial,
    package_versions,
    write_bytes,
    write_json,
    write_text,
)
from bcarena.envs.games import get_game
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import evaluate_matches, load_player
from bcarena.eval.offline import evaluate_offline
from bcarena.eval.replays import record_side_by_side
from bcarena.eval.stats import Aggregates
from bcarena.experiments import report
from bcarena.experiments.cache import StageCache, content_key
from bcarena.experiments.config import DecodingSpec, Experiment, ExperimentError, VariantSpec, load_experiment
from bcarena.experiments.results import (
    ENVIRONMENT_FILE,
    RUN_OFFLINE_METRICS,
    AgentResult,
    RunResults,
    current_offline_names,
    save_results,
)
from bcarena.recordings.converter import build_dataset
from bcarena.recordings.dataset import ActionDataset
from bcarena.recordings.overlay import overlay_sha256
from bcarena.recordings.reaction_delay import DEFAULT_MAX_DELAY
from bcarena.recordings.recorder import RecordOptions, record_episodes

PACKAGES = (
    "bcarena",
    "numpy",
    "torch",
    "gymnasium",
    "stable-baselines3",
    "scikit-learn",
    "imbalanced-learn",
    "opencv-python",
    "pandas",
    "pyarrow",
    "openskill",
    "mlflow-skinny",
)
EVAL_FILE = "evaluation.json"


# ------------------------------------------------------------------------------------ variants
def variant_configs(variant: VariantSpec, seed: int | None = None) -> dict[str, Any]:
    """Validated trainer configs of a variant: {"bc": cfg} or {"movement": cfg, "skill": cfg}."""
    overrides = {} if seed is None else {"seed": seed}
    if variant.kind in ("bc", "dagger"):  # a dagger variant's train section is its BC start
        return {"bc": make_train_config(variant.train, overrides, where=f"variant {variant.name}")}
    unknown = sorted(set(variant.train) - {"movement", "skill"})
    if unknown:
        raise TrainConfigError(
            f"composite variant {variant.name}: train takes 'movement' and 'skill' sections, "
            f"got unknown key(s) {unknown}"
        )
    return {
        part: make_train_config(variant.train.get(part, {}), overrides, where=f"variant {variant.name}.{part}")
        for part in ("movement", "skill")
    }


def train_variant(
    variant: VariantSpec, seed: int, dataset: ActionDataset, out: Path, progress: bool, exp: Experiment | None = None
) -> None:
    """Train one variant with one seed; the agent ends up in ``out/agent``, its history in ``out/history.json``."""
    configs = variant_configs(variant, seed)
    name = f"{variant.name}-s{seed}"
    if variant.kind == "bc":
        train_bc(dataset, configs["bc"], out, progress=progress, name=name)
        return
    if variant.kind == "dagger":
        _train_dagger_variant(variant, configs["bc"], dataset, out, progress, exp, name)
        return
    result = train_composite(dataset, configs["movement"], configs["skill"], out, progress=progress, name=name)
    history = [
        {"epoch": r["epoch"], **{f"skill_{k}": v for k, v in r.items() if k != "epoch"}} for r in result.skill.history
    ]
    write_json(out / "history.json", history, default=str)


def _train_dagger_variant(
    variant: VariantSpec, cfg: Any, dataset: ActionDataset, out: Path, progress: bool, exp: Experiment | None, name: str
) -> None:
    """A ``kind: dagger`` variant: BC, then DAgger rounds, each scored in ``dagger.eval_matches`` matches.

    The clone plays rollouts and those matches with the variant's first decoding (``rollout_decoding``).
    """
    dc = make_dagger_config(variant.dagger, where=f"variant {variant.name}.dagger")
    game_config = exp.game_config if exp is not None else None
    plays = rollout_decoding(variant, exp) if exp is not None else None

    def decode(agent: TorchAgent) -> TorchAgent:
        assert plays is not None  # passed on only then
        return decode_agent(agent, plays.mode, plays.temperature or 1.0, dataset)

    def online(agent: Agent) -> dict[str, Any]:
        if dc.eval_matches == 0:
            return {}
        return {opp: match_summary(agent, opp, dc.eval_matches, dc.eval_seed, exp) for opp in dc.opponents}

    decoder = decode if plays is not None else None
    options = {"game_config": game_config, "evaluate_online": online, "progress": progress, "name": name}
    train_dagger(dataset, cfg, dc, out, **options, decode=decoder)


def rollout_decoding(variant: VariantSpec, exp: Experiment) -> DecodingSpec | None:
    """How a DAgger variant's clone plays its rollouts: its first decoding (the variant's, else the evaluation's);
    None for argmax, which (as in the decode stage) is the trained agent itself, and for other kinds."""
    if variant.kind != "dagger":
        return None
    first = (variant.decoding or exp.evaluation.decoding)[0]
    return None if first.mode == "argmax" else first


# ---------------------------------------------------------------------------------- evaluation
def _latency_ms(agent: Agent, obs: np.ndarray, calls: int = 200) -> float:
    """Median wall time of one single-observation decision, in ms."""
    agent.reset(1)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        agent.act(obs[i % len(obs)][None])
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def evaluate_agent(agent: Agent, dataset: ActionDataset | None, exp: Experiment) -> dict[str, Any]:
    """Offline (when a dataset is given) and online results of one agent, as JSON-able data."""
    with torch_threads(1):  # as in training: small nets, and a shared machine (see agents.threads)
        return _evaluate_agent(agent, dataset, exp)


def _evaluate_agent(agent: Agent, dataset: ActionDataset | None, exp: Experiment) -> dict[str, Any]:
    ev = exp.evaluation
    out: dict[str, Any] = {"offline": {}, "online": {}, "confusion": None, "latency_ms_p50": None}
    if dataset is not None:
        report = evaluate_offline(agent, dataset, ev.offline.split, ev.offline.tolerance_frames)
        scalars = report.scalars()
        out["offline"] = {**scalars, **{alias: scalars.get(name) for alias, name in RUN_OFFLINE_METRICS.items()}}
        out["confusion"] = {"labels": report.action_names, "matrix": report.confusion}
        part = dataset.split(ev.offline.split)
        obs = part.states() if agent.obs_type == "state" else part.frames()[:, :, :, None]
        out["latency_ms_p50"] = _latency_ms(agent, obs[:200])
    for opponent in ev.opponents:
        out["online"][opponent] = match_summary(agent, opponent, ev.matches, ev.seed, exp)
    return out


def match_summary(agent: Agent, opponent: str, matches: int, seed: int, exp: Experiment | None) -> dict[str, Any]:
    """``matches`` matches of ``agent`` vs ``opponent`` on seeds ``seed, seed + 1, ...``: the report as data."""
    config, game = (exp.evaluation_game_config, exp.game_name) if exp is not None else (None, None)
    workers = exp.evaluation.workers if exp is not None else 1
    match = evaluate_matches(agent, opponent, matches, seed, config=config, game=game, workers=workers)
    lo, hi = match.win_rate_ci95
    return {**match.to_dict(), "win_rate_low": lo, "win_rate_high": hi, "winners": match.results.winner.tolist()}


# ------------------------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class StageTask:
    """One cached unit of work (train one variant x seed, or evaluate one agent).

    Tasks are plain data and ``run_task`` is a top-level function, so an executor can ship them to
    other processes or machines (Ray); the shared cache folder is where results meet.
    """

    kind: str  # "train" | "evaluate" | "reference"
    label: str
    cache_root: str
    key: str
    experiment: Experiment
    dataset_dir: str | None = None
    variant: VariantSpec | None = None
    seed: int | None = None
    agent_dir: str | None = None  # evaluate/decode: the agent folder; reference: None (bot: evaluation.reference)
    progress: bool = False
    decoding: DecodingSpec | None = None  # decode: the decoding to give the agent


@dataclass
class TaskOutcome:
    label: str
    path: str | None  # cache folder of the result; None on failure
    reused: bool
    seconds: float
    error: str | None = None
    trace: str | None = None  # the formatted traceback of a failure


STAGE_OF = {"train": "agents", "decode": "decoded", "evaluate": "evaluations", "reference": "evaluations"}


def _make(task: StageTask) -> Callable[[Path], None]:
    exp = task.experiment
    dataset = ActionDataset.load(task.dataset_dir) if task.dataset_dir else None
    if task.kind == "train":
        return lambda tmp: train_variant(task.variant, task.seed, dataset, tmp, task.progress, exp)
    if task.kind == "decode":
        return lambda tmp: decode_saved(task, dataset, tmp)
    if task.kind == "evaluate":
        return lambda tmp: write_json(
            tmp / EVAL_FILE, evaluate_agent(load_agent(task.agent_dir), dataset, exp), default=str
        )
    return lambda tmp: write_json(tmp / EVAL_FILE, evaluate_agent(_reference(exp), None, exp), default=str)


def _reference(exp: Experiment) -> Any:
    """The experiment's reference player: a Duel bot, or another game's built-in expert (a Policy)."""
    name = str(exp.evaluation.reference)
    if exp.game_name == "duel":
        return BotAgent(name)
    return get_game(exp.game_name).player(name, exp.evaluation_game_config, exp.evaluation.seed)


def decode_saved(task: StageTask, dataset: ActionDataset | None, out: Path) -> None:
    """The agent of ``task.agent_dir`` deciding by ``task.decoding`` (same weights, fitted on val where needed),
    saved to ``out/agent``."""
    spec = task.decoding
    assert spec is not None and task.agent_dir is not None  # a decode task carries both
    decoded = decode_agent(load_agent(task.agent_dir), spec.mode, spec.temperature or 1.0, dataset)
    decoded.save(out / "agent")


def run_task(task: StageTask) -> TaskOutcome:
    """Build (or reuse) one task's cache entry. Failures come back as data, never as exceptions."""
    start = time.perf_counter()
    try:
        path, reused = StageCache(task.cache_root).build(STAGE_OF[task.kind], task.key, _make(task))
    except Exception as exc:  # one failing variant must not sink the others
        return TaskOutcome(
            task.label, None, False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}", traceback.format_exc()
        )
    return TaskOutcome(task.label, str(path), reused, time.perf_counter() - start)


class LocalExecutor:
    """Runs tasks on this machine: one after another in this process (``jobs=1``, the default), or in
    ``jobs`` worker processes.

    Every task is seeded and trains on one torch thread, so the results do not depend on ``jobs`` (on
    the same machine, bit for bit); workers are spawned, not forked, so no torch or BLAS state is shared.
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Spawn the workers now, so their imports (torch, ~5 s of CPU each) overlap the recording and the
        dataset build in this process; one pool then serves every stage of the run until ``close``."""
        if self.jobs > 1 and self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"))
            for _ in range(self.jobs):  # each submit to a pool without an idle worker spawns one
                self._pool.submit(_import_the_stages)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def map(self, fn: Callable[[StageTask], TaskOutcome], tasks: list[StageTask]) -> Iterator[TaskOutcome]:
        """Outcomes in task order, each as soon as it and those before it are done (so progress shows)."""
        if self.jobs == 1 or len(tasks) < 2:
            yield from (fn(task) for task in tasks)
            return
        self.start()
        assert self._pool is not None
        yield from self._pool.map(fn, tasks)


def _import_the_stages() -> None:
    """A worker's first task: unpickling it imports this module, and with it every stage's code."""


# ------------------------------------------------------------------------------------- the run
def _git_commit(root: Path) -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _new_folder(path: Path) -> Path:
    """Create ``path``, or ``path-2``, ``path-3``, ... when runs start within the same second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = path, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, number = path.with_name(f"{path.name}-{number}"), number + 1


class ExperimentRunner:
    """Runs one experiment. ``run()`` returns the run folder."""

    def __init__(
        self,
        experiment: Experiment,
        runs_root: str | Path = "runs",
        source: Path | None = None,
        progress: bool = True,
        console: Console | None = None,
        executor=None,
    ) -> None:
        self.exp = experiment
        self.executor = executor or LocalExecutor()
        self.runs_root = Path(runs_root)
        self.source = source
        self.progress = progress
        self.console = console or Console()
        self.cache = StageCache(self.runs_root / ".cache")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.run_dir = self.runs_root / experiment.name / f"{stamp}-{content_key('run', experiment)[:6]}"
        self.timings: dict[str, float] = {}
        self.aggregates: Aggregates | None = None  # set by the report when the run has aggregates across seeds

    # stage helper: build or reuse, and say which
    def _stage(self, stage: str, key: str, label: str, make: Callable[[Path], None]) -> Path:
        start = time.perf_counter()
        path, reused = self.cache.build(stage, key, make)
        self._say(TaskOutcome(label, str(path), reused, time.perf_counter() - start))
        return path

    def _say(self, outcome: TaskOutcome) -> None:
        self.timings[outcome.label] = outcome.seconds
        if outcome.error:
            self.console.print(f"  [red]failed[/] {escape(outcome.label)}: {escape(str(outcome.error))}")
        else:
            self.console.print(
                f"  {'[dim]cached[/]' if outcome.reused else '[green]done[/]  '} {outcome.label}"
                + ("" if outcome.reused else f" ({outcome.seconds:.1f} s)")
            )

    def _run_tasks(self, tasks: list[StageTask]) -> list[TaskOutcome]:
        outcomes = []
        for outcome in self.executor.map(run_task, tasks):
            self._say(outcome)
            outcomes.append(outcome)
        return outcomes

    def run(self) -> Path:
        exp = self.exp
        started = time.perf_counter()
        self.run_dir = _new_folder(self.run_dir)
        write_text(self.run_dir / "config.resolved.yaml", yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
        environment = {
            "git_commit": _git_commit(Path(__file__).resolve().parents[1]),
            "versions": package_versions(PACKAGES),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "started": datetime.now(timezone.utc).isoformat(),
            "experiment_file": str(self.source),
            "complete": False,  # until every file of the run folder is written (see the module docstring)
        }
        write_json(self.run_dir / ENVIRONMENT_FILE, environment, default=str)
        self.console.rule(f"[bold]{exp.name}[/]: {len(exp.variants)} variant(s) x {len(exp.seeds)} seed(s)")

        start_workers = getattr(self.executor, "start", None)
        if start_workers is not None:
            start_workers()
        try:
            dataset_key, dataset = self.prepare_dataset()
            agents = self._decode_all(self._train_all(dataset_key, dataset), dataset)
            results = self._evaluate_all(agents, dataset)
        finally:
            close_workers = getattr(self.executor, "close", None)
            if close_workers is not None:
                close_workers()
        self._report(results, dataset)

        environment.update(
            finished=datetime.now(timezone.utc).isoformat(),
            wall_seconds=round(time.perf_counter() - started, 1),
            stage_seconds={k: round(v, 2) for k, v in self.timings.items()},
            complete=True,
        )
        write_json(self.run_dir / ENVIRONMENT_FILE, environment, default=str)
        if exp.tracking.mlflow:
            self._track(results)
        self.console.print(f"run folder: {escape(str(self.run_dir))}  ({environment['wall_seconds']} s)")
        return self.run_dir

    # ---------------------------------------------------------------- stages 1-2: data
    def prepare_dataset(self) -> tuple[str, ActionDataset]:
        """Record (or reuse) the gameplay and build (or reuse) the dataset: (dataset cache key, dataset)."""
        exp = self.exp
        rec = exp.recording
        if rec.path is not None:
            recordings = Path(rec.path)
            metas = sorted(p.read_bytes() for p in recordings.glob("**/meta.json"))
            record_key = content_key("recordings-path", str(recordings.resolve()), metas)
        else:
            game = get_game(exp.game_name)
            game_key = exp.game_config.to_dict() if game.name == "duel" else {"name": game.name, **exp.game}
            record_key = content_key("recordings", rec, exp.seed, game_key)
            # The recorder loads no agents: agent folders (and perturbed bots) are loaded here; built-in names stay.
            builtin = BOTS if game.name == "duel" else game.players
            me, *rivals = [p if p in builtin else load_player(p, exp.duel_config) for p in [rec.player, *rec.opponents]]
            recordings = self._stage(
                "recordings",
                record_key,
                f"record {rec.episodes} episodes of {rec.player}",
                lambda tmp: record_episodes(
                    me,
                    rivals,
                    rec.episodes,
                    tmp,
                    exp.seed,
                    game=game.name,
                    options=RecordOptions(video=False, progress=self.progress),
                    config=exp.game_config,
                ),
            )
        # New marks in the recording's label overlay must build a new dataset; without one the key is as before.
        overlay = overlay_sha256(recordings)
        marks = [{"overlay_sha256": overlay}] if overlay else []
        # A spec without a reaction delay (None) keeps the key it had before delays could be set.
        spec = exp.dataset.model_dump(mode="json", exclude_none=True)
        dataset_key = content_key("dataset", spec, record_key, exp.seed, *marks)
        folder = self._stage(
            "datasets",
            dataset_key,
            "build the action dataset",
            lambda tmp: (
                build_dataset(
                    recordings,
                    tmp / "dataset",
                    exp.dataset.alignment,
                    exp.dataset.split,
                    exp.seed,
                    pixels=exp.dataset.pixels,
                    progress=self.progress,
                    reaction_delay=exp.dataset.reaction_delay,
                    max_reaction_delay=exp.dataset.max_reaction_delay or DEFAULT_MAX_DELAY,
                )
                and None
            ),
        )
        dataset = ActionDataset.load(folder / "dataset")
        write_json(
            self.run_dir / "dataset_stats.json",
            {
                "dataset": str(folder / "dataset"),
                "action_names": dataset.action_names,
                "class_counts": dataset.manifest["class_counts"],
                "event_counts": dataset.manifest["event_counts"],
                "num_frames": dataset.manifest["num_frames"],
                "num_episodes": dataset.manifest["num_episodes"],
                "reaction_delay": dataset.manifest.get("reaction_delay"),
                "reaction_delay_search": dataset.manifest.get("reaction_delay_search"),
            },
            default=str,
        )
        return dataset_key, dataset

    # ------------------------------------------------------------------ stage 3: train
    def _task(self, kind: str, label: str, key: str, dataset: ActionDataset | None, **fields: Any) -> StageTask:
        return StageTask(
            kind=kind,
            label=label,
            cache_root=str(self.cache.root),
            key=key,
            experiment=self.exp,
            dataset_dir=str(dataset.path) if dataset is not None else None,
            progress=self.progress and isinstance(self.executor, LocalExecutor) and self.executor.jobs == 1,
            **fields,
        )

    def _train_all(self, dataset_key: str, dataset: ActionDataset) -> list[dict[str, Any]]:
        entries, tasks = [], []
        for variant in self.exp.variants:
            for seed in self.exp.seeds:
                agent_id = f"{variant.name}-s{seed}"
                # decodings are not part of a recipe: changing them never retrains (but DAgger rollouts play one)
                plays = rollout_decoding(variant, self.exp)
                parts = [] if plays is None else [{"rollout_decoding": plays.model_dump(mode="json")}]
                key = content_key(
                    "agent", variant.model_dump(mode="json", exclude={"decoding"}), seed, dataset_key, *parts
                )
                entries.append(
                    {
                        "agent_id": agent_id,
                        "variant": variant.name,
                        "seed": seed,
                        "kind": variant.kind,
                        "key": key,
                        "path": None,
                        "error": None,
                    }
                )
                tasks.append(self._task("train", f"train {agent_id}", key, dataset, variant=variant, seed=seed))
        outcomes = self._train_batched(entries, tasks, dataset) if self.exp.training.batched else {}
        single = [(e, t) for e, t in zip(entries, tasks) if e["agent_id"] not in outcomes]
        outcomes |= {e["agent_id"]: o for (e, _), o in zip(single, self._run_tasks([t for _, t in single]))}
        for entry in entries:
            outcome = outcomes[entry["agent_id"]]
            entry["path"] = Path(outcome.path) if outcome.path else None
            entry["error"] = outcome.error
            if outcome.error:
                (self.run_dir / "failures").mkdir(exist_ok=True)
                write_text(self.run_dir / "failures" / f"{entry['agent_id']}.txt", outcome.trace or outcome.error)
        return entries

    def _train_batched(
        self, entries: list[dict[str, Any]], tasks: list[StageTask], dataset: ActionDataset
    ) -> dict[str, TaskOutcome]:
        """``training.batched``: every plain CPU MLP BC variant x seed trained in ensembles (``agents.ensemble``),
        one per layout and schedule, in this process (also with a Ray executor); their cache keys are marked, as
        their weights match train_bc's to float rounding only. Returns {agent_id: outcome} of the entries it took
        (the rest train one at a time, through the executor)."""
        groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], TrainConfig]]] = {}
        for entry, task in zip(entries, tasks):
            cfg = variant_configs(task.variant, task.seed)["bc"] if entry["kind"] == "bc" else None
            if cfg is not None and cfg.policy == "mlp" and cfg.device == "cpu":
                entry["key"] = content_key("agent-ensemble", entry["key"])
                groups.setdefault(ensemble_key(cfg), []).append((entry, cfg))
        outcomes: dict[str, TaskOutcome] = {}
        for members in groups.values():
            outcomes |= train_ensemble_group(self.cache, members, dataset, self.progress)
        for outcome in outcomes.values():
            self._say(outcome)
        return outcomes

    # ----------------------------------------------------------------- stage 3b: decode
    def _decode_all(self, trained: list[dict[str, Any]], dataset: ActionDataset) -> list[dict[str, Any]]:
        """One row per trained agent and decoding (the variant's ``decoding`` or ``evaluation.decoding``).

        Train once, evaluate each decoding: an argmax row is the trained agent itself (its id unchanged);
        any other decoding is the same weights with another selection (fitted on val for thresholds and
        calibrated), cached as its own agent folder, and its row is ``<agent_id>@<label>``.
        """
        decodings = {v.name: v.decoding or self.exp.evaluation.decoding for v in self.exp.variants}
        rows, tasks, decoded = [], [], []
        for entry in trained:
            for decoding in decodings[entry["variant"]]:
                if decoding.mode == "argmax":
                    rows.append({**entry, "decoding": decoding.label})
                    continue
                row = {
                    **entry,
                    "agent_id": f"{entry['agent_id']}@{decoding.label}",
                    "decoding": decoding.label,
                    "key": content_key("decoded", decoding, entry["key"]),
                }
                rows.append(row)
                if entry["path"] is not None:  # otherwise the row keeps its training's error
                    agent_dir = str(entry["path"] / "agent")
                    label = f"decode {row['agent_id']}"
                    tasks.append(
                        self._task("decode", label, row["key"], dataset, agent_dir=agent_dir, decoding=decoding)
                    )
                    decoded.append(row)
        for row, outcome in zip(decoded, self._run_tasks(tasks)):
            row["path"] = Path(outcome.path) if outcome.path else None
            row["error"] = outcome.error
        return rows

    # --------------------------------------------------------------- stage 4: evaluate
    def _evaluate_all(self, agents: list[dict[str, Any]], dataset: ActionDataset) -> RunResults:
        exp = self.exp
        results = [
            AgentResult(
                agent_id=e["agent_id"],
                variant=e["variant"],
                seed=e["seed"],
                kind=e["kind"],
                agent_path=str(e["path"] / "agent") if e["path"] else None,
                error=e["error"],
                decoding=e.get("decoding", "argmax"),
            )
            for e in agents
        ]
        # the decodings list and the across-seed aggregates are not part of one agent's evaluation;
        # "policy-metrics": evaluations since they exist
        # (an empty ``game`` too: evaluations keep the keys they had before it existed)
        per_agent = exp.evaluation.model_dump(
            mode="json", exclude={"decoding", "aggregates"} | (set() if exp.evaluation.game else {"game"})
        )
        evaluation_key = [per_agent, "policy-metrics"]
        tasks, owners = [], []
        for entry, result in zip(agents, results):
            if result.agent_path is not None:
                key = content_key("evaluation", *evaluation_key, entry["key"])
                tasks.append(
                    self._task("evaluate", f"evaluate {entry['agent_id']}", key, dataset, agent_dir=result.agent_path)
                )
                owners.append((entry, result))
        reference = exp.evaluation.reference
        if reference:
            result = AgentResult(agent_id=reference, variant=reference, seed=None, kind="bot", agent_path=None)
            tasks.append(
                self._task(
                    "reference",
                    f"evaluate reference {reference}",
                    content_key("reference", evaluation_key[0], reference),
                    None,
                )
            )
            owners.append((None, result))
            results.append(result)
        for (entry, result), outcome in zip(owners, self._run_tasks(tasks)):
            if outcome.error:
                result.error = f"evaluation failed: {outcome.error}"
                continue
            evaluation = json.loads((Path(outcome.path) / EVAL_FILE).read_text())
            result.offline, result.online = current_offline_names(evaluation["offline"]), evaluation["online"]
            result.latency_ms_p50 = evaluation["latency_ms_p50"]
            if entry is not None:
                self._copy_artifacts(entry, evaluation)
        return RunResults(
            experiment=exp.name, run_id=self.run_dir.name, agents=results, primary_opponent=exp.evaluation.opponents[0]
        )

    def _copy_artifacts(self, entry: dict[str, Any], evaluation: dict[str, Any]) -> None:
        if evaluation.get("confusion"):
            write_json(self.run_dir / "confusion" / f"{entry['agent_id']}.json", evaluation["confusion"], default=str)
        history = entry["path"] / "history.json"
        if history.is_file():
            write_json(
                self.run_dir / "curves" / f"{entry['agent_id']}.json", json.loads(history.read_text()), default=str
            )
        # DAgger's per-iteration results and plot (curves/ and plots/ go to MLflow with the run)
        if (entry["path"] / DAGGER_FILE).is_file():
            dagger = json.loads((entry["path"] / DAGGER_FILE).read_text())
            write_json(self.run_dir / "curves" / f"{entry['agent_id']}.{DAGGER_FILE}", dagger, default=str)
            write_bytes(
                self.run_dir / "plots" / f"{entry['agent_id']}.{PLOT_FILE}", (entry["path"] / PLOT_FILE).read_bytes()
            )

    # ----------------------------------------------------------------- stage 5: report
    def _report(self, results: RunResults, dataset: ActionDataset) -> None:
        """Ratings and the gap report into the results, then results, plots, the side-by-side replay, the table."""
        trained = [a for a in results.agents if a.online]
        if len(trained) >= 2:
            results.ratings = report.match_ratings(trained, results.primary_opponent)
        if self.exp.evaluation.gap_report:
            gap = report.gap_report(results, self.exp)
            if gap is None:
                self.console.print("  [yellow]gap report skipped[/]: it needs at least 3 evaluated agents")
            else:
                paths = gap.write(self.run_dir / "plots")
                results.gap_report = {**gap.to_dict(), "markdown": str(paths["markdown"])}
                self.console.print(f"  {escape(gap.summary())}")
        if self.exp.wants_aggregates:
            self._aggregates(results)
        save_results(self.run_dir, results)
        report.plot_accuracy_vs_win_rate(results, self.run_dir / "plots" / "accuracy_vs_winrate.png")
        report.plot_class_distribution(dataset, self.run_dir / "plots" / "class_distribution.png")
        self._replay(results)
        table = report.results_table(results, self.exp.evaluation.opponents)
        self.console.print(table)
        write_text(self.run_dir / "table.md", report.markdown_table(table))

    def _aggregates(self, results: RunResults) -> None:
        """aggregates.json, aggregates.md and performance_profile.png (IQM etc. across seeds) into the run folder."""
        try:
            aggregates = report.seed_aggregates(results, self.exp)
        except EvalError as exc:  # e.g. failed trainings left a recipe with a single seed
            self.console.print(f"  [yellow]aggregates across seeds skipped[/]: {escape(str(exc))}")
            return
        aggregates.write(self.run_dir)
        self.aggregates = aggregates
        best = aggregates.recipes[0]
        self.console.print(
            f"  [green]done[/]   aggregates across {len(self.exp.seeds)} seeds -> aggregates.md "
            f"(best IQM: {escape(best)} {aggregates.iqm[best].text()})"
        )

    def _replay(self, results: RunResults) -> None:
        """The side-by-side replay of two variants (first seed) and a still of it, when the experiment asks."""
        spec = self.exp.evaluation.replay
        if spec.side_by_side is None:
            return
        paths: dict[str, str] = {}
        for a in results.agents:  # a variant's first row: its argmax agent where it has one
            if a.agent_path and a.seed == self.exp.seeds[0]:
                paths.setdefault(a.variant, a.agent_path)
        left, right = spec.side_by_side
        if left not in paths or right not in paths:
            self.console.print(f"  [yellow]side-by-side replay skipped[/]: {left} or {right} has no trained agent")
            return
        out = self.run_dir / "replays" / "side_by_side.mp4"
        out.parent.mkdir(exist_ok=True)
        record_side_by_side(
            load_agent(paths[left]),
            load_agent(paths[right]),
            spec.opponent,
            spec.seed,
            out,
            captions=(left, right),
            config=self.exp.evaluation_game_config,
            game=self.exp.game_name,
        )
        report.save_still(out, self.run_dir / "plots" / "side_by_side_still.png")
        self.console.print(f"  [green]done[/]   side-by-side replay -> {escape(str(out))}")

    def _track(self, results: RunResults) -> None:
        from bcarena.experiments.tracking import TrackingUnavailable, default_uri, log_run

        uri = self.exp.tracking.uri or default_uri(Path.cwd())
        metrics: dict[str, Any] = {a.agent_id: {"offline": a.offline, "online": a.online} for a in results.agents}
        if self.aggregates is not None:  # per recipe: aggregates.iqm.<recipe>, .iqm_low, .iqm_high, .mean
            metrics["aggregates"] = {
                kind: {r: getattr(self.aggregates, kind)[r].value for r in self.aggregates.recipes}
                | {f"{r}_low": getattr(self.aggregates, kind)[r].ci95[0] for r in self.aggregates.recipes}
                | {f"{r}_high": getattr(self.aggregates, kind)[r].ci95[1] for r in self.aggregates.recipes}
                for kind in ("iqm", "mean")
            }
            metrics["aggregates"]["poi"] = {f"{c.a}_vs_{c.b}": c.poi.value for c in self.aggregates.comparisons}
        try:
            run_id = log_run(
                uri,
                self.exp.name,
                self.run_dir.name,
                self.exp.model_dump(mode="json"),
                metrics,
                self.run_dir,
                tags={"run_dir": str(self.run_dir)},
            )
            self.console.print(f"  [green]done[/]   MLflow run {run_id} at {uri}")
        except TrackingUnavailable as exc:
            self.console.print(f"  [yellow]tracking skipped[/]: {escape(str(exc))}")


def train_ensemble_group(
    cache: StageCache, members: list[tuple[dict[str, Any], TrainConfig]], dataset: ActionDataset, progress: bool
) -> dict[str, TaskOutcome]:
    """Train the uncached ``members`` (entry, config) as one ensemble straight into their cache folders.

    A member that fails is reported alone; each member is charged an equal share of the ensemble's time.
    """
    outcomes, todo = {}, []
    for entry, cfg in members:
        final = cache.path("agents", entry["key"])
        if final.is_dir():
            outcomes[entry["agent_id"]] = TaskOutcome(f"train {entry['agent_id']}", str(final), True, 0.0)
        else:
            todo.append((entry, cfg, final))
    if not todo:
        return outcomes
    tmps = [new_partial(final, folder=True) for _, _, final in todo]
    start = time.perf_counter()
    try:
        result = train_ensemble(
            dataset, [c for _, c, _ in todo], tmps, [e["agent_id"] for e, _, _ in todo], progress=progress
        )
        errors = result.errors
    except Exception as exc:  # the whole ensemble failed: every member reports it, the run goes on
        errors = [f"{type(exc).__name__}: {exc}"] * len(todo)
    share = (time.perf_counter() - start) / len(todo)
    for (entry, _, final), tmp, error in zip(todo, tmps, errors):
        label = f"train {entry['agent_id']} (batched, {len(todo)} at once)"
        if error is None:
            with contextlib.suppress(OutputExistsError):  # another run committed the same key first
                commit_partial(tmp, final, overwrite=False)
        discard_partial(tmp)
        outcomes[entry["agent_id"]] = TaskOutcome(label, None if error else str(final), False, share, error, error)
    return outcomes


def failure_summary(results: RunResults) -> str | None:
    """``"N of M variants failed: id (error), ..."`` for a run whose trainings or evaluations failed; else None.

    M counts every agent of the run (variant x seed, and the reference bot); each error is cut to its first line.
    """
    failed = [a for a in results.agents if a.error]
    if not failed:
        return None
    reasons = ", ".join(f"{a.agent_id} ({a.error.splitlines()[0][:160]})" for a in failed)
    return f"{len(failed)} of {len(results.agents)} variants failed: {reasons}"


def _validate_variant(variant: VariantSpec) -> None:
    try:
        variant_configs(variant)
        if variant.kind == "dagger":
            make_dagger_config(variant.dagger, where=f"variant {variant.name}.dagger")
    except (TrainConfigError, DaggerError) as exc:
        raise ValueError(str(exc)) from None


def load(path: str | Path) -> Experiment:
    """Load an experiment file, validating each variant's trainer options too."""
    experiment = load_experiment(path, validate_variant=_validate_variant)
    _check_dagger_players(experiment, path)
    return experiment


def _check_dagger_players(exp: Experiment, path: str | Path) -> None:
    """A DAgger variant's expert must be queryable and its opponents the game's: checked before any work."""
    for index, variant in enumerate(exp.variants):
        if variant.kind != "dagger":
            continue
        dc = make_dagger_config(variant.dagger)
        try:
            game = get_game(exp.game_name)
            game_expert(game, dc.expert, exp.game_config, dc.seed)
            check_opponents(game, dc.opponents)
        except DaggerError as exc:
            raise ExperimentError(f"{path}: variants.{index} ({variant.name}).dagger: {exc}") from None


def run_experiment(
    path: str | Path,
    runs_root: str | Path = "runs",
    progress: bool = True,
    console: Console | None = None,
    executor=None,
) -> Path:
    """Load, validate and run an experiment file; returns the run folder."""
    experiment = load(path)
    return ExperimentRunner(experiment, runs_root, Path(path), progress, console, executor).run()


__all__ = [
    "ExperimentError",
    "ExperimentRunner",
    "LocalExecutor",
    "StageTask",
    "TaskOutcome",
    "failure_summary",
    "load",
    "run_experiment",
    "run_task",
    "train_variant",
    "variant_configs",
]
