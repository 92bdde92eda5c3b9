"""The seed story from video alone (experiments/seed_story_pixels.yaml), the cost of the pixel networks, and the
pixel-agent and Boxing throughput benchmarks at tiny size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

from bcarena.agents.policies import build_policy
from bcarena.agents.samplers import EpochSampler
from bcarena.envs.duel import ACTION_NAMES
from bcarena.experiments import runner as runner_module
from bcarena.experiments.results import load_results
from bcarena.experiments.runner import ExperimentRunner, load

STORY = Path(runner_module.__file__).parent / "seed_story_pixels.yaml"


def test_macs_per_frame_of_the_three_pixel_networks():
    from bcarena.experiments.benchmarks.pixel_agent_throughput import NETWORKS, macs

    counts = {}
    for key, (policy, config) in NETWORKS.items():
        net = build_policy(policy, {"frame_stack": 2, "num_actions": 8, **config})
        assert net(torch.zeros(3, 2, 84, 84)).shape == (3, 8)
        counts[key] = macs(net, (2, 84, 84))
    # compact: convs 20x20x8x(2x8x8) + 9x9x16x(8x4x4) + 7x7x16x(16x3x3), then 784x64 + 64x8
    assert counts["compact"] == 409_600 + 165_888 + 112_896 + 50_176 + 512 == 739_072
    assert counts == {"nature": 7_708_672, "cnn": 2_337_792, "compact": 739_072}


def test_the_story_file_trains_every_recipe_on_frames_only():
    exp = load(STORY)
    assert exp.dataset.pixels
    names = [v.name for v in exp.variants]
    state_story = [v.name for v in load(STORY.parent / "seed_story.yaml").variants]
    assert names == state_story  # naive and every fix of the state story
    assert [d.mode for d in exp.variants[0].decoding] == ["argmax", "sample"]
    configs = [runner_module.variant_configs(v) for v in exp.variants]
    parts = [cfg for variant in configs for cfg in variant.values()]
    assert {(cfg.policy, cfg.obs_type, cfg.frame_stack) for cfg in parts} == {("cnn", "pixels", 2)}
    assert {(tuple(cfg.cnn_channels), cfg.cnn_hidden) for cfg in parts} == {((8, 16, 16), 64)}  # "compact"
    assert exp.evaluation.opponents == ["brawler", "pro"] and exp.evaluation.reference == "pro"


def test_the_boxing_pixel_story_file_trains_the_ram_story_recipes_on_frames():
    exp = load(STORY.parent / "boxing_story_pixels.yaml")
    assert exp.game["name"] == "boxing" and exp.dataset.pixels
    assert [v.name for v in exp.variants] == [v.name for v in load(STORY.parent / "boxing_story.yaml").variants]
    parts = [cfg for v in exp.variants for cfg in runner_module.variant_configs(v).values()]
    assert {(cfg.policy, cfg.frame_stack, cfg.lr, cfg.lr_schedule) for cfg in parts} == {("cnn", 4, 0.003, "cosine")}
    assert exp.evaluation.opponents == ["cpu"] and exp.evaluation.matches >= 100  # the bout count


def test_the_oversampled_variant_draws_as_many_frames_as_the_naive_one():
    """RandomOverSampler raises every class to the majority's count: an epoch of indices into the recorded
    frames (no copies), but ~4x the draws of a uniform epoch on the story's class mix, which the story
    balances with a quarter of the epochs."""
    counts = [10183, 339, 820, 0, 6300, 7, 276, 187]  # the story's training frames per action (100 episodes)
    labels = np.repeat(np.arange(len(counts)), counts)
    variants = {v.name: v for v in load(STORY).variants}
    draws = {}
    for name in ("naive", "oversampled"):
        cfg = runner_module.variant_configs(variants[name])["bc"]
        epoch = EpochSampler(labels, cfg, list(ACTION_NAMES)).epoch(0)
        assert epoch.dtype == torch.int64 and 0 <= int(epoch.min()) and int(epoch.max()) < labels.size
        draws[name] = (len(epoch), cfg.epochs * len(epoch))
    assert draws["naive"][0] == labels.size and draws["oversampled"][0] == 7 * 10183  # 7 classes present
    assert draws["oversampled"][1] / draws["naive"][1] == pytest.approx(1.0, abs=0.03)


def _tiny_story(tmp_path: Path, variants: list[dict]) -> Path:
    """The shipped story with these ``variants`` and everything small: 6 short episodes, 1 epoch, 2 matches."""
    data = yaml.safe_load(STORY.read_text())
    data["variants"] = variants
    data.update(name="pixels_tiny", game={"round_seconds": 3.0}, tracking={"mlflow": False})
    data["recording"]["episodes"] = 6
    data["dataset"]["split"] = [0.5, 0.25, 0.25]
    data["evaluation"].update(matches=2)  # the side-by-side replay of two pixel agents stays
    for variant in data["variants"]:
        parts = variant["train"].values() if variant.get("kind") == "composite" else [variant["train"]]
        for part in parts:
            part.update(epochs=1, allow_missing_classes=True)  # a few frames need not hold every skill
    path = tmp_path / "story.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run_tiny_story(tmp_path: Path, variants: list[dict]) -> None:
    path = _tiny_story(tmp_path, variants)
    console = Console(record=True, width=200)
    run_dir = ExperimentRunner(load(path), tmp_path / "runs", path, progress=False, console=console).run()
    results = load_results(run_dir)
    agents = {a.agent_id: a for a in results.agents}
    assert {f"{v['name']}-s0" for v in variants} | {"pro"} <= set(agents)  # (plus rows of extra decodings)
    for agent_id, agent in agents.items():
        assert agent.error is None, (agent_id, agent.error)
        assert set(agent.online) == {"brawler", "pro"} and agent.online["brawler"]["matches"] == 2
        if agent_id != "pro":
            assert 0.0 <= agent.offline["accuracy"] <= 1.0
    assert "naive-s0" in console.export_text()
    assert (run_dir / "replays" / "side_by_side.mp4").is_file()  # two pixel agents, side by side


def test_tiny_pixel_story_fast_twin(tmp_path):
    variants = yaml.safe_load(STORY.read_text())["variants"]
    _run_tiny_story(tmp_path, [v for v in variants if v["name"] in ("naive", "class_weighted")])  # and their replay


@pytest.mark.slow
def test_every_recipe_of_the_story_trains_and_plays_from_pixels(tmp_path):
    """All the story's variants (focal, oversampling, event weighting, composite, sampled decoding too)."""
    _run_tiny_story(tmp_path, yaml.safe_load(STORY.read_text())["variants"])


def test_pixel_agent_benchmark_fast_twin():
    from bcarena.experiments.benchmarks.pixel_agent_throughput import run

    res = run(frame_stack=2, batch_sizes=(1, 8), train_batch=8, gemm_size=64, min_seconds=0.01, matches=2)
    assert res["limit"]["gemm_gflops"] > 0 and res["limit"]["conv3x3_gflops"] > 0
    assert set(res["policies"]) == {"nature", "cnn", "compact"}
    for policy in res["policies"].values():
        assert set(policy["decisions_per_s"]) == {"1", "8"}
        assert policy["best_decisions_per_s"] == max(policy["decisions_per_s"].values()) > 0
        assert policy["train_samples_per_s"] > 0 and policy["macs_per_frame"] > 0
        played = policy["matches"]
        assert played["matches"] == 2 and played["matches_per_s"] > 0 and played["mean_length"] >= 1
        assert played["decisions_per_s"] == pytest.approx(played["matches_per_s"] * played["mean_length"])
        expected = 2 * policy["macs_per_frame"] * policy["best_decisions_per_s"] / 1e9 / res["limit"]["gemm_gflops"]
        assert policy["fraction_of_gemm_limit"] == pytest.approx(expected)
    assert res["compact_vs"]["nature"]["macs_ratio"] == pytest.approx(7_708_672 / 739_072)
    assert res["compact_vs"]["nature"]["matches_speedup"] == pytest.approx(
        res["policies"]["compact"]["matches"]["matches_per_s"] / res["policies"]["nature"]["matches"]["matches_per_s"]
    )


def test_boxing_benchmark_fast_twin():
    pytest.importorskip("ale_py")
    from bcarena.experiments.benchmarks.boxing_throughput import run

    res = run(bouts=2, max_decisions=5)
    assert res["identical_scores"]  # batching across processes must not change a bout
    for case in ("one_at_a_time", "batched_in_process", "batched_processes"):
        assert res[case]["bouts"] == 2 and res[case]["mean_decisions"] == 5.0 and res[case]["bouts_per_s"] > 0
    assert res["batched_processes"]["emulator_processes"] == 2
    assert res["speedup_processes_vs_one_at_a_time"] == pytest.approx(
        res["batched_processes"]["bouts_per_s"] / res["one_at_a_time"]["bouts_per_s"]
    )
