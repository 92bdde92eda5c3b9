"""The dashboard's "Key moments" page: where a clone fails the expert, offline and in matches.

Offline: a run's agent (and optionally a second one, side by side) on its dataset's split: counts of
missed / late / early / right per event, the ranked moments with filters (event, opponent, episode,
label), and a chosen moment's filmstrip and state features (``bcarena.eval.moments``). Closed loop:
the moment types (expert action, agent action, state) ranked by lost exchanges, from matches played
on demand (cached) or from ``bcarena eval moments --matches N --out <run>/moments/<agent>``.
Read-only: nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pandas as pd
import streamlit as st

from bcarena.envs.errors import BcarenaError
from bcarena.envs.files import OutsideFolderError, inside, safe_name
from bcarena.eval import moments as M
from bcarena.experiments import dashboard as dash
from bcarena.recordings.dataset import SPLITS, ActionDataset

SHOWN = [
    "rank",
    "episode",
    "frame",
    "opponent",
    "event",
    "expert_action",
    "agent_action",
    "p_expert",
    "label",
    "offset",
]
MAX_ROWS = 300  # moments listed at once (the table is filtered, not paged)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_dataset(path: str) -> ActionDataset:
    return ActionDataset.load(path)


@st.cache_data(show_spinner="Scoring the key moments...", max_entries=16)
def cached_moments(agent_spec: str, dataset: str, split: str, window: int) -> pd.DataFrame:
    from bcarena.eval.matches import load_player

    return M.explore(load_player(agent_spec), cached_dataset(dataset), split, window)


@st.cache_data(show_spinner="Playing matches and asking the pro at every decision...", max_entries=8)
def cached_closed_loop(agent_spec: str, opponent: str, matches: int) -> pd.DataFrame:
    return M.closed_loop(agent_spec, [opponent], matches).types


def run_dataset(run: dash.RunView) -> Path | None:
    """The run's dataset folder (``dataset_stats.json``), if it lies in the runs folder; else None + a message."""
    stats = run.dataset_stats or {}
    path = stats.get("dataset")
    if not isinstance(path, str):
        st.info("This run does not name its dataset (dataset_stats.json has no 'dataset').")
        return None
    try:
        return inside(run.path.parent.parent, Path(path), "dataset")
    except OutsideFolderError as exc:
        st.error(f"The run's dataset cannot be shown: {exc}")
        return None


def moments_page(run: dash.RunView) -> None:
    st.title("Key moments")
    dataset = run_dataset(run)
    candidates, _ = dash.ab_candidates(run)
    agents = {a.agent_id: dash.player_spec(run.path, a) for a in candidates if a.kind != "bot"}
    if dataset is None or not agents:
        st.info("Key moments need a run with a dataset and at least one trained agent.")
        return
    left, right, split_col, window_col = st.columns([3, 3, 1, 1])
    first = left.selectbox("Agent", list(agents), key="moments_agent")
    second = right.selectbox("Side by side with", ["(none)", *[a for a in agents if a != first]], key="moments_b")
    split = split_col.selectbox("Split", list(SPLITS), index=2, key="moments_split")
    window = window_col.number_input("+-frames", 0, 10, 2, key="moments_window")
    try:
        moments = cached_moments(agents[first], str(dataset), split, int(window))
    except BcarenaError as exc:
        st.error(f"The moments cannot be computed: {exc}")
        return
    summary = M.top_summary(moments, 50)
    opportune = summary.get("skill_presses_in_opportune_states")
    st.caption(
        f"**{first}** on `{dataset.name}` ({split}): {len(moments)} key moments. Of the 50 worst, "
        f"{summary['missed']} are missed, {summary['skill_presses'] or 0:.0%} are skill presses"
        + ("" if opportune is None else f", {opportune:.0%} skill presses in states the pro reads as opportune")
    )
    counts = pd.DataFrame(M.counts(moments)).T.rename_axis("event").reset_index()
    st.dataframe(counts, hide_index=True)
    shown = filtered(moments)
    if second != "(none)":
        other = cached_moments(agents[second], str(dataset), split, int(window))
        both = M.side_by_side(shown, other)
        st.subheader(f"{first} (left) and {second} (right) on the same moments")
        columns = ["rank_left", "episode", "frame", "event", "expert_action"]
        columns += [f"{c}_{s}" for s in ("left", "right") for c in ("agent_action", "p_expert", "label")]
        st.dataframe(both[columns].head(MAX_ROWS), hide_index=True, width="stretch")
    else:
        st.dataframe(shown[SHOWN].head(MAX_ROWS), hide_index=True, width="stretch")
    if len(shown):
        moment_detail(shown, cached_dataset(str(dataset)))
    closed_loop_section(run, first, agents[first])


def filtered(moments: pd.DataFrame) -> pd.DataFrame:
    events = sorted({n for s in moments["events"] for n in s.split(",") if n})
    a, b, c, d = st.columns(4)
    chosen_events = a.multiselect("Event", events, key="moments_events")
    opponents = b.multiselect("Opponent", sorted(moments["opponent"].unique()), key="moments_opponents")
    episodes = c.multiselect("Episode", sorted(moments["episode"].unique().tolist()), key="moments_episodes")
    labels = d.multiselect("Label", list(M.LABELS), key="moments_labels")
    return M.filter_moments(moments, chosen_events, opponents, episodes, labels)


def moment_detail(shown: pd.DataFrame, data: ActionDataset) -> None:
    rank = st.selectbox("Moment (rank)", shown["rank"].head(MAX_ROWS).tolist(), key="moments_rank")
    moment = shown[shown["rank"] == rank].iloc[0]
    image = M.moment_filmstrip(data, moment)
    st.image(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), caption="frames -2..+2 (the moment framed in red)")
    states = moment[[c for c in moment.index if c.startswith("s_")]]
    with st.expander("State features"):
        st.dataframe(pd.DataFrame({"value": states}), width="stretch")


def closed_loop_section(run: dash.RunView, agent_id: str, spec: str) -> None:
    st.header("Closed-loop moments")
    saved = run.path / "moments" / safe_name(agent_id) / "closed_loop.parquet"
    if saved.is_file():
        types = pd.read_parquet(saved)
        st.caption(f"From `{saved}`.")
    else:
        a, b = st.columns(2)
        opponent = a.selectbox("Opponent", ["brawler", "pro", "random", "turtle"], key="loop_opponent")
        matches = b.number_input("Matches", 1, 500, 20, key="loop_matches")
        if not st.button("Play the matches", key="loop_play"):
            st.caption("Plays the agent and asks the pro, at every decision, what it would do in that state.")
            return
        types = cached_closed_loop(spec, opponent, int(matches))
    st.dataframe(types.head(30), hide_index=True, width="stretch")
    st.caption(
        "A moment: the agent's choice differs from the pro's (without its hesitation). Lost: the agent's HP fell "
        "within the next second (10 decisions). Types are ranked by how many lost exchanges they preceded."
    )
