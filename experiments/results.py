"""The run folder: what one experiment run leaves behind, and the only thing the dashboard reads.

Layout of ``runs/<experiment>/<run_id>/``:
  config.resolved.yaml   the experiment with every default filled in
  environment.json       versions, git commit, python, platform, start/end times, wall seconds, and
                         ``complete``: false from the run's start until its last file is written
  results.json           ``RunResults`` (below) as JSON (an agent per trained agent and decoding: ``naive-s0``,
                         ``naive-s0@sample``); offline metrics under ``OfflineReport.scalars`` names
                         plus ``RUN_OFFLINE_METRICS`` (older runs' names: ``LEGACY_OFFLINE_METRICS``)
  table.md               the printed offline-vs-online table, as Markdown
  leaderboard.parquet    one row per agent (``LEADERBOARD_COLUMNS``), best first
  dataset_stats.json     class counts / event counts of the dataset (and its manifest name)
  curves/<agent_id>.json training history: list of {epoch, train_loss, val_<metric>...}
  confusion/<agent_id>.json  {"labels": [...], "matrix": [[...]]} on the offline split
  plots/*.png            accuracy_vs_winrate.png, class_distribution.png, training_curves.png, ...
  replays/*.mp4|*.gif    replays; side_by_side.mp4 puts two agents against one opponent and seed
  preferences.jsonl      blind A/B judgements added by people in the dashboard (append-only)
  aggregates.json|.md    with >= 3 seeds (or ``evaluation.aggregates``): win rate across seeds per recipe
                         (IQM, probability of improvement, paired tests; ``eval.stats.Aggregates``)
  performance_profile.png  fraction of (seed x opponent) runs with win rate > tau, per recipe
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bcarena.envs.errors import BcarenaError
from bcarena.envs.files import atomic_file, write_json

LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "agent_id",
    "variant",
    "seed",
    "kind",
    "decoding",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "skill_event_recall",
    "skill_event_f1",
    "opponent",
    "matches",
    "win_rate",
    "win_rate_low",
    "win_rate_high",
    "rating_mu",
    "rating_sigma",
    "latency_ms_p50",
)
# Short run-folder names of the eval layer's skill-event metrics (``OfflineReport.scalars`` names): a predicted
# skill counts if the player pressed one within +-k frames. Training's ``skill_frame_recall`` counts frames instead.
RUN_OFFLINE_METRICS = {"skill_event_recall": "event_recall_any_skill", "skill_event_f1": "event_f1_any_skill"}
# Names run folders written before the frame/event split carry; read as the current ones (the one mapping).
LEGACY_OFFLINE_METRICS = {
    "skill_recall": "skill_event_recall",
    "skill_f1": "skill_event_f1",
    "event_f1": "skill_event_f1",
}
RESULTS_FILE, LEADERBOARD_FILE, PREFERENCES_FILE = "results.json", "leaderboard.parquet", "preferences.jsonl"
ENVIRONMENT_FILE = "environment.json"


class RunNotFoundError(BcarenaError, FileNotFoundError):
    """A folder is not a finished run folder: it has no results file."""


@dataclass
class AgentResult:
    """Everything measured about one trained agent (or a reference bot)."""

    agent_id: str  # "<variant>-s<seed>", or the bot's name for references
    variant: str
    seed: int | None
    kind: str  # "bc", "composite", "bot"
    agent_path: str | None  # folder of the saved agent (None for bots)
    offline: dict[str, Any] = field(default_factory=dict)  # metric name -> value (None = undefined)
    online: dict[str, dict[str, Any]] = field(default_factory=dict)  # opponent -> match summary
    latency_ms_p50: float | None = None
    error: str | None = None  # set when this variant failed; the run still finishes
    decoding: str = "argmax"  # how its weights pick actions: argmax, sample, T2, thresholds, calibrated

    def __post_init__(self) -> None:
        if isinstance(self.offline, dict):
            self.offline = current_offline_names(self.offline)


def current_offline_names(offline: dict[str, Any]) -> dict[str, Any]:
    """``offline`` metrics with ``LEGACY_OFFLINE_METRICS`` keys (older run folders and caches) renamed; a
    current key wins over a legacy one."""
    legacy = {k: v for k, v in offline.items() if k in LEGACY_OFFLINE_METRICS}
    if not legacy:
        return offline
    current = {k: v for k, v in offline.items() if k not in LEGACY_OFFLINE_METRICS}
    return {**{LEGACY_OFFLINE_METRICS[k]: v for k, v in legacy.items()}, **current}


@dataclass
class RunResults:
    experiment: str
    run_id: str
    agents: list[AgentResult]
    primary_opponent: str
    gap_report: dict[str, Any] | None = None
    ratings: dict[str, dict[str, float]] | None = None  # agent_id -> {mu, sigma, ordinal}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResults:
        agents = [AgentResult(**a) for a in data["agents"]]
        return cls(**{**data, "agents": agents})

    def leaderboard(self) -> pd.DataFrame:
        """One row per agent with ``LEADERBOARD_COLUMNS``, sorted by win rate then balanced accuracy."""
        rows = []
        for a in self.agents:
            online = a.online.get(self.primary_opponent, {})
            rating = (self.ratings or {}).get(a.agent_id, {})
            rows.append(
                {
                    "agent_id": a.agent_id,
                    "variant": a.variant,
                    "seed": a.seed,
                    "kind": a.kind,
                    "decoding": a.decoding if a.kind != "bot" else None,
                    "accuracy": a.offline.get("accuracy"),
                    "balanced_accuracy": a.offline.get("balanced_accuracy"),
                    "macro_f1": a.offline.get("macro_f1"),
                    "skill_event_recall": a.offline.get("skill_event_recall"),
                    "skill_event_f1": a.offline.get("skill_event_f1"),
                    "opponent": self.primary_opponent,
                    "matches": online.get("matches"),
                    "win_rate": online.get("win_rate"),
                    "win_rate_low": online.get("win_rate_low"),
                    "win_rate_high": online.get("win_rate_high"),
                    "rating_mu": rating.get("mu"),
                    "rating_sigma": rating.get("sigma"),
                    "latency_ms_p50": a.latency_ms_p50,
                }
            )
        table = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
        return table.sort_values(
            ["win_rate", "balanced_accuracy"], ascending=False, na_position="last", ignore_index=True
        )


def save_results(run_dir: Path, results: RunResults) -> None:
    """Write ``results.json`` (values JSON lacks, such as paths, as text) and ``leaderboard.parquet``, atomically."""
    write_json(run_dir / RESULTS_FILE, results.to_dict(), default=str)
    with atomic_file(run_dir / LEADERBOARD_FILE) as tmp:
        results.leaderboard().to_parquet(tmp, index=False)


def load_results(run_dir: str | Path) -> RunResults:
    path = Path(run_dir) / RESULTS_FILE
    try:
        return RunResults.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RunNotFoundError(f"{path}: missing — not a bcarena run folder (or the run has not finished)") from None


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (any depth), newest first."""
    root = Path(root)
    runs = [p.parent for p in root.glob(f"**/{RESULTS_FILE}")]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)
