"""Blind A/B judgements of replays: the qualitative, online corner of the evaluation grid.

A person watches two anonymous agents play the same opponent with the same match seed and says
which one plays better (or more like the pro). Every vote is one JSON line appended to
``<run>/preferences.jsonl`` (``bcarena.experiments.results.PREFERENCES_FILE``)::

    {"timestamp": "2025-01-31T12:00:00.123456+00:00", "question": "better",
     "pair": ["naive-s0", "rebalanced-s0"], "opponent": "brawler", "seed": 10003,
     "choice": "rebalanced-s0"}

``pair`` is (left, right) as shown on screen; ``choice`` is one of the pair or ``"tie"``. The
file is append-only: each vote is written with one ``write`` on an ``O_APPEND`` descriptor under
an exclusive lock, then fsynced, so concurrent raters never interleave and a vote that was
acknowledged survives a crash. (The one exception to append-only: the fragment of a vote torn by
a crash mid-write, never acknowledged, is cut off by the next writer.) Votes become an OpenSkill rating
(the same model and scale as the match rating), replayed in timestamp order so the result is reproducible.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from openskill.models import PlackettLuce

from bcarena.envs.errors import BcarenaError
from bcarena.experiments.results import PREFERENCES_FILE

QUESTIONS: dict[str, str] = {
    "better": "Which agent plays better?",
    "pro_like": "Which agent plays more like the pro?",
}
TIE = "tie"
RATING_COLUMNS: tuple[str, ...] = (
    "agent_id",
    "votes",
    "wins",
    "ties",
    "losses",
    "pref_mu",
    "pref_sigma",
    "pref_ordinal",
)


class PreferenceError(BcarenaError, ValueError):
    """A vote is invalid, or the preferences file holds a line that is not a valid vote."""


@dataclass(frozen=True)
class Preference:
    """One blind A/B vote. ``pair`` is (left, right) as shown; ``seed`` is the match seed both played."""

    timestamp: str  # ISO 8601 with time zone
    question: str  # a key of QUESTIONS
    pair: tuple[str, str]
    opponent: str
    seed: int
    choice: str  # pair[0], pair[1] or TIE

    def __post_init__(self) -> None:
        if self.question not in QUESTIONS:
            raise PreferenceError(f"question {self.question!r} is not one of {sorted(QUESTIONS)}")
        if len(self.pair) != 2 or self.pair[0] == self.pair[1] or not all(isinstance(a, str) and a for a in self.pair):
            raise PreferenceError(f"pair must be two different agent ids, got {list(self.pair)!r}")
        if self.choice not in (*self.pair, TIE):
            raise PreferenceError(f"choice {self.choice!r} must be one of the pair {list(self.pair)} or {TIE!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise PreferenceError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.opponent, str) or not self.opponent:
            raise PreferenceError(f"opponent must be a non-empty string, got {self.opponent!r}")
        try:
            datetime.fromisoformat(self.timestamp)
        except (TypeError, ValueError):
            raise PreferenceError(f"timestamp {self.timestamp!r} is not an ISO 8601 date-time") from None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "pair": list(self.pair)}, separators=(", ", ": "))

    @classmethod
    def from_dict(cls, data: Any) -> Preference:
        if not isinstance(data, dict):
            raise PreferenceError(f"expected a JSON object, got {type(data).__name__}")
        expected = set(cls.__dataclass_fields__)
        missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
        if missing or unknown:
            raise PreferenceError(f"missing keys {missing}, unknown keys {unknown} (expected {sorted(expected)})")
        pair = data["pair"]
        if not isinstance(pair, list):
            raise PreferenceError(f"pair must be a list of two agent ids, got {pair!r}")
        return cls(**{**data, "pair": tuple(pair)})


def record_preference(
    run_dir: str | Path,
    pair: tuple[str, str],
    opponent: str,
    seed: int,
    choice: str,
    question: str = "better",
    timestamp: datetime | None = None,
) -> Preference:
    """Validate one vote and append it durably to ``<run_dir>/preferences.jsonl``; returns it."""
    when = (timestamp or datetime.now(timezone.utc)).isoformat()
    vote = Preference(when, question, (str(pair[0]), str(pair[1])), str(opponent), int(seed), str(choice))
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PreferenceError(f"{run_dir}: run folder does not exist")
    line = (vote.to_json() + "\n").encode()
    fd = os.open(run_dir / PREFERENCES_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A writer killed mid-line left a fragment of a vote it never confirmed: drop it, or
            # this vote would be glued onto it.
            os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    return vote


def load_preferences(run_dir: str | Path) -> list[Preference]:
    """All votes of a run, in file order ([] when nobody has voted yet).

    A malformed line is an error naming the file and line, except a final line without its
    newline that does not parse: that is a vote torn by a crash mid-write, and it is skipped.
    """
    path = Path(run_dir) / PREFERENCES_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    votes = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines)  # no newline after it
        try:
            votes.append(Preference.from_dict(json.loads(line)))
        except json.JSONDecodeError as exc:
            if torn:
                continue
            raise PreferenceError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        except (PreferenceError, TypeError) as exc:
            if torn:
                continue
            raise PreferenceError(f"{path}:{number}: {exc}") from None
    return votes


def preference_ratings(
    votes: list[Preference], agent_ids: list[str] | None = None, question: str | None = None
) -> pd.DataFrame:
    """OpenSkill (Plackett-Luce) ratings from pairwise votes, one row per agent (``RATING_COLUMNS``).

    Votes are replayed in timestamp order. ``question`` keeps only that question's votes;
    ``agent_ids`` lists agents to include even without votes (they keep the prior mu=25,
    sigma=25/3). Sorted by ordinal (mu - 3 sigma), best first.
    """
    model = PlackettLuce()
    selected = sorted(
        (v for v in votes if question is None or v.question == question),
        key=lambda v: datetime.fromisoformat(v.timestamp),
    )
    ids = list(dict.fromkeys([*(agent_ids or []), *(a for v in selected for a in v.pair)]))
    ratings = {a: model.rating(name=a) for a in ids}
    tally = {a: {"votes": 0, "wins": 0, "ties": 0, "losses": 0} for a in ids}
    for vote in selected:
        left, right = vote.pair
        ranks = [1, 1] if vote.choice == TIE else ([1, 2] if vote.choice == left else [2, 1])
        [[ratings[left]], [ratings[right]]] = model.rate([[ratings[left]], [ratings[right]]], ranks=ranks)
        for agent, rank, other in ((left, ranks[0], ranks[1]), (right, ranks[1], ranks[0])):
            tally[agent]["votes"] += 1
            tally[agent]["wins" if rank < other else "losses" if rank > other else "ties"] += 1
    rows = [
        {
            "agent_id": a,
            **tally[a],
            "pref_mu": ratings[a].mu,
            "pref_sigma": ratings[a].sigma,
            "pref_ordinal": ratings[a].ordinal(),
        }
        for a in ids
    ]
    table = pd.DataFrame(rows, columns=list(RATING_COLUMNS))
    return table.sort_values("pref_ordinal", ascending=False, ignore_index=True)


def next_pair(
    agent_ids: list[str], votes: list[Preference], rng: np.random.Generator, question: str | None = None
) -> tuple[str, str]:
    """The next pair to judge: one of the least-judged pairs (so votes spread over all pairs), in random order."""
    unique = list(dict.fromkeys(agent_ids))
    if len(unique) < 2:
        raise PreferenceError(f"a blind A/B comparison needs at least two agents, got {unique}")
    counts = {frozenset(p): 0 for p in itertools.combinations(unique, 2)}
    for vote in votes:
        key = frozenset(vote.pair)
        if key in counts and (question is None or vote.question == question):
            counts[key] += 1
    fewest = min(counts.values())
    candidates = [tuple(sorted(p)) for p, n in counts.items() if n == fewest]
    pair = list(candidates[rng.integers(len(candidates))])
    rng.shuffle(pair)
    return pair[0], pair[1]
