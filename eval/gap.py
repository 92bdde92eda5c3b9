"""The offline-online gap report: how well does each offline metric predict win rate across agents?

For every agent: the offline metrics on a dataset split (``evaluate_offline``) and the win rate
in matches against one or more opponents (``evaluate_matches``, the same seed list for every
agent). For every offline metric: Spearman's and Kendall's rank correlations with win rate across
the agents, each with a bootstrap 95% interval over agents, and which metric predicts best.
Output: a JSON table, a Markdown table and scatter plots (accuracy vs win rate, event-F1 vs win rate).

The game is the dataset's (any registered game): agents must be that game's (agent folders, Agents or
server URLs; Duel also takes bots), opponents are its built-in opponents or agents (Boxing: ``cpu``).

Without trained agents on Duel, perturbed experts (``pro[skill_drop=0.9]``, ``pro[random=0.3]``, see
``bcarena.eval.perturbed``) make a graded set of clones.

The agents must be distinct: the same agent twice (the same bot, folder, server or identical
weights) would rank exactly like itself and inflate every correlation (``check_distinct``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import Agent, BotAgent
from bcarena.agents.specs import AGENT_FILE
from bcarena.envs.files import sha256_file, write_json, write_text
from bcarena.envs.games import get_game
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import MatchReport, display_names, evaluate_matches, player_for_game
from bcarena.eval.offline import ANY_SKILL, OfflineReport, evaluate_offline
from bcarena.eval.plots import figure, save_figure
from bcarena.eval.stats import RankCorrelation, kendall_bootstrap, spearman_bootstrap, wilson_interval
from bcarena.recordings.dataset import ActionDataset

HEADLINE_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "js_divergence",
    f"event_f1_{ANY_SKILL}",
    f"event_recall_{ANY_SKILL}",
    f"event_precision_{ANY_SKILL}",
)
SCATTER_METRICS: tuple[str, ...] = ("accuracy", f"event_f1_{ANY_SKILL}")


# ---------------------------------------------------------------------------------------- report
@dataclass
class AgentGapRow:
    """One agent: its win rate (mean over opponents) and its offline metrics."""

    agent: str
    win_rate: float
    win_rate_by_opponent: dict[str, float]
    win_rate_ci95: tuple[float, float]  # Wilson interval of all its matches pooled
    offline: dict[str, float | None]  # OfflineReport.scalars()


@dataclass
class GapReport:
    """Offline metrics vs win rate across agents. JSON via ``to_dict``, Markdown via ``to_markdown``."""

    dataset: str
    split: str
    tolerance: int
    opponents: list[str]
    matches_per_opponent: int
    seed: int
    rows: list[AgentGapRow]
    correlations: dict[str, RankCorrelation]  # offline metric -> Spearman vs win rate
    kendall: dict[str, RankCorrelation] = field(default_factory=dict)  # offline metric -> Kendall's tau-b
    # summary metrics the best predictor is chosen from (empty: all); per-class ones are listed, not chosen from,
    # as the largest of dozens of correlations would flatter itself
    headline: list[str] = field(default_factory=list)
    game: str = "duel"
    offline_reports: list[OfflineReport] = field(default_factory=list, repr=False, compare=False)
    match_reports: list[list[MatchReport]] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "game": self.game,
            "dataset": self.dataset,
            "split": self.split,
            "tolerance": self.tolerance,
            "opponents": self.opponents,
            "matches_per_opponent": self.matches_per_opponent,
            "seed": self.seed,
            "agents": [{**asdict(r), "win_rate_ci95": list(r.win_rate_ci95)} for r in self.rows],
            "correlations": {k: v.to_dict() for k, v in self.correlations.items()},
            "kendall": {k: v.to_dict() for k, v in self.kendall.items()},
            "best_predictor": self.best_predictor(),
            "summary": self.summary(),
        }

    def best_predictor(self) -> str | None:
        """The ``headline`` metric whose Spearman rho with win rate is largest in size (None if none is defined)."""
        among = set(self.headline or self.correlations)
        defined = {m: c.rho for m, c in self.correlations.items() if c.rho is not None and m in among}
        return max(defined, key=lambda m: (abs(defined[m]), m)) if defined else None

    def summary(self) -> str:
        """One sentence: which offline metric best predicts win rate, and how well (both coefficients, CIs)."""
        best = self.best_predictor()
        if best is None:
            return "No offline metric has a defined rank correlation with win rate."
        among = f"of {len(self.headline)} summary metrics " if self.headline else ""
        text = f"Best predictor {among}of win rate across {len(self.rows)} agents: {best} "
        text += f"(Spearman rho {_coef(self.correlations[best])}"
        if best in self.kendall:
            text += f", Kendall tau {_coef(self.kendall[best])}"
        sign = "higher" if (self.correlations[best].rho or 0) > 0 else "lower"
        return text + f"; {sign} is better)."

    def to_markdown(self) -> str:
        lines = [
            f"# Offline-online gap ({len(self.rows)} agents)",
            "",
            f"Offline: `{self.dataset}` split `{self.split}`, event tolerance +-{self.tolerance} frames. "
            f"Online: {self.matches_per_opponent} matches (seeds {self.seed}...) against "
            f"{', '.join(self.opponents)}.",
            "",
            "## Agents",
            "",
            "| agent | win rate [95% CI] | accuracy | balanced acc. | macro-F1 | event-F1 (any skill) |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(self.rows, key=lambda r: -r.win_rate):
            lo, hi = r.win_rate_ci95
            cells = [
                _fmt(r.offline.get(m)) for m in ("accuracy", "balanced_accuracy", "macro_f1", f"event_f1_{ANY_SKILL}")
            ]
            lines.append(f"| {r.agent} | {r.win_rate:.1%} [{lo:.1%}, {hi:.1%}] | " + " | ".join(cells) + " |")
        lines += [
            "",
            "## Does the offline metric rank agents like win rate does?",
            "",
            "| offline metric | Spearman rho [bootstrap 95% CI] | p | Kendall tau [bootstrap 95% CI] | p | agents "
            "| note |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in self.correlations.items():
            k = self.kendall.get(name)
            p = f"{c.p_value:.3g}" if c.p_value is not None else ""
            kp = f"{k.p_value:.3g}" if k is not None and k.p_value is not None else ""
            kendall = _coef(k) if k is not None else "—"
            lines.append(f"| {name} | {_coef(c)} | {p} | {kendall} | {kp} | {c.n} | {c.note or ''} |")
        return "\n".join(lines + ["", self.summary()]) + "\n"

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """gap.json, gap.md and one scatter PNG per metric in ``SCATTER_METRICS`` into ``folder``."""
        folder = Path(folder)
        paths = {
            "json": write_json(folder / "gap.json", self.to_dict()),
            "markdown": write_text(folder / "gap.md", self.to_markdown()),
        }
        for metric in SCATTER_METRICS:
            paths[f"scatter_{metric}"] = self.scatter(metric, folder / f"{metric}_vs_win_rate.png")
        return paths

    def scatter(self, metric: str, path: str | os.PathLike) -> Path:
        """Offline ``metric`` (x) against win rate (y, Wilson 95% bars), one labelled point per agent."""
        fig, ax = figure((6.5, 4.8))
        undefined = []
        for r in self.rows:
            x = r.offline.get(metric)
            if x is None:
                undefined.append(r.agent)
                continue
            lo, hi = r.win_rate_ci95
            ax.errorbar([x], [r.win_rate], yerr=[[r.win_rate - lo], [hi - r.win_rate]], fmt="o", capsize=3)
            ax.annotate(r.agent, (x, r.win_rate), textcoords="offset points", xytext=(5, 4), fontsize=7)
        c = self.correlations.get(metric)
        rho = "undefined" if c is None or c.rho is None else f"{c.rho:+.2f}"
        ci = f" [{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}]" if c is not None and c.ci95 else ""
        ax.set_title(f"{metric} vs win rate: Spearman rho {rho}{ci}", fontsize=10)
        ax.set_xlabel(f"{metric} (offline, {self.split} split)")
        ax.set_ylabel(f"win rate vs {', '.join(self.opponents)}")
        ax.set_ylim(-0.05, 1.05)
        if undefined:
            ax.text(0.01, 0.01, f"undefined for: {', '.join(undefined)}", transform=ax.transAxes, fontsize=7)
        return save_figure(fig, path)


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _coef(c: RankCorrelation) -> str:
    """``+0.78 [+0.32, +0.97]``: a coefficient with its interval (``undefined`` where it has none)."""
    if c.rho is None:
        return "undefined"
    return f"{c.rho:+.2f} [{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}]" if c.ci95 else f"{c.rho:+.2f} [undefined]"


def rank_correlations(
    rows: Sequence[AgentGapRow], metrics: Sequence[str], n_boot: int = 2000, seed: int = 0
) -> tuple[dict[str, RankCorrelation], dict[str, RankCorrelation]]:
    """(Spearman, Kendall) of each offline metric of ``rows`` with their win rates, bootstrap CIs over agents."""
    win_rates = [r.win_rate for r in rows]
    values = {m: [r.offline.get(m) for r in rows] for m in metrics}
    spearman = {m: spearman_bootstrap(values[m], win_rates, n_boot=n_boot, seed=seed) for m in metrics}
    kendall = {m: kendall_bootstrap(values[m], win_rates, n_boot=n_boot, seed=seed) for m in metrics}
    return spearman, kendall


# agent.json keys that name or describe an agent without changing how it plays
_DESCRIPTIVE_KEYS = ("name", "info", "bcarena_version")


def check_distinct(specs: Sequence[str | os.PathLike | Agent], players: Sequence[Agent]) -> None:
    """Refuse the same agent given twice (``specs`` as given, ``players`` as loaded), naming both."""
    seen: dict[tuple[str, str], str] = {}
    for spec, player in zip(specs, players):
        label = str(spec) if isinstance(spec, (str, os.PathLike)) else spec.name
        for key, how in _identities(spec, player):
            if key in seen:
                raise EvalError(
                    f"agents {seen[key]!r} and {label!r} are the same agent ({how}); a rank correlation "
                    f"across agents needs distinct agents: drop one"
                )
            seen[key] = label


def _identities(spec: str | os.PathLike | Agent, player: Agent) -> list[tuple[tuple[str, str], str]]:
    """What makes two gap-report agents one: [((kind, value), what they share)]."""
    if isinstance(player, BotAgent):  # bot names and perturbed-bot names are canonical
        config = json.dumps(player.bot.config.to_dict(), sort_keys=True)
        return [(("bot", f"{player.name} {config}"), f"both are the bot {player.name!r}")]
    if isinstance(spec, Agent):
        return [(("object", str(id(spec))), "the same Agent object")]
    text = str(spec)
    if text.startswith(("http://", "https://")):
        return [(("url", text.rstrip("/")), "the same server URL")]
    folder = Path(text).resolve()
    return [
        (("folder", str(folder)), f"the same folder {folder}"),
        (("content", fingerprint(folder)), "identical weights and settings in both folders"),
    ]


def fingerprint(folder: Path) -> str:
    """sha256 of what decides how a saved agent plays: its weight files and agent.json settings.

    Names, training provenance and the bcarena version are left out, so a copied or renamed
    folder has the fingerprint of its original; logs, curves and checkpoints are left out too.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if path.name == AGENT_FILE:
            settings = json.loads(path.read_text())
            for key in _DESCRIPTIVE_KEYS:
                settings.pop(key, None)
            digest.update(f"{relative}\0{json.dumps(settings, sort_keys=True)}\0".encode())
        elif path.suffix == ".safetensors":
            digest.update(f"{relative}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


def gap_report(
    agents: Sequence[str | Agent],
    dataset: ActionDataset,
    opponents: Sequence[str | Agent],
    matches: int = 200,
    seed: int = 0,
    split: str = "test",
    tolerance: int = 2,
    both_sides: bool = False,
    config: Any = None,
    n_boot: int = 2000,
    progress: bool = False,
    metrics: tuple[str, ...] | None = None,
) -> GapReport:
    """Offline metrics and win rates of ``agents``, and each metric's rank correlation with win rate.

    The game is the dataset's; ``config`` is its config (default: the game's defaults)."""
    if len(agents) < 3:
        raise EvalError(f"a gap report ranks agents: it needs at least 3 distinct agents, got {len(agents)}")
    if not opponents:
        raise EvalError("a gap report needs at least one opponent")
    if matches < 1:
        raise EvalError(f"matches must be >= 1, got {matches}")
    game = get_game(str(dataset.manifest["game"]), str(dataset.path or "dataset"))
    players = [player_for_game(a, game, config) for a in agents]
    scripted = [p.name for p in players if not isinstance(p, Agent)]
    if scripted:
        raise EvalError(
            f"{scripted}: built-in {game.name} players have no offline predictions; gap agents are agent folders, "
            "Agents or server URLs"
        )
    check_distinct(agents, players)
    rivals = [player_for_game(o, game, config) for o in opponents]
    names = display_names(agents, players)
    offline_reports = [evaluate_offline(agent, dataset, split, tolerance) for agent in players]
    wanted = list(metrics or offline_reports[0].scalars())
    unknown = [m for m in wanted if m not in offline_reports[0].scalars()]
    if unknown:
        raise EvalError(f"unknown offline metric(s) {unknown}; available: {sorted(offline_reports[0].scalars())}")
    ordered = [m for m in HEADLINE_METRICS if m in wanted] + [m for m in wanted if m not in HEADLINE_METRICS]
    rows, match_reports = [], []
    for name, agent, offline in tqdm(
        list(zip(names, players, offline_reports)), desc="gap report: matches", unit="agent", disable=not progress
    ):
        online = [evaluate_matches(agent, rival, matches, seed, both_sides, config, game=game.name) for rival in rivals]
        wins, total = sum(r.wins for r in online), sum(r.matches for r in online)
        rows.append(
            AgentGapRow(
                agent=name,
                win_rate=float(np.mean([r.win_rate for r in online])),
                win_rate_by_opponent={r.opponent: r.win_rate for r in online},
                win_rate_ci95=wilson_interval(wins, total),
                offline=offline.scalars(),
            )
        )
        match_reports.append(online)
    correlations, kendall = rank_correlations(rows, ordered, n_boot, seed)
    return GapReport(
        dataset=str(dataset.path) if dataset.path is not None else "dataset",
        split=split,
        tolerance=tolerance,
        opponents=[r.name for r in rivals],
        matches_per_opponent=matches,
        seed=seed,
        rows=rows,
        correlations=correlations,
        kendall=kendall,
        headline=[m for m in HEADLINE_METRICS if m in ordered],
        game=game.name,
        offline_reports=offline_reports,
        match_reports=match_reports,
    )
