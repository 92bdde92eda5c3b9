"""What is in an action dataset: class distribution, events, imbalance, episode lengths (table + plot)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bcarena.envs.figures import pyplot, save_figure
from bcarena.recordings.dataset import EVENTS, SPLITS, ActionDataset


@dataclass
class DatasetStats:
    """Summary of a dataset. ``classes`` has one row per action: count, fraction, per-split counts, is_skill."""

    classes: pd.DataFrame
    event_counts: dict[str, int]
    imbalance_ratio: float  # most frequent / least frequent *present* class
    missing_classes: list[str]  # actions never labelled
    skill_fraction: float
    episode_lengths: np.ndarray  # (episodes,) frames
    lost_presses: dict[str, dict[str, int]]

    def to_json(self) -> dict:
        lengths = self.episode_lengths
        return {
            "classes": self.classes.reset_index().to_dict(orient="records"),
            "event_counts": self.event_counts,
            "imbalance_ratio": self.imbalance_ratio,
            "missing_classes": self.missing_classes,
            "skill_fraction": self.skill_fraction,
            "episode_lengths": {
                "count": int(lengths.size),
                "min": int(lengths.min()),
                "mean": float(lengths.mean()),
                "max": int(lengths.max()),
                "all": lengths.tolist(),
            },
            "lost_presses": self.lost_presses,
        }


def dataset_stats(dataset: ActionDataset) -> DatasetStats:
    table = dataset.table
    names = dataset.action_names
    actions = dataset.actions()
    counts = np.bincount(actions, minlength=len(names))
    classes = pd.DataFrame(
        {
            "action": names,
            "count": counts,
            "fraction": counts / max(1, counts.sum()),
            "is_skill": np.isin(np.arange(len(names)), dataset.skill_actions),
        }
    ).set_index("action")
    for split in SPLITS:
        rows = (table["split"] == split).to_numpy()
        classes[split] = np.bincount(actions[rows], minlength=len(names))
    present = counts[counts > 0]
    return DatasetStats(
        classes=classes,
        event_counts={e: int(dataset.events(e).sum()) for e in EVENTS},
        imbalance_ratio=float(present.max() / present.min()) if present.size else float("nan"),
        missing_classes=[n for n, c in zip(names, counts) if c == 0],
        skill_fraction=float(counts[dataset.skill_actions].sum() / max(1, counts.sum())),
        episode_lengths=table.groupby("episode").size().to_numpy(),
        lost_presses=dataset.manifest.get("lost_presses", {}),
    )


def plot_class_distribution(stats: DatasetStats, path: str | os.PathLike, title: str = "") -> Path:
    """Bar chart (log scale) of frames per action, skills highlighted; written atomically as PNG."""
    plt = pyplot()

    path = Path(path)
    classes = stats.classes
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(classes) + 2), 4), constrained_layout=True)
    colors = np.where(classes["is_skill"], "#d62728", "#1f77b4")
    bars = ax.bar(classes.index, np.maximum(classes["count"], 0.8), color=colors)
    for bar, fraction in zip(bars, classes["fraction"]):
        ax.annotate(
            f"{fraction:.1%}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_yscale("log")
    ax.set_ylabel("frames (log scale)")
    ax.set_title(
        title
        or f"action distribution: skills (red) {stats.skill_fraction:.1%} of frames, "
        f"imbalance {stats.imbalance_ratio:.0f}:1"
    )
    ax.tick_params(axis="x", rotation=45)
    return save_figure(fig, path)
