"""The report of an experiment run: ratings, the gap report, plots, the results table and replay stills.

Everything here reads finished results (``RunResults``) and draws or writes them; the runner
(``experiments.runner``) decides when and where. What lands in the run folder (layout in
``experiments.results``):
  plots/accuracy_vs_winrate.png   frame accuracy against win rate, one point per agent (references as lines)
  plots/class_distribution.png    the dataset's frames per action, skills in red
  plots/side_by_side_still.png    one frame of the side-by-side replay
  plots/gap.json, gap.md, ...     the gap report (``eval.gap.GapReport.write``)
  table.md                        the printed offline-vs-online table, as Markdown
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.markup import escape
from rich.table import Table

from bcarena.envs.files import write_bytes
from bcarena.eval.gap import AgentGapRow, GapReport, rank_correlations
from bcarena.eval.plots import figure, save_figure
from bcarena.eval.stats import Aggregates, SeedRun, aggregate, wilson_interval
from bcarena.eval.tournament import PairingResult, compute_ratings
from bcarena.experiments.config import Experiment
from bcarena.experiments.results import RUN_OFFLINE_METRICS, AgentResult, RunResults
from bcarena.recordings.dataset import ActionDataset

# Offline metrics (OfflineReport.scalars names) ranked against win rate in a run's gap report.
GAP_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "event_recall_any_skill",
    "event_f1_any_skill",
    "expected_accuracy",
    "expected_skill_event_recall",
    "log_likelihood",
)
FAILED = "[red]failed[/]"  # the table cell of a failed agent (plain "failed" in Markdown)


def match_ratings(agents: list[AgentResult], opponent: str) -> dict[str, dict[str, float]]:
    """OpenSkill ratings {agent_id: {mu, sigma, ordinal}} from every agent's matches against ``opponent``.

    All agents met the same opponent on the same seeds, so their matches form one ladder with the
    opponent as the shared rung (it is rated too, but left out of the result).
    """
    names = [a.agent_id for a in agents] + [f"bot:{opponent}"]
    pairings = [
        PairingResult.from_winners(index, len(agents), np.asarray(a.online[opponent]["winners"]))
        for index, a in enumerate(agents)
        if opponent in a.online
    ]
    return {
        r.player: {"mu": r.mu, "sigma": r.sigma, "ordinal": r.ordinal}
        for r in compute_ratings(names, pairings)
        if not r.player.startswith("bot:")
    }


def gap_report(results: RunResults, exp: Experiment) -> GapReport | None:
    """Spearman and Kendall correlations of each offline metric (``gap_metrics``) with win rate across the agents
    evaluated both offline and online (win rate: the mean over opponents); None when fewer than 3 such agents."""
    rows = []
    for a in results.agents:
        if not a.offline or not a.online:
            continue
        wins = sum(o["wins"] for o in a.online.values())
        total = sum(o["matches"] for o in a.online.values())
        rows.append(
            AgentGapRow(
                agent=a.agent_id,
                win_rate=float(np.mean([o["win_rate"] for o in a.online.values()])),
                win_rate_by_opponent={k: o["win_rate"] for k, o in a.online.items()},
                win_rate_ci95=wilson_interval(wins, total),
                offline=a.offline,
            )
        )
    if len(rows) < 3:
        return None
    correlations, kendall = rank_correlations(rows, gap_metrics(rows), seed=exp.seed)
    ev = exp.evaluation
    return GapReport(
        dataset=results.experiment,
        split=ev.offline.split,
        tolerance=ev.offline.tolerance_frames,
        opponents=ev.opponents,
        matches_per_opponent=ev.matches,
        seed=ev.seed,
        rows=rows,
        correlations=correlations,
        kendall=kendall,
        headline=[m for m in (*GAP_METRICS, "js_divergence") if m in correlations],
    )


def gap_metrics(rows: list[AgentGapRow]) -> list[str]:
    """``GAP_METRICS`` first, then every other numeric offline metric of ``rows`` (run-folder aliases left out)."""
    names = list(GAP_METRICS)
    for row in rows:
        for name, value in row.offline.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and name not in names and name not in RUN_OFFLINE_METRICS:
                names.append(name)
    return names


def recipe_of(agent: AgentResult) -> str:
    """What seeds are aggregated over: the variant, with its decoding unless argmax (``naive@sample``)."""
    return agent.variant if agent.decoding in (None, "argmax") else f"{agent.variant}@{agent.decoding}"


def seed_runs(results: RunResults) -> list[SeedRun]:
    """Every trained agent's matches per opponent as ``SeedRun``s (the agent plays slot 0: winner 0 is a win)."""
    runs = []
    for a in results.agents:
        if a.kind == "bot" or a.error or a.seed is None:
            continue
        for opponent, online in a.online.items():
            winners = np.asarray(online["winners"])
            runs.append(SeedRun(recipe_of(a), int(a.seed), opponent, int(online["seed"]), winners == 0))
    return runs


def seed_aggregates(results: RunResults, exp: Experiment) -> Aggregates:
    """IQM, probability of improvement, paired tests and profiles across the run's training seeds (``eval.stats``)."""
    return aggregate(seed_runs(results), seed=exp.seed)


def plot_accuracy_vs_win_rate(results: RunResults, path: Path) -> Path:
    """Frame accuracy (x) against win rate vs the primary opponent (y, Wilson 95% bars); agents without
    offline metrics (reference bots) are dashed horizontal lines."""
    fig, ax = figure((7, 5))
    for index, row in results.leaderboard().iterrows():
        if row["win_rate"] is None or np.isnan(row["win_rate"]):
            continue
        if row["accuracy"] is None or np.isnan(row["accuracy"]):
            ax.axhline(row["win_rate"], ls="--", color="gray", lw=1)
            ax.text(
                0.01,
                row["win_rate"] + 0.01,
                f"{row['agent_id']} (reference)",
                color="gray",
                transform=ax.get_yaxis_transform(),
                fontsize=8,
            )
            continue
        yerr = [[row["win_rate"] - row["win_rate_low"]], [row["win_rate_high"] - row["win_rate"]]]
        ax.errorbar([row["accuracy"]], [row["win_rate"]], yerr=yerr, fmt="o", capsize=3)
        ax.annotate(
            row["agent_id"],
            (row["accuracy"], row["win_rate"]),
            textcoords="offset points",
            xytext=(5, 4 - 11 * (index % 3)),
            fontsize=8,
        )  # staggered: tied agents stay legible
    ax.set_xlabel("frame accuracy (offline, held-out episodes)")
    ax.set_ylabel(f"win rate vs {results.primary_opponent} (Wilson 95%)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Offline accuracy does not predict wins")
    return save_figure(fig, path, dpi=110)


def plot_class_distribution(dataset: ActionDataset, path: Path) -> Path:
    """Frames per action in the dataset (log scale), skills in red."""
    counts = dataset.manifest["class_counts"]
    names = list(counts) if isinstance(counts, dict) else dataset.action_names
    values = [counts[n] for n in names] if isinstance(counts, dict) else counts
    fig, ax = figure((7, 3.5))
    ax.bar(names, values, color=["tab:red" if i in dataset.skill_actions else "tab:blue" for i in range(len(names))])
    ax.set_yscale("log")
    ax.set_ylabel("frames (log scale)")
    ax.set_title("What the pro pressed: skills (red) are a few percent of frames")
    return save_figure(fig, path, dpi=110)


def save_still(video: Path, path: Path, position: float = 0.4) -> Path | None:
    """The frame at ``position`` (0..1 of its length) of ``video`` as a PNG; None if it cannot be decoded."""
    capture = cv2.VideoCapture(str(video))
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.set(cv2.CAP_PROP_POS_FRAMES, max(0, int(frames * position)))
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        return None
    encoded, png = cv2.imencode(".png", frame)
    return write_bytes(path, png.tobytes()) if encoded else None


def results_table(results: RunResults, opponents: list[str]) -> Table:
    """The offline-vs-online table: one row per agent (failed agents with their error), rich markup."""
    table = Table(title=f"{escape(results.experiment)}: offline (held-out episodes) vs online (matches)")
    columns = ["agent", "frame acc.", "balanced acc.", "skill-event recall", "skill-event F1"]
    columns += [f"win rate vs {o} [95% CI]" for o in opponents] + [f"skill use vs {opponents[0]}", "decoding"]
    for column in columns:
        table.add_column(escape(column), justify="left" if column == "agent" else "right")
    for a in results.agents:
        if a.error:
            table.add_row(escape(a.agent_id), FAILED, escape(a.error[:60]), *[""] * (len(columns) - 4), a.decoding)
            continue
        table.add_row(
            escape(a.agent_id) + (" (reference)" if a.kind == "bot" else ""),
            _pct(a.offline.get("accuracy")),
            _pct(a.offline.get("balanced_accuracy")),
            _pct(a.offline.get("skill_event_recall")),
            _pct(a.offline.get("skill_event_f1")),
            *[_win(a.online.get(o)) for o in opponents],
            _pct(a.online.get(opponents[0], {}).get("skill_use_rate")),
            "—" if a.kind == "bot" else a.decoding,
        )
    return table


def markdown_table(table: Table) -> str:
    """``table`` (from :func:`results_table`) as a Markdown table, markup removed."""

    def plain(cell: Any) -> str:
        return str(cell).replace(FAILED, "failed").replace("\\[", "[")

    lines = ["| " + " | ".join(plain(c.header) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(plain(cell) for cell in row) + " |" for row in zip(*[c.cells for c in table.columns])]
    return "\n".join(lines) + "\n"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.1%}"


def _win(online: dict[str, Any] | None) -> str:
    if not online:
        return "—"
    return f"{online['win_rate']:.1%} [{online['win_rate_low']:.1%}, {online['win_rate_high']:.1%}]"
