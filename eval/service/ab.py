"""Champion/challenger A/B: paired matches on identical seeds, stopped by a sequential probability ratio test.

The test is fishtest's generalized SPRT (GSPRT) in logistic Elo (M. Van den Bergh, "Generalized sequential
probability ratio test for the Elo model", http://hardy.uhasselt.be/Fishtest/support_MLE_multinomial.pdf and
fishtest's ``stats/LLRcalc.py``). The results are an empirical distribution of scores ``a_i`` with
frequencies ``p_i`` over ``N`` units:

* trinomial: one unit per game, scores (0, 1/2, 1) for the challenger's loss, draw, win;
* pentanomial: one unit per *pair* of games on the same seed with the sides swapped, scores
  (0, 1/4, 1/2, 3/4, 1) for the pair's LL, LD+DL, LW+WL+DD, DW+WD, WW (the pair's mean score).

Zero counts are regularized to 1e-3 (as fishtest does). With the expected scores ``s_j = 1 / (1 + 10^(-elo_j / 400))``
of H0 and H1:

* exact GSPRT: ``LLR = N * sum_i p_i * log(q1_i / q0_i)``, where ``q_j`` is the maximum-likelihood distribution on
  the same scores with expectation ``s_j``: ``q_i = p_i / (1 + x (a_i - s_j))`` with ``x`` the root of the secular
  equation ``sum_i p_i (a_i - s_j) / (1 + x (a_i - s_j)) = 0`` (:func:`mle_expected`);
  (used for the decision: it stays finite and sensible when one side wins every game);
* the standard normal approximation (fishtest's ``LLR_alt2``, reported beside it):
  ``LLR = N * (s1 - s0) * (2 * mu - s0 - s1) / (2 * var)`` with the empirical per-unit mean ``mu`` and variance
  ``var``. The two agree to a few percent near the bounds (tested).

Bounds (Wald): stop for H0 at ``log(beta / (1 - alpha))``, for H1 at ``log((1 - beta) / alpha)``.

Opponents: ``head-to-head`` plays each seed twice (challenger as player 0, then as player 1); ``reference``
plays champion and challenger each against one reference bot on the same seed and side, and scores the pair as
``1/2 + (challenger's score - champion's score) / 2`` (a win where only the challenger won): the difference in Elo
*as seen against that opponent*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bcarena.envs.figures import pyplot, save_figure
from bcarena.eval.errors import EvalError

MODELS = ("trinomial", "pentanomial")
OPPONENT_MODES = ("head-to-head", "reference")
TRINOMIAL_SCORES = np.array([0.0, 0.5, 1.0])
PENTANOMIAL_SCORES = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
REGULARIZE = 1e-3
Z95 = 1.959963984540054


class SprtError(EvalError, ValueError):
    """Invalid SPRT settings: bounds, error rates or a match budget that cannot define a test."""


# ----------------------------------------------------------------------------------------- statistics
def logistic_score(elo: float) -> float:
    """Expected score (0..1) of a player ``elo`` logistic Elo points stronger."""
    return 1.0 / (1.0 + 10.0 ** (-elo / 400.0))


def score_to_elo(score: float) -> float:
    """Logistic Elo of an expected score (clipped to (1e-6, 1 - 1e-6) so 0 and 1 stay finite)."""
    s = min(max(score, 1e-6), 1.0 - 1e-6)
    return -400.0 * math.log10(1.0 / s - 1.0)


def _pdf(counts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(N, scores a_i, frequencies p_i) of result counts (3: L, D, W or 5: pair buckets), zeros regularized."""
    counts = np.asarray(counts, dtype=float)
    if counts.size not in (3, 5):
        raise SprtError(f"results must be 3 (L, D, W) or 5 (pentanomial) counts, got {counts.size}")
    scores = TRINOMIAL_SCORES if counts.size == 3 else PENTANOMIAL_SCORES
    regular = np.where(counts == 0, REGULARIZE, counts)
    total = float(regular.sum())
    return total, scores, regular / total


def _stats(scores: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    mu = float(np.dot(scores, probs))
    return mu, float(np.dot((scores - mu) ** 2, probs))


def mle_expected(scores: np.ndarray, probs: np.ndarray, s: float) -> np.ndarray:
    """The distribution on ``scores`` closest (max likelihood) to ``probs`` with expectation ``s``.

    Solves the secular equation by bisection on ``x`` in (-1 / (a_max - s), 1 / (s - a_min)), where the left side
    is decreasing; requires a_min < s < a_max and positive probabilities.
    """
    d = scores - s
    lo, hi = -1.0 / d.max(), -1.0 / d.min()

    def f(x: float) -> float:
        return float(np.sum(probs * d / (1.0 + x * d)))

    lo, hi = lo + 1e-12 * (hi - lo), hi - 1e-12 * (hi - lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    q = probs / (1.0 + x * d)
    return q / q.sum()


def llr_exact(counts: np.ndarray, elo0: float, elo1: float) -> float:
    """Exact GSPRT log-likelihood ratio of H1 (``elo1``) vs H0 (``elo0``) for result ``counts``."""
    n, scores, probs = _pdf(counts)
    s0, s1 = logistic_score(elo0), logistic_score(elo1)
    q0, q1 = mle_expected(scores, probs, s0), mle_expected(scores, probs, s1)
    return n * float(np.sum(probs * np.log(q1 / q0)))


def llr_normal(counts: np.ndarray, elo0: float, elo1: float) -> float:
    """The normal approximation of the GSPRT LLR: ``N (s1 - s0)(2 mu - s0 - s1) / (2 var)``."""
    n, scores, probs = _pdf(counts)
    mu, var = _stats(scores, probs)
    s0, s1 = logistic_score(elo0), logistic_score(elo1)
    return n * (s1 - s0) * (2.0 * mu - s0 - s1) / (2.0 * var)


def sprt_bounds(alpha: float, beta: float) -> tuple[float, float]:
    """Wald's (lower, upper) LLR bounds: H0 below ``log(beta / (1 - alpha))``, H1 above ``log((1 - beta) / alpha)``."""
    return math.log(beta / (1.0 - alpha)), math.log((1.0 - beta) / alpha)


def elo_estimate(counts: np.ndarray) -> dict[str, float]:
    """Elo of the challenger with a 95% interval (normal on the mean score) and LOS = P(Elo > 0).

    Uses the raw counts (no regularization); per unit of the counts (a game or a pair of games).
    """
    counts = np.asarray(counts, dtype=float)
    scores = TRINOMIAL_SCORES if counts.size == 3 else PENTANOMIAL_SCORES
    n = float(counts.sum())
    if n == 0:
        return {"elo": 0.0, "elo_ci95": [-math.inf, math.inf], "los": 0.5, "score": 0.5}
    mu, var = _stats(scores, counts / n)
    se = math.sqrt(var / n)
    los = 0.5 if se == 0 and mu == 0.5 else (float(mu > 0.5) if se == 0 else 0.5 * math.erfc(-(mu - 0.5) / se / 2**0.5))
    return {
        "elo": score_to_elo(mu),
        "elo_ci95": [score_to_elo(mu - Z95 * se), score_to_elo(mu + Z95 * se)],
        "los": los,
        "score": mu,
    }


@dataclass(frozen=True)
class SprtSettings:
    """H0/H1 in logistic Elo, error rates, the statistical model, and the budget in games (matches)."""

    elo0: float = 0.0
    elo1: float = 20.0
    alpha: float = 0.05
    beta: float = 0.05
    model: str = "pentanomial"  # one of MODELS
    max_matches: int = 2000
    batch: int = 100  # games per batch; the LLR is checked after each

    def __post_init__(self) -> None:
        if not self.elo1 > self.elo0:
            raise SprtError(f"SPRT bounds are inverted: H1 ({self.elo1:g} Elo) must be above H0 ({self.elo0:g} Elo)")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise SprtError(f"SPRT {name} must lie in (0, 0.5), got {value:g}")
        if self.model not in MODELS:
            raise SprtError(f"SPRT model must be one of {list(MODELS)}, got {self.model!r}")
        if self.max_matches < 2:
            raise SprtError(f"the match budget must be >= 2 games (one pair), got {self.max_matches}")
        if self.batch < 2:
            raise SprtError(f"the batch must be >= 2 games (one pair), got {self.batch}")

    @property
    def bounds(self) -> tuple[float, float]:
        return sprt_bounds(self.alpha, self.beta)


# ----------------------------------------------------------------------------------------- results
def pair_counts(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(trinomial L/D/W counts over both games, pentanomial counts over pairs) of the challenger's scores (0, 0.5, 1)
    in the two games of each pair."""
    games = np.concatenate([first, second])
    tri = np.array([np.sum(games == 0.0), np.sum(games == 0.5), np.sum(games == 1.0)])
    penta = np.bincount(np.rint(2 * (first + second)).astype(int), minlength=5)
    return tri, penta


@dataclass
class AbResult:
    """What an A/B test decided and the evidence (JSON via ``to_dict``)."""

    champion: str
    challenger: str
    opponent: str
    settings: SprtSettings
    decision: str = "undecided"
    trinomial: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))  # challenger's L, D, W
    pentanomial: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))
    trace: list[dict[str, float]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # first and last seed played
    game: str = "duel"  # whose matches were played

    @property
    def counts(self) -> np.ndarray:
        return self.pentanomial if self.settings.model == "pentanomial" else self.trinomial

    @property
    def matches(self) -> int:
        return int(self.trinomial.sum())

    def llr(self) -> float:
        return llr_exact(self.counts, self.settings.elo0, self.settings.elo1)

    def update(self, first: np.ndarray, second: np.ndarray) -> None:
        """Add one batch of pairs (challenger's score in each pair's two games) and decide if a bound is crossed."""
        tri, penta = pair_counts(first, second)
        self.trinomial += tri
        self.pentanomial += penta
        llr = self.llr()
        lower, upper = self.settings.bounds
        self.trace.append({"matches": self.matches, "llr": llr})
        if llr >= upper:
            self.decision = "H1"
        elif llr <= lower:
            self.decision = "H0"

    def to_dict(self) -> dict[str, Any]:
        lower, upper = self.settings.bounds
        s = self.settings
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "opponent": self.opponent,
            "game": self.game,
            "decision": self.decision,
            "llr": self.llr() if self.matches else 0.0,
            "llr_normal": llr_normal(self.counts, s.elo0, s.elo1) if self.matches else 0.0,
            "bounds": [lower, upper],
            "sprt": {"elo0": s.elo0, "elo1": s.elo1, "alpha": s.alpha, "beta": s.beta, "model": s.model},
            "matches": self.matches,
            "max_matches": s.max_matches,
            "pairs": int(self.pentanomial.sum()),
            "seeds": self.seeds,
            "wdl": {"wins": int(self.trinomial[2]), "draws": int(self.trinomial[1]), "losses": int(self.trinomial[0])},
            "pentanomial": [int(c) for c in self.pentanomial],
            **elo_estimate(self.counts),
            "trace": self.trace,
        }


# ----------------------------------------------------------------------------------------- playing
def _scores(winner: np.ndarray, player: int) -> np.ndarray:
    """Score (0, 0.5, 1) of ``player`` in each match from the winners (-1 = draw)."""
    return np.where(winner < 0, 0.5, (winner == player).astype(float))


def play_pairs(champion, challenger, reference, seeds: np.ndarray, config: Any = None, game: str = "duel"):
    """The challenger's scores in the two games of each seed's pair: (first (n,), second (n,)), in ``game``'s
    matches (``config``: that game's config).

    Head to head (``reference`` None): first = challenger as player 0, second = challenger as player 1.
    Against a reference: first = challenger vs reference, second = 1 - champion's score vs reference, so that
    the pair's mean is 1/2 + (challenger - champion) / 2.
    """
    from bcarena.envs.games import get_game
    from bcarena.eval.matches import play_matches_of_game

    def winners(player0, player1) -> np.ndarray:
        return play_matches_of_game(get_game(game), player0, player1, seeds, config, batch_size=seeds.size).winner

    if reference is None:
        return _scores(winners(challenger, champion), 0), _scores(winners(champion, challenger), 1)
    return _scores(winners(challenger, reference), 0), 1.0 - _scores(winners(champion, reference), 0)


def _check_players(players: list, game: str, config: Any) -> None:
    """Every player must fit ``game`` (``check_agent_for_game`` through ``check_agent`` / ``fits_game``)."""
    from bcarena.eval.matches import BuiltInOpponent, check_agent, fits_game

    if game == "duel":
        for player in players:
            check_agent(player, config)
        return
    from bcarena.envs.games import get_game

    for player in players:
        if not isinstance(player, BuiltInOpponent):
            fits_game(player, get_game(game))


def run_ab(
    champion,
    challenger,
    settings: SprtSettings,
    reference=None,
    seed: int = 0,
    config: Any = None,
    on_batch: Callable[[AbResult], None] | None = None,
    game: str = "duel",
) -> AbResult:
    """Play pairs of ``game``'s matches in batches of ``settings.batch`` games from seed ``seed`` on until the SPRT
    crosses a bound or ``settings.max_matches`` games are played. Players are Agents (``load_ab_player`` resolves
    specs; a game's built-in opponent can be the reference); ``config`` is that game's config."""
    if game != "duel" and config is None:
        from bcarena.envs.games import get_game

        config = get_game(game).make_config({})
    _check_players([champion, challenger, *([reference] if reference is not None else [])], game, config)
    result = AbResult(
        champion.name, challenger.name, reference.name if reference is not None else "head-to-head", settings, game=game
    )
    next_seed = seed
    while result.decision == "undecided" and result.matches + 2 <= settings.max_matches:
        pairs = min(settings.batch, settings.max_matches - result.matches) // 2
        seeds = np.arange(next_seed, next_seed + pairs, dtype=np.int64)
        result.update(*play_pairs(champion, challenger, reference, seeds, config, game))
        next_seed += pairs
        result.seeds = [seed, next_seed - 1]
        if on_batch is not None:
            on_batch(result)
    return result


def plot_trace(result: AbResult, path: Path) -> Path:
    """The LLR after each batch with the two SPRT bounds (PNG, written atomically)."""
    plt = pyplot()
    lower, upper = result.settings.bounds
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([0] + [t["matches"] for t in result.trace], [0.0] + [t["llr"] for t in result.trace], marker="o", ms=3)
    ax.axhline(upper, color="green", ls="--", label=f"H1 bound {upper:.2f}")
    ax.axhline(lower, color="red", ls="--", label=f"H0 bound {lower:.2f}")
    ax.set_xlabel("matches played")
    ax.set_ylabel("LLR")
    ax.set_title(f"{result.challenger} vs {result.champion} ({result.opponent}): {result.decision}")
    ax.legend()
    return save_figure(fig, path, dpi=100)


def ab_game(specs: list[str], tracking_uri: str | None = None) -> str:
    """The one game the players ``specs`` declare (registered models resolved first), Duel when none does; agents of
    two games are an EvalError naming both."""
    from bcarena.eval.matches import game_of_players
    from bcarena.eval.service.registry import is_model_uri, resolve_model

    return game_of_players([resolve_model(s, tracking_uri) if is_model_uri(s) else s for s in specs]).name


def load_ab_player(spec: str, tracking_uri: str | None = None, config: Any = None, game: str = "duel"):
    """A player of ``game`` for an A/B test: a registered model (``models:/...``, resolved to its agent folder), or
    anything :func:`bcarena.eval.matches.load_player` loads, or (other games) one of the game's built-in players."""
    from bcarena.eval.matches import game_player, load_player
    from bcarena.eval.service.registry import is_model_uri, resolve_model

    source = resolve_model(spec, tracking_uri) if is_model_uri(spec) else spec
    if game == "duel":
        return load_player(source, config)
    from bcarena.envs.games import get_game

    return game_player(str(source), get_game(game), config)
