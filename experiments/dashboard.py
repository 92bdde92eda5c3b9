"""The dashboard's data side; ``bcarena dashboard`` (experiments/commands/dashboard.py) launches it.

Everything here works without Streamlit: it reads run folders (layout in
``bcarena.experiments.results``), turns them into tables the page shows, makes replays playable
in a browser and renders the blind A/B replays. ``dashboard_app.py`` is the Streamlit page that
shows them; ``launch`` starts it. The dashboard never changes a run folder except for two
additions: votes appended to ``preferences.jsonl`` and blind A/B replays rendered into
``replays/`` when they are first needed. The match and video stack is imported inside the
functions that use it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator

from bcarena.envs.duel import BOTS
from bcarena.envs.errors import BcarenaError
from bcarena.envs.files import OutsideFolderError, inside, safe_name
from bcarena.envs.games import Game
from bcarena.envs.yaml_files import load_yaml
from bcarena.experiments.results import ENVIRONMENT_FILE, RESULTS_FILE, AgentResult, RunResults, find_runs

APP_FILE = Path(__file__).with_name("dashboard_app.py")
RUNS_ENV = "BCARENA_RUNS"  # the runs root the page reads (set by ``launch``)
INSTALL_HINT = "pip install -e '.[dashboard]'"
BLIND_PREFIX = "blind_"  # replays/blind_<agent>_vs_<opponent>_s<seed>.mp4, rendered for A/B votes
BLIND_NAME = "agent"  # the only name drawn on a blind replay
AB_SEED_POOL = 20  # A/B matches use the first seeds of the run's evaluation seed list
MAX_JSON_DEPTH = 32  # nesting of a run folder's JSON files; the runner writes at most ~6 levels
IMAGE_SUFFIXES = (".png", ".gif")  # decoded when the run is read, so a corrupt one is named, not shown


class RunFolderError(BcarenaError, ValueError):
    """A run folder (or one of its files) cannot be read; the message names the file."""


class DashboardUnavailable(BcarenaError, RuntimeError):
    """Streamlit, which the dashboard runs on, is not installed (the optional ``dashboard`` extra)."""


@dataclass
class Confusion:
    """A confusion matrix on the offline split: ``matrix[true, predicted]`` counts, (C, C)."""

    labels: list[str]
    matrix: np.ndarray

    @property
    def row_normalized(self) -> np.ndarray:
        """Each true class's row divided by its total (per-class recall on the diagonal); 0 for empty rows."""
        totals = self.matrix.sum(axis=1, keepdims=True)
        return np.divide(self.matrix, totals, out=np.zeros(self.matrix.shape), where=totals > 0)


@dataclass
class RunView:
    """One run folder as the dashboard shows it. ``problems`` lists files that could not be read."""

    path: Path
    results: RunResults
    config: dict[str, Any]
    environment: dict[str, Any]
    dataset_stats: dict[str, Any] | None
    curves: pd.DataFrame  # long format: agent_id, epoch, metric, value
    confusions: dict[str, Confusion]
    plots: list[Path]
    replays: list[Path]
    problems: list[str] = field(default_factory=list)
    aggregates: dict[str, Any] | None = None  # aggregates.json: win rate across seeds (eval.stats.Aggregates)
    profile_plot: Path | None = None  # performance_profile.png

    @property
    def label(self) -> str:
        return f"{self.results.experiment} / {self.results.run_id}"


# ---------------------------------------------------------------------------------------- reading
def runs_root() -> Path:
    """The folder the page searches for runs: ``$BCARENA_RUNS``, else ``runs/``."""
    return Path(os.environ.get(RUNS_ENV, "runs"))


@dataclass(frozen=True)
class RunListing:
    """The run folders under a root, newest first: those the page shows, and those it skips as incomplete."""

    complete: list[Path]
    incomplete: list[Path]  # killed, or still running: environment.json says "complete": false


def _is_complete(run_dir: Path) -> bool:
    """False only when the runner marked the run as not finished yet. Runs from before that mark count as
    complete, and so does a folder whose environment.json cannot be read (``load_run`` names that problem)."""
    try:
        environment = _read_object(run_dir / ENVIRONMENT_FILE)
    except (OSError, RunFolderError):
        return True
    return environment.get("complete") is not False


def scan_runs(root: str | Path) -> RunListing:
    """Run folders under ``root`` (any depth), newest first, split into complete and incomplete ones."""
    listing = RunListing([], [])
    for run in find_runs(root) if Path(root).is_dir() else []:
        (listing.complete if _is_complete(run) else listing.incomplete).append(run)
    return listing


def list_runs(root: str | Path) -> list[Path]:
    """Complete run folders under ``root``, newest first ([] when ``root`` does not exist); see :func:`scan_runs`."""
    return scan_runs(root).complete


def _nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in parsed JSON ``value``, counted up to ``limit + 1`` (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= limit:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _read_json(path: Path) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise RunFolderError(f"{path}: nested too deeply to read") from None
    if _nesting_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise RunFolderError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep; not a run folder file")
    return data


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (environment.json, dataset_stats.json)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_config(path: Path) -> dict[str, Any]:
    data = load_yaml(path, "resolved experiment") or {}
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def _check_image(path: Path) -> Path:
    """``path`` if Pillow can decode the whole image (what the page does to show it), else RunFolderError."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, ...) for bad files
        raise RunFolderError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    return path


# The fields of results.json the page reads, with the types it needs. Unknown keys are left to
# ``RunResults.from_dict``, which refuses them.
_Number = StrictInt | StrictFloat | None


class _MatchSummaryFields(BaseModel):
    model_config = ConfigDict(extra="allow")
    matches: StrictInt | None = None
    win_rate: _Number = None
    win_rate_low: _Number = None
    win_rate_high: _Number = None


class _AgentFields(BaseModel):
    model_config = ConfigDict(extra="allow")
    agent_id: StrictStr
    variant: StrictStr
    seed: StrictInt | None
    kind: StrictStr
    agent_path: StrictStr | None
    offline: dict[StrictStr, _Number] = {}
    online: dict[StrictStr, _MatchSummaryFields] = {}
    latency_ms_p50: _Number = None
    error: StrictStr | None = None


class _RunFields(BaseModel):
    model_config = ConfigDict(extra="allow")
    experiment: StrictStr
    run_id: StrictStr
    agents: list[_AgentFields]
    primary_opponent: StrictStr
    gap_report: dict[StrictStr, Any] | None = None
    ratings: dict[StrictStr, dict[StrictStr, _Number]] | None = None

    @model_validator(mode="after")
    def _unique_agents(self) -> _RunFields:
        ids = [a.agent_id for a in self.agents]
        repeated = sorted({a for a in ids if ids.count(a) > 1})
        if repeated:
            raise ValueError(f"agent_id {repeated[0]!r} appears {ids.count(repeated[0])} times; ids must be unique")
        return self


def _read_results(run_dir: Path) -> RunResults:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise RunFolderError(f"{path}: missing — not a bcarena run folder (or the run has not finished)")
    data = _read_json(path)
    try:
        _RunFields.model_validate(data)
        return RunResults.from_dict(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()[:3])
        raise RunFolderError(f"{path}: does not match the RunResults format ({problems})") from None
    except TypeError as exc:
        raise RunFolderError(f"{path}: does not match the RunResults format ({exc})") from None


def load_run(run_dir: str | Path) -> RunView:
    """Read a run folder. A missing or malformed ``results.json`` is an error; any other broken
    file is skipped and named in ``problems`` so the rest of the run can still be shown."""
    from bcarena.eval.replays import REPLAY_SUFFIXES

    run_dir = Path(run_dir)
    results = _read_results(run_dir)
    problems: list[str] = []

    def optional(read, path: Path, default):
        if not path.exists():
            return default
        try:
            return read(path)
        except ValueError as exc:  # RunFolderError, YamlError, or a table pandas cannot build
            problems.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return default

    confusions, curve_tables = {}, []
    for path in sorted((run_dir / "confusion").glob("*.json")):
        matrix = optional(_read_confusion, path, None)
        if matrix is not None:
            confusions[path.stem] = matrix
    for path in sorted((run_dir / "curves").glob("*.json")):
        table = optional(_read_curve, path, None)
        if table is not None:
            curve_tables.append(table.assign(agent_id=path.stem))
    curves = (
        pd.concat(curve_tables, ignore_index=True)
        if curve_tables
        else pd.DataFrame(columns=["agent_id", "epoch", "metric", "value"])
    )
    replays = sorted(
        (
            p
            for p in (run_dir / "replays").glob("*")
            if p.suffix.lower() in REPLAY_SUFFIXES and not p.name.startswith(".")
        ),
        key=lambda p: (p.stem != "side_by_side", p.name),
    )
    replays = [p for p in replays if p.suffix.lower() not in IMAGE_SUFFIXES or optional(_check_image, p, None)]
    plots = [p for p in sorted((run_dir / "plots").glob("*.png")) if optional(_check_image, p, None)]
    return RunView(
        path=run_dir,
        results=results,
        config=optional(_read_config, run_dir / "config.resolved.yaml", {}),
        environment=optional(_read_object, run_dir / ENVIRONMENT_FILE, {}),
        dataset_stats=optional(_read_object, run_dir / "dataset_stats.json", None),
        curves=curves[["agent_id", "epoch", "metric", "value"]],
        confusions=confusions,
        plots=plots,
        replays=replays,
        problems=problems,
        aggregates=optional(_read_object, run_dir / "aggregates.json", None),
        profile_plot=optional(_check_image, run_dir / "performance_profile.png", None),
    )


def aggregates_tables(aggregates: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per recipe: IQM and mean win rate % with 95% intervals; per compared pair: P(A > B), paired tests).

    ``aggregates`` is a run's aggregates.json (``eval.stats.Aggregates.to_dict``).
    """

    def pct(estimate: dict[str, Any]) -> list[float]:
        return [100 * estimate["value"], 100 * estimate["ci95"][0], 100 * estimate["ci95"][1]]

    recipes = pd.DataFrame(
        [
            [r, *pct(aggregates["iqm"][r]), *pct(aggregates["mean"][r]), len(aggregates["seeds"][r])]
            for r in aggregates["recipes"]
        ],
        columns=["recipe", "IQM %", "IQM low %", "IQM high %", "mean %", "mean low %", "mean high %", "seeds"],
    )
    pairs = pd.DataFrame(
        [
            [
                c["a"],
                c["b"],
                c["probability_of_improvement"]["value"],
                c["probability_of_improvement"]["ci95"][0],
                c["probability_of_improvement"]["ci95"][1],
                c["paired"]["a_only"],
                c["paired"]["b_only"],
                c["paired"]["mcnemar_p"],
                c["paired"]["wilcoxon_p"],
                c["paired"]["verdict"],
            ]
            for c in aggregates["comparisons"]
        ],
        columns=["A", "B", "P(A>B)", "low", "high", "A-only wins", "B-only wins", "McNemar p", "Wilcoxon p", "verdict"],
    )
    return recipes, pairs


def _read_confusion(path: Path) -> Confusion:
    data = _read_json(path)
    if not isinstance(data, dict) or not {"labels", "matrix"} <= set(data):
        raise RunFolderError(f"{path}: expected an object with 'labels' and 'matrix'")
    if not isinstance(data["labels"], list) or not all(isinstance(x, str) for x in data["labels"]):
        raise RunFolderError(f"{path}: 'labels' must be a list of action names")
    labels = data["labels"]
    try:
        matrix = np.asarray(data["matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise RunFolderError(f"{path}: 'matrix' must be a list of lists of numbers") from None
    if matrix.shape != (len(labels), len(labels)):
        raise RunFolderError(
            f"{path}: 'matrix' has shape {matrix.shape}, expected "
            f"({len(labels)}, {len(labels)}) for {len(labels)} labels"
        )
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise RunFolderError(f"{path}: 'matrix' holds negative or non-finite counts")
    return Confusion(labels, matrix)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_curve(path: Path) -> pd.DataFrame:
    """A training history (list of {epoch, metric: value, ...}) as long rows (epoch, metric, value)."""
    data = _read_json(path)
    if not isinstance(data, list) or not all(isinstance(row, dict) and _is_number(row.get("epoch")) for row in data):
        raise RunFolderError(f"{path}: expected a list of objects, each with a numeric 'epoch'")
    wide = pd.DataFrame(data)
    metrics = [c for c in wide.columns if c != "epoch"]
    long = wide.melt(id_vars="epoch", value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def class_distribution(stats: dict[str, Any] | None) -> pd.DataFrame:
    """``dataset_stats.json`` class counts as rows (split, action, count, fraction of the split).

    ``class_counts`` may be {action: count}, a list aligned with ``action_names``, or either of
    those per split ({split: counts}); the split is "all" when counts are not split.
    """
    columns = ["split", "action", "count", "fraction"]
    if not stats or "class_counts" not in stats:
        return pd.DataFrame(columns=columns)
    counts = stats["class_counts"]
    names = stats.get("action_names")

    def as_mapping(value: Any) -> dict[str, float]:
        if isinstance(value, list):
            if not isinstance(names, list) or len(names) != len(value):
                raise RunFolderError(
                    f"dataset_stats.json: class_counts is a list of {len(value)} but action_names "
                    f"is {names!r}; expected one name per count"
                )
            mapping = dict(zip(map(str, names), value))
        elif isinstance(value, dict):
            mapping = {str(k): v for k, v in value.items()}
        else:
            mapping = {"": None}
        if not all(_is_number(v) and v >= 0 for v in mapping.values()):
            raise RunFolderError("dataset_stats.json: class_counts must map action -> count >= 0 (or split -> that)")
        return mapping

    nested = isinstance(counts, dict) and counts and all(isinstance(v, (dict, list)) for v in counts.values())
    per_split = {str(s): as_mapping(v) for s, v in counts.items()} if nested else {"all": as_mapping(counts)}
    rows = []
    for split, mapping in per_split.items():
        total = sum(mapping.values())
        rows += [
            {"split": split, "action": a, "count": c, "fraction": c / total if total else 0.0}
            for a, c in mapping.items()
        ]
    return pd.DataFrame(rows, columns=columns)


def event_counts(stats: dict[str, Any] | None) -> pd.DataFrame:
    """``dataset_stats.json`` event counts as rows (event, count); empty when there are none."""
    events = (stats or {}).get("event_counts")
    if not events:
        return pd.DataFrame(columns=["event", "count"])
    if not isinstance(events, dict) or not all(_is_number(v) for v in events.values()):
        raise RunFolderError("dataset_stats.json: event_counts must map event -> count")
    return pd.DataFrame({"event": list(events), "count": list(events.values())})


# -------------------------------------------------------------------------------------- the tables
def leaderboard_view(results: RunResults, preference_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard as shown: percentages, the Wilson interval as text, the match rating and the
    blind A/B rating side by side. Agents that failed are left out (``failed_agents`` lists them)."""
    board = results.leaderboard()
    ok = {a.agent_id for a in results.agents if a.error is None}
    board = board[board["agent_id"].isin(ok)].reset_index(drop=True)
    pref = (
        preference_table.set_index("agent_id")
        if preference_table is not None and len(preference_table)
        else pd.DataFrame(columns=["pref_mu", "votes"])
    )

    def pct(column: str) -> pd.Series:
        return pd.to_numeric(board[column], errors="coerce") * 100

    def interval(row: pd.Series) -> str:
        if pd.isna(row["win_rate_low"]) or pd.isna(row["win_rate_high"]):
            return ""
        return f"[{100 * row['win_rate_low']:.1f}, {100 * row['win_rate_high']:.1f}]"

    return pd.DataFrame(
        {
            "agent": board["agent_id"],
            "kind": board["kind"],
            "accuracy %": pct("accuracy"),
            "balanced acc %": pct("balanced_accuracy"),
            "skill-event F1": board["skill_event_f1"],
            "win rate %": pct("win_rate"),
            "win 95% CI": board.apply(interval, axis=1) if len(board) else [],
            "matches": board["matches"],
            "rating": board["rating_mu"],
            "rating ±": board["rating_sigma"],
            "A/B rating": board["agent_id"].map(pref["pref_mu"]) if len(pref) else np.nan,
            "A/B votes": board["agent_id"].map(pref["votes"]).fillna(0).astype(int) if len(pref) else 0,
            "latency ms": board["latency_ms_p50"],
        }
    )


def failed_agents(results: RunResults) -> list[AgentResult]:
    return [a for a in results.agents if a.error is not None]


# ----------------------------------------------------------------------------------------- replays
def browser_video(path: str | Path) -> bytes:
    """A replay as WebM (VP8) bytes a browser can play.

    Replays are written as MPEG-4 Part 2 (``mp4v``) or FFV1, which browsers do not decode; the
    opencv wheel can encode VP8, which every browser plays. The run folder is not touched.
    """
    import cv2

    path = Path(path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise RunFolderError(f"{path}: cannot open this video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    with tempfile.TemporaryDirectory(prefix="bcarena-video-") as tmp:
        out = Path(tmp) / "replay.webm"
        writer = None
        try:
            # Frame by frame, not envs.video.read_video: a full match at 640x360 is ~200 MB in memory.
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if writer is None:
                    writer = cv2.VideoWriter(
                        str(out), cv2.VideoWriter_fourcc(*"VP80"), fps, (frame.shape[1], frame.shape[0])
                    )
                    if not writer.isOpened():
                        raise RunFolderError(f"{path}: OpenCV cannot encode VP8 here, so the replay cannot be shown")
                writer.write(frame)
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if writer is None:
            raise RunFolderError(f"{path}: the video holds no frames")
        return out.read_bytes()


def ab_candidates(run: RunView) -> tuple[list[AgentResult], dict[str, str]]:
    """Agents that can play a blind A/B replay, and {agent_id: reason} for those that cannot."""
    ok, skipped = [], {}
    for agent in run.results.agents:
        if agent.error is not None:
            skipped[agent.agent_id] = f"failed during the run: {agent.error}"
            continue
        try:
            _player_spec(run.path, agent)
        except RunFolderError as exc:
            skipped[agent.agent_id] = str(exc)
            continue
        ok.append(agent)
    return ok, skipped


def ab_seeds(run: RunView) -> list[int]:
    """Match seeds for A/B replays: the first ``AB_SEED_POOL`` seeds of the run's evaluation seed list."""
    evaluation = run.config.get("evaluation") if isinstance(run.config, dict) else None
    evaluation = evaluation if isinstance(evaluation, dict) else {}
    start, matches = evaluation.get("seed", 0), evaluation.get("matches", AB_SEED_POOL)
    if not isinstance(start, int) or not isinstance(matches, int) or matches < 1:
        start, matches = 0, AB_SEED_POOL
    return list(range(start, start + min(matches, AB_SEED_POOL)))


_render_lock = threading.Lock()  # Streamlit sessions are threads of one process: render each file once


def blind_replay(run_dir: str | Path, agent: AgentResult, opponent: str, seed: int) -> Path:
    """``replays/blind_<agent>_vs_<opponent>_s<seed>.mp4`` of the run, rendered now if missing.

    Ids that are not plain file names are rewritten by ``safe_name``; nothing is written outside
    the run folder (a RunFolderError otherwise).

    The agent plays player 0 against ``opponent`` in the run's game (``_run_game``); it is drawn under the
    neutral name ``"agent"`` so the video does not give away who is playing.
    """
    from bcarena.eval.matches import player_for_game
    from bcarena.eval.replays import record_replay

    run_dir = Path(run_dir)
    # Both names come from results.json: made safe for a file name, and the path checked to stay in the run.
    name = f"{BLIND_PREFIX}{safe_name(agent.agent_id)}_vs_{safe_name(opponent)}_s{int(seed)}.mp4"
    try:
        path = inside(run_dir, Path("replays") / name, "blind replay")
    except OutsideFolderError as exc:  # replays/ is a link to elsewhere
        raise RunFolderError(str(exc)) from None
    with _render_lock:
        if not path.exists():
            game, config = _run_game(run_dir)
            # A shallow copy plays exactly like the agent (a BotAgent stays a BotAgent) under another name.
            player = copy.copy(player_for_game(_player_spec(run_dir, agent), game, config, seed))
            player.name = BLIND_NAME
            record_replay(player, opponent, seed, path, config, game=game)
    return path


def _run_game(run_dir: Path) -> tuple[Game, Any]:
    """The game of a run folder (``game:`` of its config.resolved.yaml; Duel without one) and its config."""
    from bcarena.experiments.config import game_setup

    path = run_dir / "config.resolved.yaml"
    options = (_read_config(path) if path.is_file() else {}).get("game") or {}
    if not isinstance(options, dict):
        raise RunFolderError(f"{path}: game: expected a mapping like {{name: boxing}}, got {options!r}")
    try:
        return game_setup(options)
    except (BcarenaError, TypeError, ValueError) as exc:  # an unknown game or option in a hand-edited file
        raise RunFolderError(f"{path}: game: {exc}") from None


def player_spec(run_dir: Path, agent: AgentResult) -> str:
    """What ``load_player`` plays for a leaderboard row (see ``_player_spec``); RunFolderError if it cannot."""
    return _player_spec(run_dir, agent)


def _player_spec(run_dir: Path, agent: AgentResult) -> str:
    """What ``load_player`` plays for a leaderboard row: a built-in player's name of the run's game (Duel: a bot
    or perturbed bot), or the agent folder."""
    if agent.kind == "bot":
        game = _run_game(run_dir)[0]
        for name in (agent.agent_id, agent.variant):
            if _is_bot_spec(name) if game.name == "duel" else name in game.players:
                return name
        known = sorted(BOTS) if game.name == "duel" else game.players
        raise RunFolderError(f"{agent.agent_id}: not a known bot of {game.name}; its built-in players are {known}")
    # The runner saves agents in <runs>/.cache beside <runs>/<experiment>/<run_id>: a hand-edited
    # results.json must not make the page load agents from anywhere else on the machine.
    runs = run_dir.parent.parent
    for folder in (Path(agent.agent_path).absolute(), run_dir / agent.agent_path) if agent.agent_path else ():
        if folder.is_dir():
            try:
                return str(inside(runs, folder, "agent_path"))
            except OutsideFolderError:
                raise RunFolderError(
                    f"agent folder {agent.agent_path!r} lies outside {runs}, the runs folder "
                    "of this run; the dashboard plays only agents saved there"
                ) from None
    raise RunFolderError(f"agent folder {agent.agent_path!r} not found (as given or relative to {run_dir})")


def _is_bot_spec(name: str) -> bool:
    """A bot name or a perturbed bot (``pro[skill_drop=0.9]``). ``load_player`` also takes folders and
    server URLs, which a bot row of a hand-edited results.json must not smuggle in."""
    from bcarena.eval.errors import EvalError
    from bcarena.eval.perturbed import parse_perturbed

    if name in BOTS:
        return True
    try:
        return parse_perturbed(name) is not None
    except EvalError:
        return False


# ---------------------------------------------------------------------------------------- launching
def streamlit_available() -> bool:
    return importlib.util.find_spec("streamlit") is not None


def launch(runs: Path, port: int, host: str = "127.0.0.1", open_browser: bool = False) -> NoReturn:
    """Become ``streamlit run dashboard_app.py`` on ``host:port`` reading ``runs``.

    The process is replaced (exec), not wrapped, so Ctrl+C and ``kill`` reach the server itself
    and never leave an orphaned server behind.
    """
    if not streamlit_available():
        raise DashboardUnavailable(f"the dashboard needs Streamlit, which is not installed: {INSTALL_HINT}")
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_FILE),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        str(not open_browser).lower(),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, {**os.environ, RUNS_ENV: str(runs.resolve())})
