"""Matplotlib (Agg, no display needed) figures of the eval layer, saved atomically as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bcarena.envs.figures import pyplot, save_figure

__all__ = ["figure", "heatmap", "save_figure"]  # save_figure lives in envs/ (agents/ plots too); kept importable here


def figure(figsize: tuple[float, float] = (6.0, 4.5)):
    """A new (figure, axes) pair."""
    return pyplot().subplots(figsize=figsize)


def heatmap(
    matrix: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    path: str | os.PathLike,
    title: str,
    colorbar_label: str,
    fmt: str = "{:.0%}",
    vmin: float = 0.0,
    vmax: float = 1.0,
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """A labelled heatmap; NaN cells are blank (e.g. an agent against itself)."""
    fig, ax = figure((1.6 + 0.9 * len(col_labels), 1.2 + 0.7 * len(row_labels)))
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=vmin, vmax=vmax, cmap="RdYlGn")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    return save_figure(fig, path)
