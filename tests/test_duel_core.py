import numpy as np
import pytest

from bcarena.envs.duel import Action, DuelConfig, DuelCore, DuelEnv, DuelError, DuelMatch


def _core(n=4, **cfg):
    core = DuelCore(n, DuelConfig(**cfg))
    core.reset(np.arange(n))
    return core


@pytest.mark.parametrize(
    "actions, needle",
    [
        (np.full((4, 2), 8), r"actions must be in \[0, 8\).*got \[8, 8, 8, 8, 8\]"),
        (np.full((4, 2), -1), r"got \[-1"),
        (np.zeros((4,)), r"actions must have shape \(4, 2\), got \(4,\)"),
        (np.full((4, 2), 1.5), r"integer action ids.*got dtype float64"),
        (np.full((4, 2), "left"), r"integer action ids.*got dtype <U4"),
    ],
)
def test_invalid_actions_get_clear_errors(actions, needle):
    with pytest.raises(DuelError, match=needle):
        _core().step(actions)


def test_movement_never_damages_and_time_out_is_a_draw():
    core = _core(8)
    rng = np.random.default_rng(0)
    moves = [Action.IDLE, Action.LEFT, Action.RIGHT, Action.JUMP, Action.GUARD]
    steps = 0
    while not core.done.all():
        core.step(rng.choice(moves, size=(8, 2)))
        steps += 1
    assert steps == core.config.max_decisions
    assert np.all(core.hp == core.config.max_hp)
    assert np.all(core.winner == -1) and not core.ko.any()


def test_skills_damage_and_ko_decides_the_winner():
    core = _core(1, start_gap=1.0, start_jitter=0.0)
    while not core.done[0]:  # walk in and jab; knockback keeps pushing the victim away
        close = core.x[0, 1] - core.x[0, 0] <= 1.0
        core.step(np.array([[Action.LIGHT if close else Action.RIGHT, Action.IDLE]]))
    assert core.ko[0] and core.winner[0] == 0
    assert core.hp[0, 0] == core.config.max_hp and core.hp[0, 1] <= 0


def test_time_out_goes_to_the_hp_lead():
    core = _core(1, start_gap=1.0, start_jitter=0.0, round_seconds=1.0)
    core.step(np.array([[Action.IDLE, Action.LIGHT]]))
    while not core.done[0]:
        core.step(np.array([[Action.IDLE, Action.IDLE]]))
    assert not core.ko[0] and core.winner[0] == 1
    assert core.hp[0, 0] == core.config.max_hp - core.config.skills[0].damage


@pytest.mark.parametrize("defence, fraction", [(Action.GUARD, "guard_through"), (Action.IDLE, None)])
def test_guard_lets_only_chip_damage_through(defence, fraction):
    core = _core(1, start_gap=1.0, start_jitter=0.0)
    light = core.config.skills[0]
    core.step(np.array([[Action.LIGHT, defence]]))  # startup 4 + active 3 ticks: the hit lands in this decision
    expected = light.damage * (light.guard_through if fraction else 1.0)
    assert core.hp[0, 1] == pytest.approx(core.config.max_hp - expected)
    assert core.hp[0, 0] == core.config.max_hp


def test_cooldown_limits_special_presses():
    core = _core(1)
    presses = 0
    for _ in range(60):  # 6 s, special cooldown is 7 s
        presses += int(core.step(np.array([[Action.SPECIAL, Action.IDLE]])).skill_started[0, 0])
    assert presses == 1


def test_stepping_a_finished_match_is_an_error():
    env = DuelEnv(opponent="idle", config=DuelConfig(round_seconds=0.5))
    env.reset(seed=0)
    done = False
    while not done:
        _, _, done, _, _ = env.step(0)
    with pytest.raises(DuelError, match=r"the match is finished: call reset\(\) before step\(\)"):
        env.step(0)


def test_env_rejects_out_of_range_actions():
    env = DuelEnv()
    env.reset(seed=0)
    with pytest.raises(DuelError, match=r"action must be an integer in \[0, 8\), got 9"):
        env.step(9)


def test_finished_matches_stay_frozen_in_the_two_player_api():
    match = DuelMatch(2, DuelConfig(start_gap=1.0, start_jitter=0.0))
    match.reset([0, 1])
    while not match.core.done[0]:
        close = match.core.x[0, 1] - match.core.x[0, 0] <= 1.0
        match.step(np.array([[Action.LIGHT if close else Action.RIGHT, Action.IDLE], [Action.IDLE, Action.IDLE]]))
    assert match.core.ko[0] and not match.core.done[1]
    frozen = match.core.get_state([0])
    for _ in range(5):
        _, events = match.step(np.array([[Action.RIGHT, Action.JUMP], [Action.LEFT, Action.LEFT]]))
        assert events.damage_dealt[0].sum() == 0
    after = match.core.get_state([0])
    for key in frozen:
        np.testing.assert_array_equal(frozen[key], after[key], err_msg=key)


def test_core_reset_validates_seeds_and_indices():
    core = DuelCore(3)
    with pytest.raises(DuelError, match="one seed per match: got 2 seeds for 3 matches"):
        core.reset([1, 2])
    with pytest.raises(DuelError, match="non-negative integers"):
        core.reset([-1, 2, 3])
    with pytest.raises(DuelError, match=r"reset indices must be within \[0, 3\)"):
        core.reset([1], indices=[5])
