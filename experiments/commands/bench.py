"""``bcarena bench NAME``: throughput benchmarks (``bcarena.experiments.benchmarks``), JSON output."""

from __future__ import annotations

import importlib

import typer

from bcarena.experiments.commands import command_app

app = command_app()
bench_app = command_app("Throughput benchmarks (JSON output).")
app.add_typer(bench_app, name="bench")

BENCHMARKS: dict[str, tuple[str, str]] = {  # command -> (module in experiments/benchmarks, summary)
    "env": ("env_throughput", "Vector env decisions/s at N = 1..4096 vs SyncVectorEnv; batched 84x84 rendering."),
    "dataset": ("dataset_build", "Dataset build throughput: frames/s and multiple of real time."),
    "train": ("train_throughput", "BC training samples/s (MLP, CNN; index batching vs DataLoader) and peak memory."),
    "study": ("study_speed", "Agents trained per minute for a study: batched ensemble vs one at a time."),
    "matches": ("match_throughput", "Matches/s of MLP and CNN agents, batched vs one match at a time."),
    "serving": ("serving", "Latency per decision (torch vs ONNX Runtime), HTTP latency and throughput."),
    "ray": ("ray_scaling", "Local vs Ray executor (identical metrics, wall-time ratio); 1,000-agent tournament cost."),
    "service-swap": (
        "service_swap",
        "Open-loop HTTP: client ceiling, highest rate with p99 <= 10 ms, a model swap under 1,000 requests/s.",
    ),
    "int8": ("int8", "int8 vs fp32 ONNX: size and latency ratios, action agreement, paired win-rate difference."),
    "ab": ("ab_null", "A/B false positives: two copies of one agent never reach H1 over many seed ranges."),
    "boxing": ("boxing_throughput", "ALE Boxing bouts/s in emulator worker processes vs one bout at a time."),
    "dashboard": (
        "dashboard_first_view",
        "First view of the Key moments and Labeling pages (server side, Chromium) vs computing the moments.",
    ),
    "pixel-agent": (
        "pixel_agent_throughput",
        "Pixel agents (Nature CNN, CNN, compact CNN): MACs/frame, train samples/s, decisions/s, matches/s.",
    ),
}


def _add_benchmark(name: str, module: str, summary: str) -> None:
    # Forwarding keeps `bcarena bench --help` fast: a benchmark's heavy imports load only when it runs.
    @bench_app.command(
        name,
        help=f"{summary} JSON output; `bcarena bench {name} --help` lists its options.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    )
    def command(ctx: typer.Context) -> None:
        bench = typer.Typer(add_completion=False, rich_markup_mode=None)
        bench.command()(importlib.import_module(f"bcarena.experiments.benchmarks.{module}").main)
        # Not standalone: its usage errors reach the root's one-line handler instead of exiting here.
        code = typer.main.get_command(bench).main(
            args=ctx.args, prog_name=f"bcarena bench {name}", standalone_mode=False
        )
        if isinstance(code, int) and code:
            raise typer.Exit(code)


for _name, (_module, _summary) in BENCHMARKS.items():
    _add_benchmark(_name, _module, _summary)
