"""``bcarena record`` and ``bcarena play``: gameplay captured as episode folders at 10 FPS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bcarena.envs.limits import MAX_EPISODES, MAX_FRAMES, MAX_RECORD_BATCH, MAX_SEED
from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import names, path_to

app = command_app()
SOURCE_HELP = (
    "Duel: a bot name, perturbed bot like 'pro[skill_drop=0.9]' or agent folder; another game: one of its "
    "built-in players (Boxing: 'expert') or an agent folder"
)


def _player(spec: str, game: str = "duel") -> Any:
    """Built-in names go to the recorder as they are (it feeds bots their match's noise streams); anything
    else (agent folder, perturbed bot, server URL) is loaded here, since recorders take policies."""
    from bcarena.envs.duel.bots import BOTS as bots
    from bcarena.envs.games import get_game
    from bcarena.eval.matches import load_player

    builtin = bots if game == "duel" else get_game(game).players
    return spec if spec in builtin else load_player(spec)


@app.command("record")
def record(
    source: str = typer.Option("pro", help=SOURCE_HELP),
    opponents: Any = typer.Option(
        None,
        parser=names(),
        metavar="A,B,...",
        help="opponents, comma-separated, cycled (default: Duel brawler,turtle,random,pro; another game its first)",
    ),
    episodes: int = typer.Option(50, min=1, max=MAX_EPISODES, help="episodes to record"),
    out: Path = typer.Option(Path("runs/recordings/pro"), parser=path_to("folder"), help="folder of episode folders"),
    seed: int = typer.Option(
        0, min=0, max=MAX_SEED, help="recording seed; episode i plays match seed derive_seed(seed, i)"
    ),
    game: str = typer.Option("duel", help="the game to record: a registered game (duel, boxing, plugins)"),
    video: bool = typer.Option(True, help="also write video.mp4 for people (slower)"),
    max_frames: int | None = typer.Option(None, min=1, max=MAX_FRAMES, help="truncate episodes after this many frames"),
    batch_size: int = typer.Option(
        32, min=1, max=MAX_RECORD_BATCH, help="Duel matches played at once (a kill loses up to this many episodes)"
    ),
    resume: bool = typer.Option(
        False, help="complete a killed run with the same settings: skip episodes already recorded"
    ),
) -> None:
    """Record episodes of a bot (Duel), a game's built-in expert (ALE Boxing: expert) or an agent.

    Each episode is a folder: video, input log, state log and meta.json. An episode is written when
    its match ends; Duel plays --batch-size matches at once, so a killed recorder loses at most
    --batch-size episodes (Boxing: one), which --resume records again. --resume refuses a folder
    recorded with other settings (source, opponents, seed, game options; see its recording.json).
    """
    from bcarena.envs.games import get_game
    from bcarena.recordings.recorder import DEFAULT_OPPONENTS, RecordOptions, record_episodes

    found = get_game(game)  # an unknown game: one line listing the known ones
    rivals = opponents or (DEFAULT_OPPONENTS if game == "duel" else list(found.opponents)[:1])
    options = RecordOptions(video=video, max_frames=max_frames, batch_size=batch_size, resume=resume)
    players = [_player(source, game), *(_player(o, game) for o in rivals)]
    folders = record_episodes(players[0], players[1:], episodes, out, seed, game, options)
    console.print(f"recorded {len(folders)} episodes -> {out}")


@app.command("play")
def play(
    opponent: str = typer.Option("pro", help="the bot (name) or trained agent (folder) you play against"),
    out: Path = typer.Option(Path("runs/recordings/human"), parser=path_to("folder"), help="folder of episode folders"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="match seed"),
    name: str = typer.Option("human", help="your name in the recording"),
) -> None:
    """Play Duel against a bot or a trained agent in a window at 10 FPS; the match is recorded.

    The keys are shown on screen.
    """
    from bcarena.recordings.play import play_duel, require_display

    require_display()  # before loading an agent: without a window there is nothing to play in
    folder = play_duel(_player(opponent), out, seed, player_name=name)
    console.print(f"recorded -> {folder}" if folder else "quit: nothing recorded")
