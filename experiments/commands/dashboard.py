"""``bcarena dashboard``: the read-only comparison page (Streamlit) over run folders."""

from __future__ import annotations

from pathlib import Path

import typer

from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import path_to

app = command_app()


@app.command("dashboard")
def dashboard(
    runs: Path = typer.Option(
        Path("runs"), parser=path_to("folder"), help="folder searched (any depth) for run folders"
    ),
    port: int = typer.Option(8501, min=1, max=65535, help="port to serve the page on"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 to share it)"),
    open_browser: bool = typer.Option(False, "--open/--no-open", help="open a browser tab"),
) -> None:
    """Compare agents in the browser: leaderboard, accuracy vs win rate, replays, A/B.

    Also confusion matrices, class distributions and blind A/B votes. Read-only except for votes.
    """
    from bcarena.experiments import dashboard as page

    if not page.streamlit_available():  # before listing runs: they would be listed for nothing
        raise page.DashboardUnavailable(f"the dashboard needs Streamlit, which is not installed: {page.INSTALL_HINT}")
    listing = page.scan_runs(runs)
    found = listing.complete
    if listing.incomplete:
        console.print(f"{len(listing.incomplete)} incomplete run folder(s) skipped (killed or still running)")
    if not found:
        console.print(
            f"No run folders under {runs}/ yet (a run folder holds results.json). "
            f"Create one with `bcarena run EXPERIMENT.yaml` or `bcarena demo`; the page will list it."
        )
    else:
        console.print(f"{len(found)} run folder(s) under {runs}/; newest: {found[0]}")
    console.print(f"Dashboard: http://{host}:{port}  (Ctrl+C stops it)")
    page.launch(runs, port, host, open_browser)
