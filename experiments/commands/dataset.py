"""``bcarena dataset build | stats | export-minari``: action datasets from recordings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from bcarena.envs.limits import MAX_SEED
from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import choice, numbers, path_to

app = command_app()
dataset_app = command_app("Action datasets: build them from recordings, inspect, export.")
app.add_typer(dataset_app, name="dataset")
if TYPE_CHECKING:  # the names are known at run time only: to a type checker each choice is a str
    ALIGNMENTS = str
    OBSERVATIONS = str
else:
    ALIGNMENTS = choice("bcarena.recordings.inputlog:ALIGNMENTS")
    OBSERVATIONS = choice("bcarena.recordings.minari_export:OBSERVATIONS")


@dataset_app.command("build")
def build(
    recordings: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="folder of episode folders (or one episode)"
    ),
    out: Path = typer.Argument(..., parser=path_to("folder"), help="new dataset folder (must not exist)"),
    alignment: ALIGNMENTS = typer.Option("window-priority", help="how key events become frame labels"),
    split: Any = typer.Option(
        "0.8,0.1,0.1",
        parser=numbers("train", "val", "test"),
        metavar="TRAIN,VAL,TEST",
        help="fractions of episodes per split",
    ),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="split seed"),
    pixels: bool = typer.Option(True, help="store 84x84 frames (pixels.npy)"),
    strict: bool = typer.Option(True, help="refuse entries that are not complete episodes (else warn, skip)"),
    reaction_delay: str = typer.Option(
        "0", metavar="K|auto", help="label each frame with the action K frames later; auto: chosen per player"
    ),
    max_reaction_delay: int = typer.Option(5, min=0, help="largest K that --reaction-delay auto tries"),
) -> None:
    """Convert recordings into an action dataset; prints the class table and lost presses per rule."""
    from bcarena.recordings.converter import build_dataset
    from bcarena.recordings.reaction_delay import parse_delay

    delay = parse_delay(reaction_delay)
    dataset = build_dataset(
        recordings,
        out,
        alignment,
        split,
        seed,
        pixels=pixels,
        strict=strict,
        reaction_delay=delay,
        max_reaction_delay=max_reaction_delay,
    )
    _print_stats(dataset)
    for overlay in dataset.manifest.get("overlays", []):
        console.print(
            f"label overlay {overlay['path']} applied: revision {overlay['revision']}, {overlay['edits']} edit(s), "
            f"{dataset.manifest['event_counts'].get('marked', 0)} marked frame(s)"
        )
    if delay:
        console.print(f"reaction delay (frames) per player: {dataset.manifest['reaction_delay']}")
    console.print(f"dataset -> {out}")


@dataset_app.command("stats")
def stats(
    path: Path = typer.Argument(..., exists=True, file_okay=False, help="dataset folder"),
    plot: Path | None = typer.Option(
        None, parser=path_to("file"), help="bar chart PNG (default: <dataset>/classes.png)"
    ),
    json_out: Path | None = typer.Option(
        None, "--json", parser=path_to("file"), help="also write the stats as JSON here"
    ),
) -> None:
    """Class distribution table and bar chart, event counts, imbalance ratio, episode lengths."""
    from bcarena.envs.files import write_json
    from bcarena.recordings.dataset import ActionDataset
    from bcarena.recordings.stats import plot_class_distribution

    dataset = ActionDataset.load(path)
    summary = _print_stats(dataset)
    console.print(f"bar chart -> {plot_class_distribution(summary, plot or path / 'classes.png')}")
    if json_out:
        console.print(f"stats -> {write_json(json_out, summary.to_json())}")


@dataset_app.command("export-minari")
def export_minari(
    path: Path = typer.Argument(..., exists=True, file_okay=False, help="dataset folder"),
    dataset_id: str = typer.Argument(..., help="Minari id, e.g. bcarena/duel-pro-v0"),
    observations: OBSERVATIONS = typer.Option("state", help="which observations to export"),
) -> None:
    """Export to Minari (under $MINARI_DATASETS_PATH); read it back with minari.load_dataset(id)."""
    from bcarena.recordings.dataset import ActionDataset
    from bcarena.recordings.minari_export import export_minari as export

    exported = export(ActionDataset.load(path), dataset_id, observations)
    console.print(f"Minari dataset {dataset_id}: {exported.total_episodes} episodes, {exported.total_steps} steps")


def _print_stats(dataset: Any) -> Any:
    from bcarena.recordings.stats import dataset_stats

    summary = dataset_stats(dataset)
    table = Table(
        "action",
        "frames",
        "share",
        "train",
        "val",
        "test",
        title=f"{dataset.manifest['game']} dataset: {len(dataset)} frames, {summary.episode_lengths.size} episodes",
    )
    for name, row in summary.classes.iterrows():
        table.add_row(
            name,
            str(row["count"]),
            f"{row['fraction']:.2%}",
            str(row["train"]),
            str(row["val"]),
            str(row["test"]),
            style="bold red" if row["is_skill"] else None,
        )
    console.print(table)
    console.print(
        f"skill frames {summary.skill_fraction:.2%}; imbalance ratio {summary.imbalance_ratio:.1f}:1"
        + (f"; never labelled: {summary.missing_classes}" if summary.missing_classes else "")
    )
    console.print("events: " + ", ".join(f"{k} {v}" for k, v in summary.event_counts.items()))
    lengths = summary.episode_lengths
    console.print(f"episode lengths (frames): min {lengths.min()}, mean {lengths.mean():.0f}, max {lengths.max()}")
    for rule, lost in summary.lost_presses.items():
        console.print(f"alignment {rule}: {lost['lost']} of {lost['presses']} skill presses lost")
    return summary
