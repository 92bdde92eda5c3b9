"""Command-line commands of the recordings layer, added to the `bcarena` app by `register`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if Console().is_terminal else 120)
dataset_app = typer.Typer(no_args_is_help=True, help="Action datasets: build them from recordings, inspect, export.")


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=1)


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--split must be three comma-separated numbers, got {text!r}") from None
    if len(parts) != 3:
        raise typer.BadParameter(f"--split must be three comma-separated numbers (train,val,test), got {text!r}")
    return parts  # type: ignore[return-value]


def record(source: str = typer.Option("pro", help="Duel: a bot name; Boxing: 'expert'"),
           opponents: str = typer.Option("brawler,turtle,random,pro", help="Duel opponents, comma-separated, cycled"),
           episodes: int = typer.Option(50, min=1, help="episodes to record"),
           out: Path = typer.Option(Path("runs/recordings/pro"), help="folder of episode folders"),
           seed: int = typer.Option(0, help="recording seed; episode i plays match seed derive_seed(seed, i)"),
           game: str = typer.Option("duel", help="duel | boxing"),
           video: bool = typer.Option(True, help="also write video.mp4 for people (slower)"),
           max_frames: int = typer.Option(None, min=1, help="truncate episodes after this many frames"),
           resume: bool = typer.Option(False, help="complete a killed run: skip episodes already recorded")) -> None:
    """Record episodes of a bot (Duel) or the scripted expert (ALE Boxing): video, input log, state log, meta."""
    from bcarena.recordings.recorder import RecordOptions, record_episodes

    options = RecordOptions(video=video, max_frames=max_frames, resume=resume)
    try:
        folders = record_episodes(source, tuple(o for o in opponents.split(",") if o), episodes, out, seed, game,
                                  options)
    except (ValueError, KeyError) as exc:
        _fail(exc)
    console.print(f"recorded {len(folders)} episodes -> {out}")


def play(opponent: str = typer.Option("pro", help="the bot (name) or trained agent (folder) you play against"),
         out: Path = typer.Option(Path("runs/recordings/human"), help="folder of episode folders"),
         seed: int = typer.Option(0, help="match seed"),
         name: str = typer.Option("human", help="your name in the recording")) -> None:
    """Play Duel against a bot or a trained agent in a window at 10 FPS (keys on screen); the match is recorded."""
    from bcarena.recordings.play import play_duel

    try:
        folder = play_duel(opponent, out, seed, player_name=name)
    except (ValueError, KeyError) as exc:
        _fail(exc)
    console.print(f"recorded -> {folder}" if folder else "quit: nothing recorded")


@dataset_app.command("build")
def dataset_build(recordings: Path = typer.Argument(..., help="folder of episode folders (or one episode)"),
                  out: Path = typer.Argument(..., help="new dataset folder (must not exist)"),
                  alignment: str = typer.Option("window-priority", help="sample | window-priority"),
                  split: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions of episodes"),
                  seed: int = typer.Option(0, help="split seed"),
                  pixels: bool = typer.Option(True, help="store 84x84 frames (pixels.npy)")) -> None:
    """Convert recordings into an action dataset; prints the class table and lost presses per rule."""
    from bcarena.recordings.converter import build_dataset

    try:
        dataset = build_dataset(recordings, out, alignment, _split(split), seed, pixels=pixels)
    except ValueError as exc:
        _fail(exc)
    _print_stats(dataset)
    console.print(f"dataset -> {out}")


@dataset_app.command("stats")
def dataset_stats_cmd(path: Path = typer.Argument(..., help="dataset folder"),
                      plot: Path = typer.Option(None, help="bar chart PNG (default: <dataset>/classes.png)"),
                      json_out: Path = typer.Option(None, "--json", help="also write the stats as JSON here")) -> None:
    """Class distribution table and bar chart, event counts, imbalance ratio, episode lengths."""
    from bcarena.recordings.dataset import ActionDataset
    from bcarena.recordings.stats import plot_class_distribution

    try:
        dataset = ActionDataset.load(path)
    except ValueError as exc:
        _fail(exc)
    stats = _print_stats(dataset)
    png = plot_class_distribution(stats, plot or path / "classes.png")
    console.print(f"bar chart -> {png}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(stats.to_json(), indent=2) + "\n")
        console.print(f"stats -> {json_out}")


@dataset_app.command("export-minari")
def dataset_export_minari(path: Path = typer.Argument(..., help="dataset folder"),
                          dataset_id: str = typer.Argument(..., help="Minari id, e.g. bcarena/duel-pro-v0"),
                          observations: str = typer.Option("state", help="state | pixels")) -> None:
    """Export to Minari (under $MINARI_DATASETS_PATH); read it back with minari.load_dataset(id)."""
    from bcarena.recordings.dataset import ActionDataset
    from bcarena.recordings.minari_export import export_minari

    try:
        exported = export_minari(ActionDataset.load(path), dataset_id, observations)
    except ValueError as exc:
        _fail(exc)
    console.print(f"Minari dataset {dataset_id}: {exported.total_episodes} episodes, {exported.total_steps} steps")


def _print_stats(dataset):
    from bcarena.recordings.stats import dataset_stats

    stats = dataset_stats(dataset)
    table = Table("action", "frames", "share", "train", "val", "test", title=f"{dataset.manifest['game']} dataset: "
                  f"{len(dataset)} frames, {stats.episode_lengths.size} episodes")
    for name, row in stats.classes.iterrows():
        style = "bold red" if row["is_skill"] else None
        table.add_row(name, str(row["count"]), f"{row['fraction']:.2%}", str(row["train"]), str(row["val"]),
                      str(row["test"]), style=style)
    console.print(table)
    console.print(f"skill frames {stats.skill_fraction:.2%}; imbalance ratio {stats.imbalance_ratio:.1f}:1"
                  + (f"; never labelled: {stats.missing_classes}" if stats.missing_classes else ""))
    console.print("events: " + ", ".join(f"{k} {v}" for k, v in stats.event_counts.items()))
    lengths = stats.episode_lengths
    console.print(f"episode lengths (frames): min {lengths.min()}, mean {lengths.mean():.0f}, max {lengths.max()}")
    for rule, lost in stats.lost_presses.items():
        console.print(f"alignment {rule}: {lost['lost']} of {lost['presses']} skill presses lost")
    return stats


def register(app: typer.Typer) -> None:
    """Add this layer's commands and sub-apps to the root `bcarena` app."""
    app.command("record")(record)
    app.command("play")(play)
    app.add_typer(dataset_app, name="dataset")
