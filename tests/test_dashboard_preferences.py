"""Blind A/B preferences: durable appends, strict reading, the rating they imply, fair pair sampling."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from bcarena.experiments.preferences import (
    RATING_COLUMNS,
    TIE,
    Preference,
    PreferenceError,
    load_preferences,
    next_pair,
    preference_ratings,
    record_preference,
)
from bcarena.experiments.results import PREFERENCES_FILE

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def vote(left: str, right: str, choice: str, minute: int = 0, question: str = "better") -> Preference:
    return Preference((T0 + timedelta(minutes=minute)).isoformat(), question, (left, right), "brawler", 7, choice)


def test_record_and_load_round_trip(tmp_path):
    first = record_preference(tmp_path, ("a", "b"), "brawler", 10_003, "b", "pro_like", timestamp=T0)
    record_preference(tmp_path, ("b", "c"), "brawler", 10_004, TIE)
    lines = (tmp_path / PREFERENCES_FILE).read_text().splitlines()
    assert json.loads(lines[0]) == {
        "timestamp": "2025-01-01T00:00:00+00:00",
        "question": "pro_like",
        "pair": ["a", "b"],
        "opponent": "brawler",
        "seed": 10_003,
        "choice": "b",
    }
    votes = load_preferences(tmp_path)
    assert votes[0] == first and votes[1].choice == TIE and votes[1].pair == ("b", "c")
    assert load_preferences(tmp_path / "no-votes-yet") == []


@pytest.mark.parametrize(
    "pair, choice, question, message",
    [
        (("a", "b"), "c", "better", "choice 'c' must be one of the pair"),
        (("a", "a"), "a", "better", "pair must be two different agent ids"),
        (("a", "b"), "a", "funnier", "question 'funnier' is not one of"),
    ],
)
def test_invalid_votes_are_refused_and_not_written(tmp_path, pair, choice, question, message):
    with pytest.raises(PreferenceError, match=message):
        record_preference(tmp_path, pair, "brawler", 1, choice, question)
    assert not (tmp_path / PREFERENCES_FILE).exists()
    with pytest.raises(PreferenceError, match="run folder does not exist"):
        record_preference(tmp_path / "missing", ("a", "b"), "brawler", 1, "a")


def test_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / PREFERENCES_FILE
    good = vote("a", "b", "a").to_json()
    path.write_text(f"{good}\n{{oops\n{good}\n")
    with pytest.raises(PreferenceError, match=rf"{PREFERENCES_FILE}:2: not valid JSON"):
        load_preferences(tmp_path)
    path.write_text(f"{good}\n" + json.dumps({**json.loads(good), "seed": "7"}) + "\n")
    with pytest.raises(PreferenceError, match=rf"{PREFERENCES_FILE}:2: seed must be an integer"):
        load_preferences(tmp_path)
    path.write_text(json.dumps({**json.loads(good), "extra": 1}) + "\n")
    with pytest.raises(PreferenceError, match=r":1: missing keys \[\], unknown keys \['extra'\]"):
        load_preferences(tmp_path)


def test_a_vote_torn_by_a_crash_is_skipped_then_cut_off_by_the_next_vote(tmp_path):
    path = tmp_path / PREFERENCES_FILE
    good = vote("a", "b", "a").to_json()
    path.write_text(f"{good}\n{good[:25]}")  # the writer died mid-line
    assert len(load_preferences(tmp_path)) == 1
    record_preference(tmp_path, ("a", "b"), "brawler", 3, "b")
    votes = load_preferences(tmp_path)
    assert [v.choice for v in votes] == ["a", "b"]
    assert path.read_text().count("\n") == 2  # the unconfirmed fragment was cut off, not glued to the vote
    path.write_text(f"{good}\n{good[:25]}\n{good}\n")
    with pytest.raises(PreferenceError, match=":2: not valid JSON"):  # a fragment mid-file is not a crash artefact
        load_preferences(tmp_path)


def test_concurrent_votes_never_interleave(tmp_path):
    def rater(name: str) -> None:
        for i in range(40):
            record_preference(tmp_path, (name, "ref"), "brawler", i, name)

    threads = [threading.Thread(target=rater, args=(f"agent{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    votes = load_preferences(tmp_path)
    assert Counter(v.choice for v in votes) == {f"agent{k}": 40 for k in range(4)}


def test_ratings_follow_the_votes():
    votes = [
        vote("a", "b", "a", 0),
        vote("b", "a", "a", 1),
        vote("a", "c", "a", 2),
        vote("b", "c", TIE, 3),
        vote("a", "b", "b", 4, question="pro_like"),
    ]
    table = preference_ratings(votes, agent_ids=["a", "b", "c", "d"], question="better")
    assert tuple(table.columns) == RATING_COLUMNS
    rows = table.set_index("agent_id")
    assert list(table["agent_id"][:1]) == ["a"] and rows.loc["a", "pref_mu"] > 25 > rows.loc["b", "pref_mu"]
    assert rows.loc["a", ["votes", "wins", "ties", "losses"]].tolist() == [3, 3, 0, 0]
    assert rows.loc["b", ["votes", "wins", "ties", "losses"]].tolist() == [3, 0, 1, 2]
    assert rows.loc["d", "pref_mu"] == pytest.approx(25.0) and rows.loc["d", "votes"] == 0  # no votes: the prior
    assert rows.loc["a", "pref_sigma"] < rows.loc["d", "pref_sigma"]
    # the order votes were cast in, not the order of the list, decides the rating
    shuffled = preference_ratings(votes[::-1], question="better").set_index("agent_id")
    assert shuffled.loc["b", "pref_mu"] == pytest.approx(rows.loc["b", "pref_mu"])
    pro_like = preference_ratings(votes, question="pro_like").set_index("agent_id")
    assert pro_like.loc["b", "pref_mu"] > pro_like.loc["a", "pref_mu"] and set(pro_like.index) == {"a", "b"}


def test_next_pair_spreads_votes_and_randomizes_sides():
    ids = ["a", "b", "c", "d"]
    rng = np.random.default_rng(0)
    votes: list[Preference] = []
    sides = Counter()
    for minute in range(12):
        left, right = next_pair(ids, votes, rng)
        sides[left] += 1
        votes.append(vote(left, right, left, minute))
    per_pair = Counter(frozenset(v.pair) for v in votes)
    assert len(per_pair) == 6 and set(per_pair.values()) == {2}  # every pair judged equally often
    assert len(sides) >= 3  # the left side is not always the same agent
    with pytest.raises(PreferenceError, match="at least two agents"):
        next_pair(["a", "a"], [], rng)
