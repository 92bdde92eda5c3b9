"""The one batched match loop (bcarena.envs.play): batch independence, hooks, frozen finished matches, bad policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import NUM_ACTIONS, make_bot
from bcarena.envs.duel.render import gray_frames
from bcarena.envs.play import DuelBatch, Hook, MatchwisePolicy, NoisyPolicy, PolicyError, Step, play
from bcarena.eval.matches import match_seeds, play_matches
from bcarena.experiments.benchmarks.match_throughput import untrained_agent
from bcarena.recordings.sources import BotPolicy

RESULT_FIELDS = ("winner", "ko", "hp", "length", "damage_dealt", "skills_used", "action_counts")


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _assert_same_results(a, b, label: str) -> None:
    for name in RESULT_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{label}: {name}")


@pytest.mark.parametrize("players", ["bots", "torch"])
@pytest.mark.parametrize(
    "matches, sizes",
    [(6, (1, 4)), pytest.param(15, (1, 7), marks=pytest.mark.slow)],  # one match per batch, and a short last batch
    ids=["6-matches", "15-matches"],
)
def test_outcomes_do_not_depend_on_the_batch_size(players, matches, sizes, one_torch_thread):
    seeds = match_seeds(11, matches)
    if players == "bots":
        make = lambda: (BotAgent("pro"), BotAgent("brawler"))  # noqa: E731
    else:  # a frame-stacked MLP (memory per batch row) against the pro
        make = lambda: (untrained_agent("mlp", frame_stack=3, seed=2), BotAgent("pro"))  # noqa: E731
    everything = play_matches(*make(), seeds)
    for size in sizes:
        _assert_same_results(everything, play_matches(*make(), seeds, batch_size=size), f"batch {size}")
    assert len(set(everything.length.tolist())) > 1  # the matches really differ, and end at different steps


class _Witness(Hook):
    """Records every call the loop makes, and each match's state the moment it ended."""

    def __init__(self) -> None:
        self.resets, self.ends, self.steps = 0, 0, []
        self.final_states: dict[int, dict[str, np.ndarray]] = {}

    def on_reset(self, match: DuelBatch) -> None:
        self.resets += 1
        assert not match.done.any()

    def on_step(self, step: Step) -> None:
        self.steps.append((step.index, step.live.copy(), step.actions.copy()))
        for row in np.flatnonzero(step.live & step.match.done):
            self.final_states[int(row)] = step.match.core.get_state([row])
        for row, state in self.final_states.items():  # a finished match stays exactly as it ended
            for key, value in step.match.core.get_state([row]).items():
                np.testing.assert_array_equal(value, state[key], err_msg=f"match {row} moved after its end: {key}")

    def on_end(self, match: DuelBatch) -> None:
        self.ends += 1


class _Counting:
    """A state policy that counts its calls and remembers the observations it was given."""

    obs_type = "state"

    def __init__(self, name: str) -> None:
        self.name, self.calls, self.seen = name, 0, []

    def reset(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.seen.append(obs.copy())
        return np.full(obs.shape[0], 3, dtype=np.int64)  # jump: harmless, never ends a match by itself


def test_hooks_see_every_step_and_finished_matches_stop_acting():
    match, witness, walker = DuelBatch(5), _Witness(), _Counting("walker")
    steps = play(match, (walker, BotAgent("brawler")), match_seeds(0, 5), hooks=[witness])
    assert witness.resets == 1 and witness.ends == 1
    assert [index for index, _, _ in witness.steps] == list(range(steps)) and walker.calls == steps
    assert match.done.all() and len(witness.final_states) == 5
    lengths = match.core.decision
    assert len(set(lengths.tolist())) > 1 and steps == lengths.max()
    # each match was live for exactly the decisions it played; only those actions were applied
    live = np.stack([live for _, live, _ in witness.steps])
    np.testing.assert_array_equal(live.sum(axis=0), lengths)
    assert all((live[t] <= live[t - 1]).all() for t in range(1, steps))  # once over, never live again
    # the policy kept acting on the whole batch, and a finished match's observation no longer changes
    assert walker.batch_size == 5 and all(obs.shape == (5, 37) for obs in walker.seen)
    first_over = int(np.argmin(lengths))
    after = walker.seen[int(lengths[first_over]) :]
    assert len(after) > 1 and all(np.array_equal(obs[first_over], after[0][first_over]) for obs in after)


def test_max_steps_stops_every_match_there():
    match, witness = DuelBatch(3), _Witness()
    assert play(match, (BotAgent("pro"), BotAgent("turtle")), [1, 2, 3], hooks=[witness], max_steps=4) == 4
    assert len(witness.steps) == 4 and witness.ends == 1 and not match.done.any()
    assert (match.core.decision == 4).all()


class _Bad:
    obs_type = "state"

    def __init__(self, answer) -> None:
        self.name, self.answer = "bad", answer

    def reset(self, batch_size: int) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.answer(obs)


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            lambda obs: np.zeros(obs.shape[0] + 1, dtype=np.int64),
            r"act\(\) must return \(4,\) integer action ids, got int64 \(5,\)",
        ),
        (lambda obs: np.zeros(obs.shape[0]), r"act\(\) must return \(4,\) integer action ids, got float64 \(4,\)"),
        (lambda obs: np.full(obs.shape[0], NUM_ACTIONS), r"actions must be in \[0, 8\), got \[8\]"),
    ],
)
def test_a_policy_returning_bad_actions_gets_a_one_line_error_naming_it(answer, message):
    with pytest.raises(PolicyError, match=r"^policy 'bad' \(player 1\): " + message) as caught:
        play(DuelBatch(4), (BotAgent("pro"), _Bad(answer)), [0, 1, 2, 3])
    assert "\n" not in str(caught.value)
    with pytest.raises(PolicyError, match="this match needs 2 policies"):
        play(DuelBatch(1), (BotAgent("pro"),), [0])
    with pytest.raises(PolicyError, match="Duel observations are 'state' or 'pixels', got 'rgb'"):
        DuelBatch(1).observe(0, "rgb")


class _NoiseSpy:
    """A noisy policy that stands still and remembers the noise it was fed."""

    name, obs_type, noise_dims = "spy", "state", 2

    def __init__(self) -> None:
        self.noise: list[np.ndarray] = []

    def reset(self, batch_size: int) -> None:
        pass

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        self.noise.append(noise.copy())
        return np.zeros(obs.shape[0], dtype=np.int64)


def test_noisy_policies_get_their_match_noise_whatever_the_batch():
    spies = [_NoiseSpy(), _NoiseSpy()]
    play(DuelBatch(3), (spies[0], BotAgent("random")), [5, 6, 7])
    play(DuelBatch(2), (spies[1], BotAgent("random")), [7, 6])
    batched, reordered = np.stack(spies[0].noise)[:, 1], np.stack(spies[1].noise)[:, 1]  # the match of seed 6
    steps = min(len(batched), len(reordered))
    np.testing.assert_array_equal(batched[:steps], reordered[:steps])
    assert steps > 10 and len(np.unique(batched[:, 0])) == len(batched)  # fresh noise every decision
    # a BotAgent and the recordings' bare-bot policy are the same player: the same noise, the same matches
    agent, bot = BotAgent("pro"), BotPolicy(make_bot("pro"))
    assert isinstance(agent, NoisyPolicy) and isinstance(bot, NoisyPolicy)
    states = []
    for pro in (agent, bot):
        match = DuelBatch(3)
        play(match, (pro, BotAgent("brawler")), [5, 6, 7])
        states.append(match.core.get_state())
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)


def test_matchwise_policy_plays_each_row_as_its_own_policy_would():
    seeds = np.arange(20, 26)
    which = np.arange(6) % 2
    shared = DuelBatch(6)
    play(
        shared, (BotAgent("pro"), MatchwisePolicy([BotAgent("brawler"), BotAgent("turtle")], which, NUM_ACTIONS)), seeds
    )
    for k, name in enumerate(("brawler", "turtle")):
        alone = DuelBatch(int((which == k).sum()))
        play(alone, (BotAgent("pro"), BotAgent(name)), seeds[which == k])
        np.testing.assert_array_equal(shared.core.hp[which == k], alone.core.hp, err_msg=name)
        np.testing.assert_array_equal(shared.core.decision[which == k], alone.core.decision, err_msg=name)
    with pytest.raises(PolicyError, match="must observe the same kind"):
        MatchwisePolicy([BotAgent("pro"), untrained_agent("cnn")], which, NUM_ACTIONS)


def test_pixels_are_drawn_for_running_matches_only():
    match = DuelBatch(4)

    class Check(Hook):
        def on_reset(self, match):
            self.kept: dict[int, np.ndarray] = {}

        def on_step(self, step):
            frames = step.match.observe(1, "pixels")[..., 0]
            running = np.flatnonzero(~step.match.done)
            np.testing.assert_array_equal(frames[running], gray_frames(step.match.core, 1, running))
            for row in np.flatnonzero(step.match.done):  # a finished match's actions are ignored: not redrawn
                np.testing.assert_array_equal(frames[row], self.kept.setdefault(int(row), frames[row].copy()))

    play(match, (BotAgent("pro"), BotAgent("brawler")), [3, 4, 5, 6], hooks=[Check()])
    assert match.observe(0, "pixels").shape == (4, 84, 84, 1) and match.observe(0, "pixels").dtype == np.uint8


def test_boxing_emulators_as_a_match_with_spare_rows():
    from bcarena.envs.boxing import BoxingBatch, BoxingError, BoxingExpert

    witness = []

    class Live(Hook):
        def on_step(self, step):
            witness.append(step.live.copy())

    with BoxingBatch(3, pixels=False) as match:
        assert play(match, [BoxingExpert(seed=0)], [10, 11], hooks=[Live()], max_steps=5) == 5
        assert match.done.tolist() == [False, False, True]  # two bouts on three emulators: the spare sits out
        assert all(live.tolist() == [True, True, False] for live in witness)
        assert match.decisions.tolist() == [5, 5, 0] and match.observe(0, "state").shape == (3, 9)
        with pytest.raises(BoxingError, match="render state observations, not 'pixels'"):
            match.observe(0, "pixels")
        with pytest.raises(BoxingError, match="1 to 3 seeds"):
            match.reset(np.arange(4))
