"""``bcarena ab CHAMPION CHALLENGER``: an online A/B test stopped by a sequential probability ratio test.

Players are anything :func:`bcarena.eval.matches.load_player` loads (agent folders, bots, server URLs, so the test
can run through the service) and registered models (``models:/NAME@champion``, ``models:/NAME/3``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bcarena.envs.limits import MAX_MATCHES, MAX_SEED
from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import choice, path_to

app = command_app()
PLAYER_HELP = "agent folder, bot, server URL or models:/NAME@ALIAS | models:/NAME/VERSION"
if TYPE_CHECKING:
    MODEL = str
else:
    MODEL = choice("bcarena.eval.service.ab:MODELS")


@app.command("ab")
def ab(
    champion: str = typer.Argument(..., help=PLAYER_HELP),
    challenger: str = typer.Argument(..., help=PLAYER_HELP),
    opponent: str = typer.Option(
        "head-to-head", help="head-to-head, or a reference player both meet on the same seeds (e.g. pro, brawler)"
    ),
    model: MODEL = typer.Option("pentanomial", help="SPRT model: pentanomial (pairs of games) or trinomial (games)"),
    elo0: float = typer.Option(0.0, help="H0: the challenger is this many logistic Elo better"),
    elo1: float = typer.Option(20.0, help="H1: the challenger is this many logistic Elo better"),
    alpha: float = typer.Option(0.05, help="false-positive rate (0 < alpha < 0.5)"),
    beta: float = typer.Option(0.05, help="false-negative rate (0 < beta < 0.5)"),
    max_matches: int = typer.Option(2000, max=MAX_MATCHES, help="match budget (games); stop undecided when spent"),
    batch: int = typer.Option(100, max=MAX_MATCHES, help="games per batch; the SPRT is updated after each"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="first match seed (each seed is played on both sides)"),
    promote: bool = typer.Option(False, help="on H1, point the registry alias at the challenger's version"),
    alias: str = typer.Option("champion", help="the alias --promote moves"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI of the registry (default: local SQLite)"),
    out: Path = typer.Option(
        Path("runs/service/ab"), parser=path_to("folder"), help="folder for ab.json and ab_llr.png"
    ),
) -> None:
    """A/B test a challenger against the champion: paired matches stopped by an SPRT in Elo.

    Writes ab.json (decision H1 | H0 | undecided, LLR and its trace, Elo +- 95%, LOS, W/D/L, pentanomial counts)
    and ab_llr.png.
    """
    from tqdm.auto import tqdm

    from bcarena.envs.files import write_json
    from bcarena.eval.matches import display_names
    from bcarena.eval.service.ab import SprtSettings, ab_game, load_ab_player, plot_trace, run_ab
    from bcarena.eval.service.registry import RegistryError, is_model_uri, model_version, set_alias

    settings = SprtSettings(elo0, elo1, alpha, beta, model, max_matches, batch)
    if promote and not is_model_uri(challenger):
        raise RegistryError(
            f"--promote needs a registered challenger (models:/NAME@ALIAS or /VERSION), got {challenger!r}"
        )
    target = model_version(challenger, tracking_uri) if promote else None
    game = ab_game([champion, challenger], tracking_uri)  # the game the agents declare: its matches are played
    players = [load_ab_player(spec, tracking_uri, game=game) for spec in (champion, challenger)]
    reference = None if opponent == "head-to-head" else load_ab_player(opponent, tracking_uri, game=game)
    with tqdm(total=max_matches, desc="A/B matches", unit="match") as bar:

        def progress(result) -> None:
            bar.update(result.matches - bar.n)
            bar.set_postfix(llr=f"{result.llr():.2f}")

        result = run_ab(players[0], players[1], settings, reference, seed, on_batch=progress, game=game)
    result.champion, result.challenger = display_names([champion, challenger], players)
    data = result.to_dict()
    console.print(
        f"{data['decision']}: LLR {data['llr']:.2f} in [{data['bounds'][0]:.2f}, {data['bounds'][1]:.2f}] after "
        f"{data['matches']} matches; challenger Elo {data['elo']:+.1f} "
        f"[{data['elo_ci95'][0]:+.1f}, {data['elo_ci95'][1]:+.1f}], LOS {data['los']:.1%}; "
        f"W/D/L {data['wdl']['wins']}/{data['wdl']['draws']}/{data['wdl']['losses']}"
    )
    if target is not None and result.decision == "H1":
        set_alias(target[0], alias, target[1], tracking_uri)
        data["promoted"] = {"model": target[0], "alias": alias, "version": target[1]}
        console.print(f"promoted models:/{target[0]}/{target[1]} to alias {alias!r}")
    console.print(f"wrote {write_json(out / 'ab.json', data)} and {plot_trace(result, out / 'ab_llr.png')}")
