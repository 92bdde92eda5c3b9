"""Benchmark: pixel agents' cost (MACs, training samples/s, decisions/s, matches/s) against the compute limit.

Run: ``bcarena bench pixel-agent [--out FILE.json]``.

For each network, all the CNN policy's layout (convs 8x8/4, 4x4/2, 3x3/1, then one hidden layer) on 84x84
gray frames stacked ``frame_stack`` deep (2, as the story): ``nature``, the Nature-DQN size (channels
[32, 64, 64], hidden 512); ``cnn``, the CNN policy's defaults (half that width: [16, 32, 32], 256); and
``compact``, as experiments/seed_story_pixels.yaml trains it ([8, 16, 16], 64):

* ``macs_per_frame``: multiply-accumulates of one decision (convolutions and linear layers, :func:`macs`);
* ``decisions_per_s``: ``TorchAgent.act`` on batches of uint8 frames (what a match asks: frame
  stacking, normalization, the network, argmax), per batch size; and the network alone
  (``forward_per_s``, float inputs already stacked);
* ``train_samples_per_s``: forward + backward + AdamW steps of the network on stacked float batches;
* ``matches``: ``matches_per_s`` (and decisions/s, mean length) of ``--matches`` whole Duel matches against
  the brawler played from pixels through the one match loop (``play_matches``: rendering, frame
  stacking and the network, all batched). The networks are untrained, so match length differs by
  network: ``mean_length`` says how long they were;
* ``fraction_of_gemm_limit``: achieved FLOP/s (2 x MACs x decisions/s) over the GFLOP/s of a large
  float32 matrix product (``--gemm-size``) measured in the same run with the same torch threads — the
  compute limit — and ``fraction_of_conv_limit`` likewise over a large, well-shaped convolution.

Rates are per CPU-second of this process by default (``--clock cpu``; one torch thread): on a machine
other jobs share, wall-clock rates fall with the load while these do not. ``--clock wall`` times wall seconds.

A fraction well under 1 says the small network is bound by per-call overhead and memory traffic
(small convolutions, uint8 -> float conversion, frame stacking), not by arithmetic.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from bcarena.agents.policies import ScoreModel, build_policy
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, NUM_ACTIONS, SKILL_ACTIONS
from bcarena.eval.matches import load_player, match_seeds, play_matches
from bcarena.experiments.benchmarks import emit

FRAME = 84
# The two pixel networks compared: key -> (policy name, its config beyond frame_stack / num_actions).
NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "nature": ("cnn", {"channels": [32, 64, 64], "hidden": 512}),
    "cnn": ("cnn", {}),
    "compact": ("cnn", {"channels": [8, 16, 16], "hidden": 64}),
}


def macs(net: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of ``net`` on one (unbatched) ``input_shape`` sample.

    Counts convolutions and linear layers (bias adds and activations are left out, as usual).
    """
    total = 0

    def count(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    try:
        with torch.no_grad():
            net(torch.zeros((1, *input_shape)))
    finally:
        for hook in hooks:
            hook.remove()
    return total


# What "seconds" are: this process's CPU time (robust on a machine other jobs share: a rate per CPU-second
# of the process, the same as per wall second on an idle machine with one torch thread) or wall time.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def timed_rate(work: Callable[[], int], min_seconds: float, clock: str = "cpu", min_calls: int = 3) -> float:
    """Items per second of ``work()`` (returns the items it did), called for >= ``min_seconds`` after a warm-up."""
    now = CLOCKS[clock]
    work()
    items, calls, start = 0, 0, now()
    while calls < min_calls or now() - start < min_seconds:
        items += work()
        calls += 1
    return items / max(now() - start, 1e-9)


@torch.no_grad()
def gemm_gflops(size: int, min_seconds: float, clock: str = "cpu") -> float:
    """GFLOP/s of a float32 (size x size) @ (size x size) product (2 size^3 FLOPs each)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(size, size, generator=gen), torch.rand(size, size, generator=gen)
    return timed_rate(lambda: (torch.mm(a, b), 2 * size**3)[1], min_seconds, clock) / 1e9


@torch.no_grad()
def conv_gflops(min_seconds: float, clock: str = "cpu", batch: int = 32, channels: int = 64, side: int = 42) -> float:
    """GFLOP/s of a large 3x3 convolution, ``channels`` in and out, same padding (what a conv at best reaches)."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    x = torch.rand(batch, channels, side, side)
    flops = 2 * batch * side * side * channels * channels * 9
    return timed_rate(lambda: (conv(x), flops)[1], min_seconds, clock) / 1e9


def pixel_agent(policy: str, config: dict[str, Any], frame_stack: int, seed: int = 0) -> TorchAgent:
    """A freshly initialised pixel agent (throughput does not depend on the weights)."""
    torch.manual_seed(seed)
    net = build_policy(policy, {"frame_stack": frame_stack, "num_actions": NUM_ACTIONS, **config})
    model = ScoreModel(net, torch.tensor(128.0), torch.tensor(64.0))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), frame_stack, name=f"untrained-{policy}")


def measure_policy(
    agent: TorchAgent, batch_sizes: tuple[int, ...], train_batch: int, min_seconds: float, clock: str = "cpu"
) -> dict[str, Any]:
    """MACs, decisions/s per batch size, forward/s and training samples/s of one pixel agent."""
    model = agent.model
    shape = model.input_shape()
    rng = np.random.default_rng(0)
    decisions = {}
    for size in batch_sizes:
        frames = rng.integers(0, 256, (size, FRAME, FRAME, 1), dtype=np.uint8)
        agent.reset(size)
        decisions[str(size)] = timed_rate(lambda f=frames: len(agent.act(f)), min_seconds, clock)
    stacked = torch.rand(max(batch_sizes), *shape) * 255
    with torch.no_grad():
        model.eval()
        forward = timed_rate(lambda: len(model(stacked)), min_seconds, clock)
    return {
        "policy": model.policy.name,
        "policy_config": model.policy.config(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "macs_per_frame": macs(model.policy, shape),
        "decisions_per_s": decisions,
        "forward_per_s": {str(max(batch_sizes)): forward},
        "train_samples_per_s": train_rate(model, shape, train_batch, min_seconds, clock),
    }


def train_rate(model: ScoreModel, shape: tuple[int, ...], batch: int, min_seconds: float, clock: str = "cpu") -> float:
    """Samples/s of cross-entropy training steps (forward, backward, AdamW) on a stacked float batch."""
    x = torch.rand(batch, *shape) * 255
    y = torch.randint(0, NUM_ACTIONS, (batch,), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> int:
        loss = torch.nn.functional.cross_entropy(model.logits(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return batch

    return timed_rate(step, min_seconds, clock)


def match_rate(agent: TorchAgent, matches: int, clock: str = "cpu", opponent: str = "brawler") -> dict[str, Any]:
    """Matches/s, decisions/s and mean length (decisions) of ``matches`` batched matches of ``agent`` vs a bot."""
    rival = load_player(opponent)
    seeds = match_seeds(0, matches)
    play_matches(agent, rival, seeds[:2])  # warm-up: torch kernels, renderer caches
    now = CLOCKS[clock]
    start = now()
    results = play_matches(agent, rival, seeds)
    seconds = max(now() - start, 1e-9)
    return {
        "opponent": opponent,
        "matches": matches,
        "seconds": seconds,
        "matches_per_s": matches / seconds,
        "decisions_per_s": float(results.length.sum()) / seconds,
        "mean_length": float(results.length.mean()),
    }


def run(
    frame_stack: int = 2,
    batch_sizes: tuple[int, ...] = (1, 64, 256),
    train_batch: int = 256,
    gemm_size: int = 1024,
    min_seconds: float = 2.0,
    threads: int = 1,
    clock: str = "cpu",
    matches: int = 64,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    gemm = gemm_gflops(gemm_size, min_seconds, clock)
    conv = conv_gflops(min_seconds, clock)
    results: dict[str, Any] = {
        "benchmark": "pixel_agent_throughput",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "clock": clock,
        "frame_stack": frame_stack,
        "limit": {"gemm_size": gemm_size, "gemm_gflops": gemm, "conv3x3_gflops": conv},
        "policies": {},
    }
    for key, (policy, config) in NETWORKS.items():
        agent = pixel_agent(policy, config, frame_stack)
        res = measure_policy(agent, batch_sizes, train_batch, min_seconds, clock)
        res["matches"] = match_rate(agent, matches, clock)
        best = max(res["decisions_per_s"].values())
        achieved = 2 * res["macs_per_frame"] * best / 1e9
        res["best_decisions_per_s"] = best
        res["achieved_gflops"] = achieved
        res["fraction_of_gemm_limit"] = achieved / gemm
        res["fraction_of_conv_limit"] = achieved / conv
        res["limit_decisions_per_s"] = gemm * 1e9 / (2 * res["macs_per_frame"])
        results["policies"][key] = res
    compact = results["policies"]["compact"]
    results["compact_vs"] = {
        key: {
            "macs_ratio": other["macs_per_frame"] / compact["macs_per_frame"],
            "decisions_speedup": compact["best_decisions_per_s"] / other["best_decisions_per_s"],
            "train_speedup": compact["train_samples_per_s"] / other["train_samples_per_s"],
            "matches_speedup": compact["matches"]["matches_per_s"] / other["matches"]["matches_per_s"],
        }
        for key, other in results["policies"].items()
        if key != "compact"
    }
    return results


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    frame_stack: int = typer.Option(2, min=1, max=16, help="frames stacked per decision"),
    batch_sizes: str = typer.Option("1,64,256", help="comma-separated decision batch sizes"),
    train_batch: int = typer.Option(256, min=1, help="training batch size"),
    gemm_size: int = typer.Option(1024, min=16, max=8192, help="side of the square matrices of the GEMM limit"),
    min_seconds: float = typer.Option(2.0, min=0.0, help="time each case at least this long"),
    threads: int = typer.Option(1, min=1, max=256, help="torch intra-op threads (the limit is measured with the same)"),
    clock: str = typer.Option(
        "cpu", help="cpu: rates per CPU-second of this process (robust on a shared machine); wall: per wall second"
    ),
    matches: int = typer.Option(64, min=1, help="whole matches vs the brawler timed per network (matches/s)"),
) -> None:
    """Measure and print JSON: pixel-agent MACs per frame, training samples/s, decisions/s, matches/s and the
    fraction of the GEMM limit."""
    try:
        sizes = tuple(int(s) for s in batch_sizes.split(","))
    except ValueError:
        raise typer.BadParameter(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"--batch-sizes must be positive integers, got {batch_sizes!r}")
    if clock not in CLOCKS:
        raise typer.BadParameter(f"--clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    emit(run(frame_stack, sizes, train_batch, gemm_size, min_seconds, threads, clock, matches), out)


if __name__ == "__main__":
    typer.run(main)
