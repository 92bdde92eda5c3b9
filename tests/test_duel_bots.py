"""The bot ladder must make the story real: the pro wins, rarely uses skills, and hesitates."""

import numpy as np
import pytest

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import BOTS, make_bot
from bcarena.envs.duel.bots import UnknownBotError
from bcarena.eval.matches import play_matches
from bcarena.experiments.bot_report import pairing_report, pro_opportune_press_rate

MATCHES = 400


@pytest.mark.parametrize("opponent", ["random", "brawler", "turtle"])
def test_pro_beats_every_weaker_bot(opponent):
    report = pairing_report("pro", opponent, MATCHES)
    assert report.win_rate >= 0.9, report
    assert 0.01 <= report.skill_press_fraction <= 0.05, report


@pytest.mark.parametrize("player", ["idle", "mover"])
def test_no_skill_means_no_win(player):
    report = pairing_report(player, "brawler", MATCHES)
    assert report.wins == 0 and report.skill_press_fraction == 0


def test_pro_mirror_is_even():
    result = play_matches(BotAgent("pro"), BotAgent("pro"), np.arange(2000))
    score = np.mean(np.where(result.winner == 0, 1.0, np.where(result.winner == -1, 0.5, 0.0)))
    assert 0.45 <= score <= 0.55


@pytest.mark.parametrize("opponent", ["brawler", "pro"])
def test_pro_hesitates_in_opportune_states(opponent):
    rate = pro_opportune_press_rate(opponent, 200)
    assert 0.0 < rate < 0.25


def test_every_bot_returns_valid_actions():
    obs = np.random.default_rng(0).uniform(-1, 1, size=(64, 37)).astype(np.float32)
    noise = np.random.default_rng(1).random((64, 3))
    for name in BOTS:
        actions = make_bot(name).act(obs, noise[:, : BOTS[name].noise_dims])
        assert actions.shape == (64,) and actions.dtype == np.int64
        assert ((0 <= actions) & (actions < 8)).all()


def test_unknown_bot_names_list_the_registered_ones():
    with pytest.raises(UnknownBotError, match=r"unknown bot 'champion'; registered bots: \['brawler'"):
        make_bot("champion")
