"""The bot ladder report: do the bots make the story real?

For each pairing: win/draw/loss over N matches with Wilson 95% intervals; for the pro, the
fraction of its 10 FPS frames that are skill presses and its per-frame press probability in the
states it itself judges opportune (well below 0.5 by design: it hesitates).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import SKILL_ACTIONS, DuelConfig
from bcarena.envs.duel.bots import ProBot
from bcarena.envs.play import DuelBatch, Hook, Step, play
from bcarena.eval.matches import play_matches
from bcarena.eval.stats import wilson_interval

DEFAULT_PAIRINGS: tuple[tuple[str, str], ...] = (
    ("pro", "random"),
    ("pro", "brawler"),
    ("pro", "turtle"),
    ("pro", "pro"),
    ("idle", "brawler"),
    ("mover", "brawler"),
)


@dataclass
class PairingReport:
    player: str
    opponent: str
    matches: int
    wins: int
    draws: int
    losses: int
    win_rate: float
    win_rate_ci95: tuple[float, float]
    skill_press_fraction: float  # skill presses / frames played, of the player
    mean_length_frames: float


def pairing_report(
    player: str, opponent: str, matches: int, seed: int = 0, config: DuelConfig | None = None
) -> PairingReport:
    seeds = np.arange(seed, seed + matches)
    result = play_matches(BotAgent(player, config=config), BotAgent(opponent, config=config), seeds, config)
    wins = int((result.winner == 0).sum())
    draws = int((result.winner == -1).sum())
    skill_frames = result.action_counts[:, 0, list(SKILL_ACTIONS)].sum()
    return PairingReport(
        player=player,
        opponent=opponent,
        matches=matches,
        wins=wins,
        draws=draws,
        losses=matches - wins - draws,
        win_rate=wins / matches,
        win_rate_ci95=wilson_interval(wins, matches),
        skill_press_fraction=float(skill_frames / result.length.sum()),
        mean_length_frames=float(result.length.mean()),
    )


class _OpportunePresses(Hook):
    """Counts the pro's (player 0) decisions in states it judges opportune, and its skill presses in them."""

    def __init__(self, pro: ProBot) -> None:
        self.pro = pro
        self.opportune_frames = self.presses = 0

    def on_reset(self, match: DuelBatch) -> None:
        self.obs = match.observe(0, "state")  # what the pro sees at the coming decision

    def on_step(self, step: Step) -> None:
        opportune = self.pro.opportune(self.obs)[0] & step.live
        self.opportune_frames += int(opportune.sum())
        self.presses += int((opportune & np.isin(step.actions[:, 0], SKILL_ACTIONS)).sum())
        self.obs = step.match.observe(0, "state")


def pro_opportune_press_rate(opponent: str, matches: int, seed: int = 0, config: DuelConfig | None = None) -> float:
    """P(pro presses a skill | a state the pro judges opportune), pooled over frames of ``matches`` games."""
    match = DuelBatch(matches, config)
    pro = ProBot(match.config)
    counter = _OpportunePresses(pro)
    play(
        match,
        (BotAgent(pro), BotAgent(opponent, config=match.config)),
        np.arange(seed, seed + matches),
        hooks=[counter],
    )
    return counter.presses / max(counter.opportune_frames, 1)


def bot_report(matches: int = 400, seed: int = 0, pairings=DEFAULT_PAIRINGS) -> dict:
    rows = [asdict(pairing_report(p, o, matches, seed)) for p, o in pairings]
    opponents = sorted({o for p, o in pairings if p == "pro"})
    return {
        "matches_per_pairing": matches,
        "seed": seed,
        "pairings": rows,
        "pro_opportune_press_rate": {o: pro_opportune_press_rate(o, matches, seed) for o in opponents},
    }
