"""Statistics that report match results honestly.

Wilson intervals of win rates, Jensen-Shannon divergence of action distributions, rank correlations
(Spearman, Kendall) with bootstrap intervals across agents, and aggregates across training seeds with
rliable's methods (IQM with stratified-bootstrap intervals, probability of improvement, performance
profiles) plus paired tests on identical match seeds.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest, kendalltau, norm, rankdata, spearmanr, trim_mean, wilcoxon

from bcarena.envs.files import write_json, write_text
from bcarena.eval.errors import EvalError


def wilson_interval(successes: float, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion, as (low, high) within [0, 1].

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0% and 100%,
    which is exactly where the naive clone (0 wins) and the pro (~100%) sit.
    """
    if trials <= 0:
        raise ValueError(f"wilson_interval needs trials > 0, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within [0, trials={trials}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    z = norm.ppf(0.5 + confidence / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # At 0 or all successes the bound is exactly 0 or 1; rounding would leave e.g. 3e-18.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return float(low), float(high)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, within [0, 1]) between two count or probability vectors.

    0 means identical action distributions, 1 means disjoint supports. Symmetric and finite even
    where one side never uses an action, unlike KL divergence.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"js_divergence needs two 1-D vectors of one shape, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("js_divergence needs non-negative vectors with a positive sum")
    return float(jensenshannon(p, q, base=2) ** 2)


# ----------------------------------------------------------------------------- rank correlations
RANK_METHODS = ("spearman", "kendall")


@dataclass
class RankCorrelation:
    """A rank correlation between two per-agent series, with a bootstrap interval over agents.

    ``method`` is ``spearman`` (rho) or ``kendall`` (tau-b, ties counted as scipy does); the
    coefficient is in ``rho`` for either, so tables read one field.
    """

    rho: float | None  # None where undefined (fewer than 3 agents, or a constant series)
    ci95: tuple[float, float] | None
    p_value: float | None
    n: int  # agents with both values defined
    bootstrap_valid: int  # resamples with a defined coefficient (constant resamples are skipped)
    note: str | None = None  # why the coefficient or its interval is undefined
    method: str = "spearman"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return data


def _spearman_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (B, n) arrays: Pearson on ranks."""
    rx, ry = rankdata(xs, axis=1), rankdata(ys, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    return (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))


def _kendall_rows(xs: np.ndarray, ys: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Kendall's tau-b of each row pair of (B, n) arrays: sum sx*sy / sqrt(sum sx^2 * sum sy^2) over pairs."""
    out = []
    for start in range(0, xs.shape[0], chunk):  # (chunk, n, n) sign matrices stay a few MB
        sx = np.sign(xs[start : start + chunk, :, None] - xs[start : start + chunk, None, :])
        sy = np.sign(ys[start : start + chunk, :, None] - ys[start : start + chunk, None, :])
        out.append((sx * sy).sum(axis=(1, 2)) / np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2))))
    return np.concatenate(out) if out else np.zeros(0)


def _defined(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def rank_correlation_bootstrap(
    x, y, method: str = "spearman", n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RankCorrelation:
    """Spearman's rho or Kendall's tau-b of ``x`` and ``y`` (one value per agent) with a percentile bootstrap CI.

    Agents are resampled with replacement; a resample whose values are constant in x or y has no
    defined coefficient and is skipped (``bootstrap_valid`` counts the rest). Undefined values
    (None/NaN) in either series drop that agent.
    """
    if method not in RANK_METHODS:
        raise ValueError(f"rank correlation method must be one of {RANK_METHODS}, got {method!r}")
    x, y = _defined(x), _defined(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y need one value per agent each, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n == 0:
        return RankCorrelation(None, None, None, 0, 0, "undefined for every agent (e.g. a class nobody uses)", method)
    if n < 3:
        return RankCorrelation(None, None, None, n, 0, f"needs >= 3 agents with both values, got {n}", method)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return RankCorrelation(None, None, None, n, 0, "one series is constant across agents: no ranking", method)
    coefficient, p_value = spearmanr(x, y) if method == "spearman" else kendalltau(x, y)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    xs, ys = x[idx], y[idx]
    valid = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    rows = (_spearman_rows if method == "spearman" else _kendall_rows)(xs[valid], ys[valid])
    if rows.size == 0:
        return RankCorrelation(
            float(coefficient), None, float(p_value), n, 0, "no bootstrap resample had varying ranks", method
        )
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(rows, [alpha, 1 - alpha])
    return RankCorrelation(float(coefficient), (float(lo), float(hi)), float(p_value), n, int(rows.size), None, method)


def spearman_bootstrap(x, y, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> RankCorrelation:
    """Spearman's rho with a bootstrap interval over agents (see :func:`rank_correlation_bootstrap`)."""
    return rank_correlation_bootstrap(x, y, "spearman", n_boot, seed, confidence)


def kendall_bootstrap(x, y, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> RankCorrelation:
    """Kendall's tau-b with a bootstrap interval over agents (see :func:`rank_correlation_bootstrap`)."""
    return rank_correlation_bootstrap(x, y, "kendall", n_boot, seed, confidence)


# --------------------------------------------------------------------- aggregates across seeds
# The methods of rliable (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"),
# in numpy: a "run" is one trained agent (recipe x training seed), a "task" one opponent, a score
# a win rate. Stratified bootstrap = each opponent's runs resampled with replacement on their own.
PROFILE_TAUS = np.linspace(0.0, 1.0, 101)
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class SeedRun:
    """One trained agent (``recipe`` trained with ``seed``) against one ``opponent``.

    ``wins`` (matches,) bool: the agent won match i, played on match seed ``match_seed + i``
    (a draw is not a win). Every agent of a study meets the same match seeds.
    """

    recipe: str
    seed: int
    opponent: str
    match_seed: int
    wins: np.ndarray

    @property
    def win_rate(self) -> float:
        return float(np.mean(self.wins))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its (stratified-bootstrap, percentile) 95% interval."""

    value: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": list(self.ci95)}

    def text(self, percent: bool = True) -> str:
        f = "{:.1%}" if percent else "{:.2f}"
        return f"{f.format(self.value)} [{f.format(self.ci95[0])}, {f.format(self.ci95[1])}]"


def iqm(scores) -> float:
    """Interquartile mean of all values of ``scores``: the mean of the middle 50% (rliable's ``aggregate_iqm``)."""
    return float(trim_mean(np.asarray(scores, dtype=np.float64).ravel(), 0.25))


def stratified_resamples(scores: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, runs, tasks) resamples of ``scores`` (runs, tasks): each task's runs drawn with replacement."""
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(n_boot, runs, tasks))
    return scores[idx, np.arange(tasks)]


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def iqm_estimate(scores, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> Estimate:
    """IQM of ``scores`` (runs, tasks) with its stratified-bootstrap percentile interval."""
    scores = np.asarray(scores, dtype=np.float64)
    boot = stratified_resamples(scores, n_boot, np.random.default_rng(seed)).reshape(n_boot, -1)
    return Estimate(iqm(scores), _interval(trim_mean(boot, 0.25, axis=1), confidence))


def mean_estimate(scores, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> Estimate:
    """Mean of ``scores`` (runs, tasks) with its stratified-bootstrap percentile interval."""
    scores = np.asarray(scores, dtype=np.float64)
    boot = stratified_resamples(scores, n_boot, np.random.default_rng(seed)).reshape(n_boot, -1)
    return Estimate(float(scores.mean()), _interval(boot.mean(axis=1), confidence))


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) (ties count one half) per task, averaged over tasks; x (..., n, T), y (..., m, T) -> (...)."""
    gt = (x[..., :, None, :] > y[..., None, :, :]).mean(axis=(-3, -2))
    eq = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return (gt + 0.5 * eq).mean(axis=-1)


def probability_of_improvement(x, y, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> Estimate:
    """P(a run of X scores above a run of Y on the same task), averaged over tasks, with a stratified-bootstrap CI.

    ``x`` (n, tasks) and ``y`` (m, tasks) are win rates; as rliable's ``probability_of_improvement``
    (the Mann-Whitney U statistic / (n * m) per task). 0.5 means no difference; identical samples give 0.5.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"probability_of_improvement needs (runs, tasks) arrays with one task count, got {x.shape}, {y.shape}"
        )
    rng = np.random.default_rng(seed)
    boot = _poi(stratified_resamples(x, n_boot, rng), stratified_resamples(y, n_boot, rng))
    return Estimate(float(_poi(x, y)), _interval(boot, confidence))


def profile(scores, taus: np.ndarray = PROFILE_TAUS) -> np.ndarray:
    """Performance profile: the fraction of runs (all runs x tasks) with a score above each tau, shape (len(taus),).

    Non-increasing in tau by construction (rliable's run-score distribution).
    """
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    return (flat[None, :] > np.asarray(taus)[:, None]).mean(axis=1)


@dataclass(frozen=True)
class ProfileCurve:
    fraction: list[float]  # at each tau of ``Aggregates.taus``
    low: list[float]
    high: list[float]


def profile_curve(
    scores, taus: np.ndarray = PROFILE_TAUS, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> ProfileCurve:
    """:func:`profile` of ``scores`` (runs, tasks) with a pointwise stratified-bootstrap band."""
    scores = np.asarray(scores, dtype=np.float64)
    boot = stratified_resamples(scores, n_boot, np.random.default_rng(seed)).reshape(n_boot, -1)
    curves = (boot[:, None, :] > np.asarray(taus)[None, :, None]).mean(axis=2)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(curves, [alpha, 1 - alpha], axis=0)
    return ProfileCurve(profile(scores, taus).tolist(), lo.tolist(), hi.tolist())


@dataclass(frozen=True)
class PairedTest:
    """ "Does A beat B?" on identical match seeds.

    McNemar's exact test: over matches paired by (training seed, opponent, match seed), the
    discordant ones (one side won, the other did not) are a binomial(a_only + b_only, 1/2) under
    "no difference"; two-sided p. It asks about these trained agents on these matches. The
    Wilcoxon signed-rank test on the per-(seed, opponent) win-rate differences asks about the
    recipes across training seeds (None when every difference is 0).
    """

    a: str
    b: str
    matches: int  # paired matches
    a_only: int  # matches A won and B did not
    b_only: int
    mcnemar_p: float
    seed_pairs: int  # (training seed, opponent) pairs
    mean_difference: float  # mean of A's minus B's win rate over the seed pairs
    wilcoxon_p: float | None

    @property
    def verdict(self) -> str:
        if self.mcnemar_p >= SIGNIFICANCE or self.a_only == self.b_only:
            return "no significant difference"
        return f"{self.a} beats {self.b}" if self.a_only > self.b_only else f"{self.b} beats {self.a}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _paired_runs(a: list[SeedRun], b: list[SeedRun]) -> list[tuple[SeedRun, SeedRun]]:
    """A's and B's runs matched by (training seed, opponent), their match seeds checked identical."""
    by_key = {(r.seed, r.opponent): r for r in b}
    pairs = [(r, by_key[(r.seed, r.opponent)]) for r in a if (r.seed, r.opponent) in by_key]
    if not pairs:
        raise EvalError(
            f"paired test {a[0].recipe} vs {b[0].recipe}: no (training seed, opponent) in common; "
            "paired tests need both recipes trained with the same seeds and played against the same opponents"
        )
    for ra, rb in pairs:
        if ra.match_seed != rb.match_seed or ra.wins.size != rb.wins.size:
            raise EvalError(
                f"paired test {ra.recipe} vs {rb.recipe}: seed {ra.seed} vs {ra.opponent} played match seeds "
                f"{ra.match_seed}..{ra.match_seed + ra.wins.size - 1} for {ra.recipe} but "
                f"{rb.match_seed}..{rb.match_seed + rb.wins.size - 1} for {rb.recipe}; paired tests need identical "
                "match seeds (one evaluation.seed and evaluation.matches for both)"
            )
    return pairs


def paired_test(a: list[SeedRun], b: list[SeedRun]) -> PairedTest:
    """McNemar's exact test and the seed-level Wilcoxon test of recipe A's runs against recipe B's (see PairedTest)."""
    pairs = _paired_runs(a, b)
    wa = np.concatenate([ra.wins for ra, _ in pairs]).astype(bool)
    wb = np.concatenate([rb.wins for _, rb in pairs]).astype(bool)
    a_only, b_only, mcnemar_p = mcnemar(wa, wb)
    diffs = np.array([ra.win_rate - rb.win_rate for ra, rb in pairs])
    wilcoxon_p = None if not np.any(diffs != 0) else float(wilcoxon(diffs).pvalue)
    return PairedTest(
        a[0].recipe, b[0].recipe, int(wa.size), a_only, b_only, mcnemar_p, len(pairs), float(diffs.mean()), wilcoxon_p
    )


def mcnemar(a_wins, b_wins) -> tuple[int, int, float]:
    """Wins (n,) bool of A and of B in the same n matches: (matches only A won, only B won, McNemar's exact
    two-sided p, the binomial test of the discordant matches at 1/2; 1.0 when there are none)."""
    wa, wb = np.asarray(a_wins, dtype=bool), np.asarray(b_wins, dtype=bool)
    if wa.shape != wb.shape or wa.ndim != 1:
        raise EvalError(f"paired wins need two (n,) arrays over the same matches, got shapes {wa.shape} and {wb.shape}")
    a_only, b_only = int((wa & ~wb).sum()), int((wb & ~wa).sum())
    p = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return a_only, b_only, p


@dataclass(frozen=True)
class PairedDifference:
    """A's win rate minus B's over the same matches, with a paired bootstrap interval and McNemar's test."""

    matches: int
    a_win_rate: float
    b_win_rate: float
    difference: float
    ci95: tuple[float, float]  # percentile interval of the difference, matches resampled in pairs
    a_only: int
    b_only: int
    mcnemar_p: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci95": list(self.ci95)}


def paired_difference(a_wins, b_wins, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> PairedDifference:
    """A vs B on identical match seeds (one training seed is enough): wins (n,) bool each (see ``mcnemar``)."""
    a_only, b_only, p = mcnemar(a_wins, b_wins)
    wa, wb = np.asarray(a_wins, dtype=float), np.asarray(b_wins, dtype=float)
    rows = np.random.default_rng(seed).integers(0, wa.size, size=(n_boot, wa.size))
    boot = (wa[rows] - wb[rows]).mean(axis=1)
    ci95 = _interval(boot, confidence)
    return PairedDifference(
        int(wa.size), float(wa.mean()), float(wb.mean()), float((wa - wb).mean()), ci95, a_only, b_only, p
    )


@dataclass(frozen=True)
class Comparison:
    """Recipe ``a`` against recipe ``b``: probability of improvement and the paired tests."""

    a: str
    b: str
    poi: Estimate  # P(a run of a beats a run of b), 0.5 = no difference
    test: PairedTest

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "probability_of_improvement": self.poi.to_dict(),
            "paired": self.test.to_dict(),
        }


@dataclass
class Aggregates:
    """Win rate across training seeds, per recipe: IQM and mean (stratified bootstrap over seeds within each
    opponent), probability of improvement and paired tests between recipes, performance profiles.

    ``recipes`` are ordered best IQM first; ``scores[recipe]`` is (seeds, opponents) win rates.
    """

    recipes: list[str]
    opponents: list[str]
    seeds: dict[str, list[int]]
    scores: dict[str, list[list[float]]]
    iqm: dict[str, Estimate]
    mean: dict[str, Estimate]
    comparisons: list[Comparison]
    taus: list[float]
    profiles: dict[str, ProfileCurve]
    n_boot: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "rliable methods in numpy: IQM and mean with stratified-bootstrap percentile intervals "
            "(runs = training seeds, tasks = opponents), probability of improvement (Mann-Whitney), performance "
            "profiles; paired tests: exact McNemar on matches paired by identical match seeds, Wilcoxon "
            "signed-rank on per-seed win-rate differences",
            "n_boot": self.n_boot,
            "confidence": self.confidence,
            "recipes": self.recipes,
            "opponents": self.opponents,
            "seeds": self.seeds,
            "scores": self.scores,
            "iqm": {r: e.to_dict() for r, e in self.iqm.items()},
            "mean": {r: e.to_dict() for r, e in self.mean.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "profile_taus": self.taus,
            "profiles": {r: asdict(p) for r, p in self.profiles.items()},
        }

    def to_markdown(self) -> str:
        seeds = sorted({s for values in self.seeds.values() for s in values})
        lines = [
            f"# Win rate across seeds ({len(self.recipes)} recipes, seeds {seeds}, vs {', '.join(self.opponents)})",
            "",
            "IQM = mean of the middle 50% of the (seed x opponent) win rates; 95% intervals by stratified "
            f"bootstrap over seeds within each opponent ({self.n_boot} resamples).",
            "",
            "| recipe | IQM win rate [95% CI] | mean win rate [95% CI] | seeds |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r} | {self.iqm[r].text()} | {self.mean[r].text()} | {len(self.seeds[r])} |" for r in self.recipes
        ]
        lines += [
            "",
            "## A against B (P(A > B) = probability of improvement; McNemar: exact, on matches with identical "
            "match seeds; Wilcoxon: signed-rank on per-seed win-rate differences)",
            "",
            "| A | B | P(A > B) [95% CI] | A-only wins | B-only wins | McNemar p | Wilcoxon p | verdict (5%) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            t = c.test
            wilcoxon_text = "—" if t.wilcoxon_p is None else f"{t.wilcoxon_p:.3g}"
            lines.append(
                f"| {c.a} | {c.b} | {c.poi.text(percent=False)} | {t.a_only} | {t.b_only} | {t.mcnemar_p:.3g} | "
                f"{wilcoxon_text} | {t.verdict} |"
            )
        return "\n".join(lines) + "\n"

    def plot_profiles(self, path: str | os.PathLike) -> Path:
        """Performance profiles: fraction of (seed x opponent) runs with win rate > tau, one line per recipe
        with its 95% band."""
        import matplotlib

        from bcarena.eval.plots import figure, save_figure  # matplotlib only when a plot is drawn

        fig, ax = figure((8, 4.8))
        colors = matplotlib.colormaps["tab20"]  # distinct colours for up to 20 recipes, dashed after 10
        for index, recipe in enumerate(self.recipes):
            curve, color, style = self.profiles[recipe], colors(index % 20), "-" if index < 10 else "--"
            label = f"{recipe} (IQM {self.iqm[recipe].value:.0%})"
            ax.plot(self.taus, curve.fraction, label=label, color=color, linestyle=style)
            ax.fill_between(self.taus, curve.low, curve.high, color=color, alpha=0.12)
        ax.set_xlabel("win rate threshold tau")
        ax.set_ylabel("fraction of runs with win rate > tau")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(
            f"Performance profiles ({len(next(iter(self.seeds.values())))} seeds x {len(self.opponents)} opponents)"
        )
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return save_figure(fig, path)

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """aggregates.json, aggregates.md and performance_profile.png into ``folder``."""
        folder = Path(folder)
        return {
            "json": write_json(folder / "aggregates.json", self.to_dict()),
            "markdown": write_text(folder / "aggregates.md", self.to_markdown()),
            "profile": self.plot_profiles(folder / "performance_profile.png"),
        }


def _score_matrices(runs: list[SeedRun]) -> tuple[list[str], dict[str, list[int]], dict[str, np.ndarray]]:
    """(opponents, seeds per recipe, (seeds, opponents) win rates per recipe), checked complete."""
    opponents = sorted({r.opponent for r in runs})
    by_recipe: dict[str, dict[tuple[int, str], SeedRun]] = {}
    for r in runs:
        by_recipe.setdefault(r.recipe, {})[(r.seed, r.opponent)] = r
    seeds, matrices = {}, {}
    for recipe, cells in by_recipe.items():
        seeds[recipe] = sorted({s for s, _ in cells})
        if len(seeds[recipe]) < 2:
            raise EvalError(
                f"aggregate statistics across seeds need >= 2 training seeds per recipe; {recipe!r} has "
                f"{len(seeds[recipe])} (seeds {seeds[recipe]}): list more under the experiment's seeds:"
            )
        missing = [(s, o) for s in seeds[recipe] for o in opponents if (s, o) not in cells]
        if missing:
            raise EvalError(f"aggregates: recipe {recipe!r} has no matches for (seed, opponent) {missing[:3]}")
        matrices[recipe] = np.array([[cells[(s, o)].win_rate for o in opponents] for s in seeds[recipe]])
    return opponents, seeds, matrices


def _compared_pairs(ranked: list[str]) -> list[tuple[str, str]]:
    """The best recipe against every other, and each recipe against the next in the ranking."""
    pairs = [(ranked[0], other) for other in ranked[1:]]
    pairs += [(a, b) for a, b in zip(ranked[1:], ranked[2:])]
    return pairs


def aggregate(runs: list[SeedRun], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> Aggregates:
    """Aggregates across training seeds of ``runs`` (every recipe x seed x opponent once; >= 2 seeds per recipe)."""
    if not runs:
        raise EvalError("aggregate statistics need runs: no agent was evaluated online")
    opponents, seeds, matrices = _score_matrices(runs)
    iqms = {r: iqm_estimate(m, n_boot, seed, confidence) for r, m in matrices.items()}
    ranked = sorted(matrices, key=lambda r: (-iqms[r].value, -float(matrices[r].mean()), r))
    by_recipe: dict[str, list[SeedRun]] = {}
    for run in runs:
        by_recipe.setdefault(run.recipe, []).append(run)
    comparisons = [
        Comparison(
            a,
            b,
            probability_of_improvement(matrices[a], matrices[b], n_boot, seed, confidence),
            paired_test(by_recipe[a], by_recipe[b]),
        )
        for a, b in _compared_pairs(ranked)
    ]
    return Aggregates(
        recipes=ranked,
        opponents=opponents,
        seeds=seeds,
        scores={r: matrices[r].tolist() for r in ranked},
        iqm={r: iqms[r] for r in ranked},
        mean={r: mean_estimate(matrices[r], n_boot, seed, confidence) for r in ranked},
        comparisons=comparisons,
        taus=PROFILE_TAUS.tolist(),
        profiles={r: profile_curve(matrices[r], PROFILE_TAUS, n_boot, seed, confidence) for r in ranked},
        n_boot=n_boot,
        confidence=confidence,
    )
