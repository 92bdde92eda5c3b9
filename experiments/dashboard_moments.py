"""The dashboard's "Key moments" page: where a clone fails the expert, offline and in matches.

Offline: a run's agent (and optionally a second one, side by side) on its dataset's split: counts of
missed / late / early / right per event, the ranked moments with filters (event, opponent, episode,
label), and a chosen moment's filmstrip and state features (``bcarena.eval.moments``). Closed loop:
the moment types (expert action, agent action, state) ranked by lost exchanges.

The first view reads what ``bcarena eval moments AGENT --dataset D --out <run>/moments/<agent_id>``
saved (``moments.parquet``, ``moments.json``, the worst moments' filmstrips, and with ``--matches``
the closed loop): no agent is loaded and torch is not imported. Anything not saved (another split or
window, an agent without saved moments, a second agent side by side, matches) is computed when asked
for, and cached. Read-only: nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pandas as pd
import streamlit as st

from bcarena.envs.errors import BcarenaError
from bcarena.envs.files import OutsideFolderError, inside, safe_name
from bcarena.envs.games import default_opponent
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
TOP = 50  # worst moments summarized in the caption (the CLI's default --top)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_dataset(path: str) -> ActionDataset:
    return ActionDataset.load(path)


@st.cache_data(show_spinner=False, max_entries=8)
def dataset_game(path: str) -> str:
    """The game a dataset folder was recorded in (its manifest's ``game``)."""
    return str(json.loads((Path(path) / "manifest.json").read_text()).get("game", "duel"))


@st.cache_data(show_spinner=False, max_entries=32)
def cached_saved(folder: str, stamp: float) -> tuple[pd.DataFrame, dict]:
    """Saved moments (``moments.parquet``) and their summary (``moments.json``); ``stamp`` is the table's mtime."""
    return pd.read_parquet(Path(folder) / "moments.parquet"), json.loads((Path(folder) / "moments.json").read_text())


@st.cache_data(show_spinner="Loading the agent and scoring the key moments...", max_entries=16)
def cached_moments(agent_spec: str, dataset: str, split: str, window: int) -> pd.DataFrame:
    from bcarena.eval.matches import load_player  # torch and the eval layer load only here

    return M.explore(load_player(agent_spec), cached_dataset(dataset), split, window)


@st.cache_data(show_spinner="Playing matches and asking the expert at every decision...", max_entries=8)
def cached_closed_loop(agent_spec: str, opponent: str, matches: int, game: str) -> pd.DataFrame:
    return M.closed_loop(agent_spec, [opponent], matches, game=game).types


def saved_folder(run: dash.RunView, agent_id: str) -> Path:
    """Where ``bcarena eval moments --out`` keeps an agent's moments for this run."""
    return run.path / "moments" / safe_name(agent_id)


def saved_moments(run: dash.RunView, agent_id: str, split: str, window: int) -> pd.DataFrame | None:
    """The agent's saved moments if they are for this ``split`` and ``window`` (else None)."""
    table = saved_folder(run, agent_id) / "moments.parquet"
    if not table.is_file() or not (table.parent / "moments.json").is_file():
        return None
    try:
        moments, summary = cached_saved(str(table.parent), table.stat().st_mtime)
    except (OSError, ValueError) as exc:  # a damaged file: say so, and compute instead
        st.warning(f"{table.parent}: saved moments unreadable ({exc}); computing them instead")
        return None
    if summary.get("split") != split or summary.get("window") != window:
        return None
    return moments


def agent_moments(
    run: dash.RunView, agent_id: str, spec: str, dataset: Path, split: str, window: int, ask: bool
) -> tuple[pd.DataFrame | None, bool]:
    """(moments, saved): the saved ones, else computed -- at once, or with ``ask`` after a button click."""
    saved = saved_moments(run, agent_id, split, window)
    if saved is not None:
        return saved, True
    key = f"moments_compute_{agent_id}_{split}_{window}"
    if ask and not st.session_state.get(key):
        st.info(
            f"No saved moments of **{agent_id}** on {split} (+-{window} frames). Save them for a fast first view: "
            f"`bcarena eval moments {spec} --dataset {dataset} --split {split} --window {window} "
            f"--out {saved_folder(run, agent_id)}`"
        )
        if not st.button("Compute them now (loads the agent)", key="moments_compute"):
            return None, False
        st.session_state[key] = True
    return cached_moments(spec, str(dataset), split, window), False


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
    window = int(window_col.number_input("+-frames", 0, 10, 2, key="moments_window"))
    try:
        moments, saved = agent_moments(run, first, agents[first], dataset, split, window, ask=True)
        if moments is None:
            return
        summary_line(first, dataset, split, moments, saved)
        counts = pd.DataFrame(M.counts(moments)).T.rename_axis("event").reset_index()
        st.dataframe(counts, hide_index=True)
        shown = filtered(moments)
        if second != "(none)":  # choosing a second agent asks for its moments
            other, _ = agent_moments(run, second, agents[second], dataset, split, window, ask=False)
            both = M.side_by_side(shown, other)
            st.subheader(f"{first} (left) and {second} (right) on the same moments")
            columns = ["rank_left", "episode", "frame", "event", "expert_action"]
            columns += [f"{c}_{s}" for s in ("left", "right") for c in ("agent_action", "p_expert", "label")]
            st.dataframe(both[columns].head(MAX_ROWS), hide_index=True, width="stretch")
        else:
            st.dataframe(shown[SHOWN].head(MAX_ROWS), hide_index=True, width="stretch")
        if len(shown):
            moment_detail(shown, saved_folder(run, first) if saved else None, dataset)
    except BcarenaError as exc:
        st.error(f"The moments cannot be computed: {exc}")
        return
    closed_loop_section(run, first, agents[first], dataset_game(str(dataset)))


def summary_line(agent_id: str, dataset: Path, split: str, moments: pd.DataFrame, saved: bool) -> None:
    summary = M.top_summary(moments, TOP)
    opportune = summary.get("skill_presses_in_opportune_states")
    st.caption(
        f"**{agent_id}** on `{dataset.name}` ({split}): {len(moments)} key moments. Of the {TOP} worst, "
        f"{summary['missed']} are missed, {summary['skill_presses'] or 0:.0%} are skill presses"
        + ("" if opportune is None else f", {opportune:.0%} skill presses in states the expert reads as opportune")
        + (" (saved by `bcarena eval moments`)." if saved else " (computed now).")
    )


def filtered(moments: pd.DataFrame) -> pd.DataFrame:
    events = sorted({n for s in moments["events"] for n in s.split(",") if n})
    a, b, c, d = st.columns(4)
    chosen_events = a.multiselect("Event", events, key="moments_events")
    opponents = b.multiselect("Opponent", sorted(moments["opponent"].unique()), key="moments_opponents")
    episodes = c.multiselect("Episode", sorted(moments["episode"].unique().tolist()), key="moments_episodes")
    labels = d.multiselect("Label", list(M.LABELS), key="moments_labels")
    return M.filter_moments(moments, chosen_events, opponents, episodes, labels)


def moment_detail(shown: pd.DataFrame, saved: Path | None, dataset: Path) -> None:
    """The chosen moment's filmstrip (the saved one if there is, else drawn from the dataset) and state."""
    rank = st.selectbox("Moment (rank)", shown["rank"].head(MAX_ROWS).tolist(), key="moments_rank")
    moment = shown[shown["rank"] == rank].iloc[0]
    png = saved / "filmstrips" / f"rank_{int(rank):04d}.png" if saved is not None else None
    caption = "frames -2..+2 (the moment framed in red)"
    if png is not None and png.is_file():
        st.image(str(png), caption=caption)
    else:
        image = M.moment_filmstrip(cached_dataset(str(dataset)), moment)
        st.image(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), caption=caption)
    states = moment[[c for c in moment.index if c.startswith("s_")]]
    with st.expander("State features"):
        st.dataframe(pd.DataFrame({"value": states}), width="stretch")


def closed_loop_section(run: dash.RunView, agent_id: str, spec: str, game: str) -> None:
    st.header("Closed-loop moments")
    saved = saved_folder(run, agent_id) / "closed_loop.parquet"
    if saved.is_file():
        types = pd.read_parquet(saved)
        st.caption(f"From `{saved}`.")
    else:
        from bcarena.envs.games import get_game

        played = get_game(game)
        first = default_opponent(played)
        a, b = st.columns(2)
        opponent = a.selectbox("Opponent", [first, *(o for o in played.opponents if o != first)], key="loop_opponent")
        matches = b.number_input("Matches", 1, 500, 20, key="loop_matches")
        if not st.button("Play the matches", key="loop_play"):
            st.caption("Plays the agent and asks the game's expert, at every decision, what it would do there.")
            return
        try:
            types = cached_closed_loop(spec, opponent, int(matches), game)
        except BcarenaError as exc:
            st.error(f"The matches cannot be played: {exc}")
            return
    st.dataframe(types.head(30), hide_index=True, width="stretch")
    st.caption(
        "A moment: the agent's choice differs from the expert's (its noise at 0: no hesitation). Lost: the agent "
        "was hit within the next second (its HP fell, or the opponent scored). Types are ranked by how many lost "
        "exchanges they preceded."
    )
