"""The bcarena dashboard (Streamlit page). Start it with ``bcarena dashboard [--runs runs/]``.

Pages: "Compare agents" (leaderboard, accuracy vs win rate, confusion matrices, dataset class
distribution, replays side by side, training curves), "Blind A/B" (two anonymous agents'
replays against the same opponent and seed; a person picks the better one; votes become a
rating beside the match rating), "Key moments" (``dashboard_moments``: where a clone fails the
expert, offline and in matches) and "Labeling" (``dashboard_labeling``: a recording's label
overlay). Data loading lives in ``bcarena.experiments.dashboard``.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from bcarena.experiments import dashboard as dash
from bcarena.experiments.preferences import (
    QUESTIONS,
    TIE,
    PreferenceError,
    load_preferences,
    next_pair,
    preference_ratings,
    record_preference,
)

SCATTER_METRICS = {
    "accuracy": "frame accuracy",
    "balanced_accuracy": "balanced accuracy",
    "skill_event_recall": "skill-event recall",
    "skill_event_f1": "skill-event F1",
}
PERCENT = st.column_config.NumberColumn(format="%.1f")


@st.cache_data(show_spinner=False, max_entries=8)
def cached_run(path: str, stamp: float) -> dash.RunView:
    """A run folder, re-read whenever its results.json changes (``stamp`` is its mtime)."""
    return dash.load_run(path)


@st.cache_data(show_spinner="Preparing the replay for the browser...", max_entries=32)
def cached_video(path: str, stamp: int) -> bytes:
    return dash.browser_video(path)


def show_replay(path: Path) -> None:
    if path.suffix.lower() == ".gif":
        st.image(str(path))
        return
    try:
        st.video(cached_video(str(path), path.stat().st_mtime_ns), format="video/webm")
    except dash.RunFolderError as exc:
        st.error(str(exc))


def pick_run() -> dash.RunView | None:
    root = Path(st.sidebar.text_input("Runs folder", str(dash.runs_root())))
    listing = dash.scan_runs(root)
    runs = listing.complete
    if listing.incomplete:
        st.sidebar.caption(f"{len(listing.incomplete)} incomplete run folder(s) not listed (killed or still running)")
    if not runs:
        st.info(
            f"No runs found under `{root}` (a run folder holds `results.json`). Create one with "
            f"`bcarena run EXPERIMENT.yaml` or `bcarena demo`, or point **Runs folder** elsewhere."
        )
        return None
    labels = {str(p.relative_to(root)) if p.is_relative_to(root) else str(p): p for p in runs}
    choice = st.sidebar.selectbox("Run (newest first)", list(labels))
    path = labels[choice]
    try:
        return cached_run(str(path), (path / "results.json").stat().st_mtime)
    except FileNotFoundError:
        st.error(f"This run cannot be shown: {path / 'results.json'} was removed; pick another run")
    except dash.RunFolderError as exc:
        st.error(f"This run cannot be shown: {exc}")
    return None


def votes_of(run: dash.RunView) -> list:
    try:
        return load_preferences(run.path)
    except PreferenceError as exc:
        st.error(f"Blind A/B votes cannot be read: {exc}")
        return []


# ------------------------------------------------------------------------------------ compare page
def compare_page(run: dash.RunView) -> None:
    st.title("Compare agents")
    env = run.environment
    st.caption(
        f"**{run.label}** · opponent **{run.results.primary_opponent}** · commit "
        f"`{str(env.get('git_commit', '?'))[:10]}` · {run.path}"
    )
    for problem in run.problems:
        st.warning(f"Skipped a file: {problem}")
    for agent in dash.failed_agents(run.results):
        st.error(f"{agent.agent_id} failed during the run: {agent.error}")

    st.header("Leaderboard")
    preferences = preference_ratings(votes_of(run), question="better")
    board = dash.leaderboard_view(run.results, preferences)
    st.dataframe(
        board,
        hide_index=True,
        width="stretch",
        column_config={
            "accuracy %": PERCENT,
            "balanced acc %": PERCENT,
            "win rate %": PERCENT,
            "skill-event F1": st.column_config.NumberColumn(format="%.3f"),
            "rating": st.column_config.NumberColumn(format="%.1f"),
            "rating ±": st.column_config.NumberColumn(format="%.1f"),
            "A/B rating": st.column_config.NumberColumn(
                format="%.1f", help="OpenSkill from blind A/B votes ('plays better')"
            ),
            "latency ms": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    st.caption(
        f"Win rate against {run.results.primary_opponent} with its Wilson 95% interval. "
        "Rating: OpenSkill from matches; A/B rating: OpenSkill from people's blind votes."
    )

    st.header("Offline metric vs win rate")
    scatter(run)
    if run.results.gap_report:
        with st.expander("Gap report: how well each offline metric predicts win rate"):
            st.json(run.results.gap_report)

    tabs = st.tabs(["Confusion matrices", "Dataset classes", "Replays", "Training curves", "Plots"])
    with tabs[0]:
        confusions(run)
    with tabs[1]:
        class_distribution(run)
    with tabs[2]:
        replays(run)
    with tabs[3]:
        curves(run)
    with tabs[4]:
        for plot in run.plots:
            st.image(str(plot), caption=plot.name)
        if not run.plots:
            st.info("This run wrote no plots.")


def scatter(run: dash.RunView) -> None:
    metric = st.selectbox("Offline metric", list(SCATTER_METRICS), format_func=SCATTER_METRICS.get)
    board = run.results.leaderboard()
    board = board[board["agent_id"].isin({a.agent_id for a in run.results.agents if a.error is None})]
    data = pd.DataFrame(
        {
            "agent": board["agent_id"],
            "kind": board["kind"],
            "offline": pd.to_numeric(board[metric], errors="coerce") * 100,
            "win rate": pd.to_numeric(board["win_rate"], errors="coerce") * 100,
            "low": pd.to_numeric(board["win_rate_low"], errors="coerce") * 100,
            "high": pd.to_numeric(board["win_rate_high"], errors="coerce") * 100,
        }
    ).dropna(subset=["offline", "win rate"])
    if data.empty:
        st.info(f"No agent has both {SCATTER_METRICS[metric]} and a win rate in this run.")
        return
    x = alt.X("offline:Q", title=f"{SCATTER_METRICS[metric]} (%)", scale=alt.Scale(zero=False, padding=24))
    y = alt.Y("win rate:Q", title=f"win rate vs {run.results.primary_opponent} (%)", scale=alt.Scale(domain=[0, 100]))
    base = alt.Chart(data)
    chart = (
        base.mark_rule().encode(x=x, y="low:Q", y2="high:Q", color="kind:N")
        + base.mark_circle(size=140).encode(
            x=x,
            y=y,
            color="kind:N",
            tooltip=[
                "agent",
                "kind",
                alt.Tooltip("offline:Q", format=".1f"),
                alt.Tooltip("win rate:Q", format=".1f"),
                alt.Tooltip("low:Q", format=".1f"),
                alt.Tooltip("high:Q", format=".1f"),
            ],
        )
        + base.mark_text(align="left", dx=9, dy=-6).encode(x=x, y=y, text="agent")
    )
    # Reference bots have no offline metrics: their win rate is the bar the clones should reach.
    references = board[(board["kind"] == "bot") & board[metric].isna() & board["win_rate"].notna()]
    if len(references):
        lines = pd.DataFrame(
            {
                "reference": references["agent_id"] + " (reference)",
                "win rate": references["win_rate"].astype(float) * 100,
            }
        )
        chart += alt.Chart(lines).mark_rule(strokeDash=[6, 4], color="gray").encode(y="win rate:Q") + alt.Chart(
            lines
        ).mark_text(align="left", x=4, dy=-7, color="gray").encode(y="win rate:Q", text="reference:N")
    st.altair_chart(chart.properties(height=380), width="stretch")
    st.caption(
        "Each dot is an agent; the bar is its 95% win-rate interval. High frame accuracy does not "
        "mean wins: a clone that never presses a skill is right on almost every frame and wins nothing."
    )


def confusions(run: dash.RunView) -> None:
    if not run.confusions:
        st.info("This run has no confusion matrices (confusion/<agent>.json).")
        return
    names = list(run.confusions)
    chosen = st.multiselect("Agents", names, default=names[:2], max_selections=3)
    for column, agent in zip(st.columns(max(len(chosen), 1)), chosen):
        matrix = run.confusions[agent]
        n = len(matrix.labels)
        cells = pd.DataFrame(
            {
                "true": np.repeat(matrix.labels, n),
                "predicted": np.tile(matrix.labels, n),
                "count": matrix.matrix.ravel(),
                "recall": matrix.row_normalized.ravel(),
            }
        )
        order = alt.Sort(matrix.labels)
        base = alt.Chart(cells).encode(x=alt.X("predicted:N", sort=order), y=alt.Y("true:N", sort=order))
        chart = base.mark_rect().encode(
            color=alt.Color("recall:Q", scale=alt.Scale(domain=[0, 1]), title="share of row"),
            tooltip=["true", "predicted", "count", alt.Tooltip("recall:Q", format=".2f")],
        ) + base.mark_text(fontSize=10).encode(
            text=alt.Text("count:Q", format=".0f"),
            color=alt.condition("datum.recall > 0.5", alt.value("white"), alt.value("black")),
        )
        with column:
            st.subheader(agent)
            st.altair_chart(chart.properties(height=320), width="stretch")
    st.caption("Rows are the true actions (normalized: the diagonal is per-class recall), columns the predicted ones.")


def class_distribution(run: dash.RunView) -> None:
    try:
        table = dash.class_distribution(run.dataset_stats)
        events = dash.event_counts(run.dataset_stats)
    except dash.RunFolderError as exc:
        st.error(f"{run.path / 'dataset_stats.json'}: {exc}")
        return
    if table.empty:
        st.info("This run has no dataset class counts (dataset_stats.json with class_counts).")
        return
    splits = list(dict.fromkeys(table["split"]))  # as written (train, val, test), not alphabetical
    chart = (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("action:N", sort=list(dict.fromkeys(table["action"]))),
            xOffset=alt.XOffset("split:N", sort=splits),
            y=alt.Y("fraction:Q", axis=alt.Axis(format="%"), title="share of frames"),
            color=alt.Color("split:N", sort=splits),
            tooltip=["split", "action", "count", alt.Tooltip("fraction:Q", format=".2%")],
        )
    )
    st.altair_chart(chart.properties(height=320), width="stretch")
    if len(events):
        st.dataframe(events, hide_index=True)
    st.caption(
        "Skills are a few percent of the pro's frames: that imbalance is why the naive clone never presses them."
    )


def replays(run: dash.RunView) -> None:
    videos = [p for p in run.replays if not p.name.startswith(dash.BLIND_PREFIX)]
    if not videos:
        st.info("This run has no replays (replays/*.mp4).")
        return
    side_by_side = [p for p in videos if p.stem == "side_by_side"]
    for path in side_by_side:
        st.subheader("Side by side: two agents, one opponent, one seed")
        show_replay(path)
    names = [p.name for p in videos]
    left, right = st.columns(2)
    for column, default, key in ((left, 0, "replay_left"), (right, min(1, len(names) - 1), "replay_right")):
        with column:
            name = st.selectbox("Replay", names, index=default, key=key)
            show_replay(run.path / "replays" / name)


def curves(run: dash.RunView) -> None:
    if run.curves.empty:
        st.info("This run has no training curves (curves/<agent>.json).")
        return
    metrics = sorted(run.curves["metric"].unique(), key=lambda m: (m != "train_loss", m))
    metric = st.selectbox("Curve", metrics)
    data = run.curves[run.curves["metric"] == metric]
    chart = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q"),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color="agent_id:N",
            tooltip=["agent_id", "epoch", alt.Tooltip("value:Q", format=".4f")],
        )
    )
    st.altair_chart(chart.properties(height=340), width="stretch")


# -------------------------------------------------------------------------------------- blind A/B
def ab_page(run: dash.RunView) -> None:
    st.title("Blind A/B")
    question = st.radio("Question", list(QUESTIONS), format_func=QUESTIONS.get, horizontal=True)
    candidates, skipped = dash.ab_candidates(run)
    if skipped:
        with st.expander(f"{len(skipped)} agent(s) cannot play a replay here"):
            for agent_id, reason in skipped.items():
                st.write(f"**{agent_id}**: {reason}")
    if len(candidates) < 2:
        st.info("A blind comparison needs at least two agents with a saved agent folder (or bots) in this run.")
        return
    opponent = run.results.primary_opponent
    by_id = {a.agent_id: a for a in candidates}
    votes = votes_of(run)
    trial = st.session_state.get("ab_trial")
    if (
        trial is None
        or trial["run"] != str(run.path)
        or trial["question"] != question
        or not set(trial["pair"]) <= set(by_id)
    ):
        trial = new_trial(run, list(by_id), votes, question)

    st.write(
        f"**{QUESTIONS[question]}** Both play **{opponent}** with the same match seed. "
        "Who is who stays hidden until you vote."
    )
    columns = st.columns(2)
    for column, side, agent_id in zip(columns, "AB", trial["pair"]):
        with column:
            st.subheader(f"Agent {side}")
            with st.spinner("Rendering the replay..."):
                try:
                    path = dash.blind_replay(run.path, by_id[agent_id], opponent, trial["seed"])
                except Exception as exc:  # a broken agent folder must not take the page down
                    st.error(f"The replay could not be rendered: {exc}")
                    continue
            show_replay(path)

    if trial["choice"] is None:
        a, tie, b = st.columns(3)
        a.button(
            "A",
            key="vote_a",
            on_click=vote,
            args=(run, trial, trial["pair"][0]),
            width="stretch",
            help="Agent A is the answer",
        )
        tie.button("Can't tell", key="vote_tie", on_click=vote, args=(run, trial, TIE), width="stretch")
        b.button(
            "B",
            key="vote_b",
            on_click=vote,
            args=(run, trial, trial["pair"][1]),
            width="stretch",
            help="Agent B is the answer",
        )
    else:
        left, right = trial["pair"]
        picked = "neither (can't tell)" if trial["choice"] == TIE else trial["choice"]
        st.success(f"Vote saved. A was **{left}**, B was **{right}**; you picked **{picked}**. (seed {trial['seed']})")
        st.button(
            "Next pair", key="next_pair", on_click=new_trial, args=(run, list(by_id), None, question), type="primary"
        )

    st.header("Ratings")
    ratings = preference_ratings(votes_of(run), agent_ids=list(by_id), question=question)
    board = run.results.leaderboard().set_index("agent_id")
    ratings["win rate %"] = ratings["agent_id"].map(board["win_rate"]) * 100
    ratings["match rating"] = ratings["agent_id"].map(board["rating_mu"])
    st.dataframe(
        ratings.rename(
            columns={"agent_id": "agent", "pref_mu": "A/B rating", "pref_sigma": "A/B ±", "pref_ordinal": "A/B ordinal"}
        ),
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.NumberColumn(format="%.1f")
            for c in ("A/B rating", "A/B ±", "A/B ordinal", "win rate %", "match rating")
        },
    )
    st.caption(
        "A/B rating: OpenSkill (Plackett-Luce) over the votes for this question, in the order they were "
        "cast; ordinal = rating - 3 x its uncertainty. Match rating and win rate come from the run."
    )


def new_trial(run: dash.RunView, agent_ids: list[str], votes: list | None, question: str) -> dict:
    """Draw the next pair (least-judged first, random sides) and a seed; remember it in the session."""
    rng = np.random.default_rng()
    votes = votes_of(run) if votes is None else votes
    pair = next_pair(agent_ids, votes, rng, question)
    seeds = dash.ab_seeds(run)
    trial = {
        "run": str(run.path),
        "question": question,
        "pair": pair,
        "seed": int(rng.choice(seeds)),
        "opponent": run.results.primary_opponent,
        "choice": None,
    }
    st.session_state["ab_trial"] = trial
    return trial


def vote(run: dash.RunView, trial: dict, choice: str) -> None:
    record_preference(run.path, trial["pair"], trial["opponent"], trial["seed"], choice, trial["question"])
    st.session_state["ab_trial"] = {**trial, "choice": choice}


# ------------------------------------------------------------------------ key moments, labeling
def seeds_page(run: dash.RunView) -> None:
    st.title("Across seeds")
    if run.aggregates is None:
        st.info(
            "This run has no aggregates across seeds: list 3 or more seeds (or set evaluation.aggregates: true "
            "with 2) and rerun."
        )
        return
    recipes, pairs = dash.aggregates_tables(run.aggregates)
    st.caption(
        f"Win rate per recipe over seeds x opponents ({', '.join(run.aggregates['opponents'])}): IQM and mean with "
        f"stratified-bootstrap 95% intervals ({run.aggregates['n_boot']} resamples)."
    )
    st.dataframe(recipes, hide_index=True, width="stretch")
    st.header("A against B")
    st.caption(
        "P(A>B): probability of improvement. McNemar: exact test on matches with identical match seeds; "
        "Wilcoxon: signed-rank on per-seed win-rate differences."
    )
    st.dataframe(pairs, hide_index=True, width="stretch")
    if run.profile_plot is not None:
        st.image(str(run.profile_plot), caption="Performance profiles: fraction of runs with win rate > tau")


@st.cache_resource(show_spinner=False)
def warm_imports() -> threading.Thread:
    """Import the Key moments and Labeling pages' modules (pandas, the recordings layer; torch only when a page
    computes moments on request) once per server, in the background while the first page shows, so switching to
    those pages does not wait for them."""
    modules = ("bcarena.experiments.dashboard_moments", "bcarena.experiments.dashboard_labeling")
    thread = threading.Thread(
        target=lambda: [importlib.import_module(m) for m in modules], name="warm-imports", daemon=True
    )
    thread.start()
    return thread


def moments_page(run: dash.RunView) -> None:
    from bcarena.experiments.dashboard_moments import moments_page as page

    page(run)


def labeling_page(run: dash.RunView) -> None:
    from bcarena.experiments.dashboard_labeling import labeling_page as page

    page(run)


# ------------------------------------------------------------------------------------------- main
st.set_page_config(page_title="bcarena dashboard", layout="wide")
warm_imports()
PAGES = {
    "Compare agents": compare_page,
    "Across seeds": seeds_page,
    "Blind A/B": ab_page,
    "Key moments": moments_page,
    "Labeling": labeling_page,
}
page = st.sidebar.radio("Page", list(PAGES))
selected = pick_run()
if selected is not None:
    PAGES[page](selected)
