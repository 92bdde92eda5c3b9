"""Command-line commands of the agents layer, added to the `bcarena` app by `register`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if Console().is_terminal else 120)
agent_app = typer.Typer(no_args_is_help=True, help="Inspect agent folders.")
expert_app = typer.Typer(no_args_is_help=True, help="Stable-Baselines3 PPO experts on Duel, and BC -> PPO fine-tuning.")


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "loss=focal"]`` -> ``{"a.b": 1, "loss": "focal"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(code=2)


def _metrics_table(rows: list[tuple[str, Any]]) -> Table:
    table = Table("split", "accuracy", "balanced acc.", "macro-F1", "skill recall")
    for split, m in rows:
        if m is not None:
            table.add_row(split, f"{m.accuracy:.2%}", f"{m.balanced_accuracy:.2%}", f"{m.macro_f1:.3f}",
                          f"{m.skill_recall:.2%}")
    return table


def train(dataset: Path = typer.Option(..., help="action dataset folder (bcarena dataset build)"),
          out: Path = typer.Option(..., help="run folder: agent/, checkpoint.pt, history.json, metrics.json"),
          config: Optional[Path] = typer.Option(None, help="training config, JSON or YAML (TrainConfig keys)"),
          policy: Optional[str] = typer.Option(None, help="mlp (state) | cnn (stacked frames)"),
          loss: Optional[str] = typer.Option(None, help="ce | weighted_ce | focal | logit_adjusted"),
          class_weights: Optional[str] = typer.Option(None, help="none | inverse | sqrt_inverse | effective_number"),
          sampler: Optional[str] = typer.Option(None, help="uniform | weighted | oversample | undersample | smote"),
          events: Optional[str] = typer.Option(None, help="event-weighted sampling around these events, comma-separated "
                                                          "(skill_used, hit_landed, hit_taken, ko, action_change)"),
          epochs: Optional[int] = typer.Option(None, min=1),
          batch_size: Optional[int] = typer.Option(None, min=1),
          lr: Optional[float] = typer.Option(None),
          frame_stack: Optional[int] = typer.Option(None, min=1),
          early_stop_metric: Optional[str] = typer.Option(None, help="val_loss | accuracy | balanced_accuracy | "
                                                                     "macro_f1 | skill_recall"),
          patience: Optional[int] = typer.Option(None, min=0),
          selection: Optional[str] = typer.Option(None, help="argmax | sample | temperature | thresholds"),
          seed: Optional[int] = typer.Option(None),
          set_: Optional[list[str]] = typer.Option(None, "--set", help="any config key, e.g. "
                                                                     "--set event_weighting.weight=20 (repeatable)"),
          resume: bool = typer.Option(False, help="continue the run in --out from its checkpoint"),
          quiet: bool = typer.Option(False, help="no progress bars")) -> None:
    """Train a behavior-cloning agent on an action dataset (flags override --config)."""
    from bcarena.agents.config import ConfigError, load_train_config
    from bcarena.agents.train import TrainError, train_bc
    from bcarena.recordings.dataset import DatasetError

    flags = {"policy": policy, "loss": loss, "class_weights": class_weights, "sampler": sampler, "epochs": epochs,
             "batch_size": batch_size, "lr": lr, "frame_stack": frame_stack, "early_stop_metric": early_stop_metric,
             "patience": patience, "selection": selection, "seed": seed}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if events is not None:
        overrides["event_weighting.events"] = [e.strip() for e in events.split(",") if e.strip()]
    try:
        overrides.update(parse_sets(set_))
        cfg = load_train_config(config, overrides)
        result = train_bc(dataset, cfg, out, resume=resume, progress=not quiet, name=out.name)
    except (ConfigError, DatasetError, TrainError) as exc:
        _fail(exc)
    mix = ", ".join(f"{n} {f:.1%}" for n, f in zip(result.agent.action_names, result.sampling.class_mix_sampled) if f)
    console.print(f"sampled class mix ({result.sampling.sampler}, {result.sampling.epoch_size} draws/epoch): {mix}")
    console.print(_metrics_table([("val", result.val), ("test", result.test)]))
    console.print(f"best epoch {result.best_epoch}; agent -> {out / 'agent'}")


def train_composite_cmd(dataset: Path = typer.Option(..., help="action dataset folder"),
                        out: Path = typer.Option(..., help="run folder: movement/, skill/, agent/"),
                        movement_config: Optional[Path] = typer.Option(None, help="TrainConfig of the movement model"),
                        skill_config: Optional[Path] = typer.Option(None, help="TrainConfig of the skill-timing model "
                                                                               "(default: weighted_ce, sqrt_inverse)"),
                        set_movement: Optional[list[str]] = typer.Option(None, help="KEY=VALUE for the movement model"),
                        set_skill: Optional[list[str]] = typer.Option(None, help="KEY=VALUE for the skill model"),
                        resume: bool = typer.Option(False, help="continue interrupted part runs"),
                        quiet: bool = typer.Option(False, help="no progress bars")) -> None:
    """Train a composite agent: a movement model plus a skill-timing model, combined into one agent."""
    from bcarena.agents.composite import train_composite
    from bcarena.agents.config import ConfigError, load_train_config
    from bcarena.agents.train import TrainError
    from bcarena.recordings.dataset import DatasetError

    skill_defaults = {} if skill_config else {"loss": "weighted_ce", "class_weights": "sqrt_inverse"}
    try:
        move_cfg = load_train_config(movement_config, parse_sets(set_movement))
        skill_cfg = load_train_config(skill_config, {**skill_defaults, **parse_sets(set_skill)})
        result = train_composite(dataset, move_cfg, skill_cfg, out, resume=resume, progress=not quiet, name=out.name)
    except (ConfigError, DatasetError, TrainError) as exc:
        _fail(exc)
    console.print(_metrics_table([("val", result.val), ("test", result.test)]))
    console.print(f"agent -> {out / 'agent'}")


@agent_app.command("info")
def agent_info(path: Path = typer.Argument(..., help="agent folder")) -> None:
    """Show what an agent folder holds (kind, inputs, actions, selection, training metrics)."""
    from bcarena.agents.base import AgentFileError, read_agent_spec

    try:
        spec = read_agent_spec(path)
    except AgentFileError as exc:
        _fail(exc)
    shown = {k: v for k, v in spec.items() if k not in ("normalization", "policy_config")}
    console.print_json(json.dumps(shown))


def _ppo_run(model_fn, opponents: str, timesteps: int, num_envs: int, seed: int, out: Path, name: str,
             eval_matches: int, quiet: bool) -> None:
    from bcarena.agents.sb3 import DuelSB3VecEnv, SB3Agent, SB3Error, train_ppo, win_rate

    pool = [o.strip() for o in opponents.split(",") if o.strip()]
    try:
        env = DuelSB3VecEnv(num_envs, pool)
        model = model_fn(env)
        seeds = np.arange(10**6, 10**6 + eval_matches)
        before = {o: win_rate(SB3Agent.from_model(model), o, seeds)["win"] for o in pool}
        agent = train_ppo(model, timesteps, out, name=name, progress=not quiet)
    except (SB3Error, KeyError, ValueError) as exc:
        _fail(exc)
    table = Table("opponent", "win rate before", "win rate after")
    for o in pool:
        table.add_row(o, f"{before[o]:.1%}", f"{win_rate(agent, o, seeds)['win']:.1%}")
    console.print(table)
    console.print(f"agent -> {out / 'agent'}")


@expert_app.command("train")
def expert_train(out: Path = typer.Option(..., help="run folder; the expert is saved to OUT/agent"),
                 opponents: str = typer.Option("brawler,turtle,pro", help="bot pool, comma-separated"),
                 timesteps: int = typer.Option(200_000, min=0, help="PPO environment steps"),
                 num_envs: int = typer.Option(32, min=1, help="parallel matches"),
                 hidden: str = typer.Option("256,256", help="actor and critic layer widths"),
                 seed: int = typer.Option(0), eval_matches: int = typer.Option(200, min=1),
                 quiet: bool = typer.Option(False, help="no progress bar")) -> None:
    """Train a PPO expert on Duel (state observations) against a pool of bots."""
    from bcarena.agents.sb3 import random_ppo

    widths = [int(h) for h in hidden.split(",")]
    _ppo_run(lambda env: random_ppo(env, widths, seed=seed, n_steps=128, batch_size=min(1024, 128 * env.num_envs), verbose=0), opponents,
             timesteps, num_envs, seed, out, "ppo-expert", eval_matches, quiet)


@expert_app.command("finetune")
def expert_finetune(bc: Path = typer.Option(..., help="BC agent folder (MLP on state, frame_stack 1)"),
                    out: Path = typer.Option(..., help="run folder; the fine-tuned agent is saved to OUT/agent"),
                    opponents: str = typer.Option("brawler", help="bot pool, comma-separated"),
                    timesteps: int = typer.Option(100_000, min=0, help="PPO environment steps"),
                    num_envs: int = typer.Option(32, min=1), seed: int = typer.Option(0),
                    eval_matches: int = typer.Option(200, min=1),
                    quiet: bool = typer.Option(False, help="no progress bar")) -> None:
    """Fine-tune a BC agent with PPO: its MLP weights initialize the SB3 actor (BC -> RL)."""
    from bcarena.agents.base import AgentFileError, load_agent
    from bcarena.agents.sb3 import ppo_from_bc

    try:
        agent = load_agent(bc)
    except AgentFileError as exc:
        _fail(exc)
    _ppo_run(lambda env: ppo_from_bc(agent, env, seed=seed, n_steps=128, batch_size=min(1024, 128 * env.num_envs), verbose=0), opponents,
             timesteps, num_envs, seed, out, f"{bc.name}-ppo", eval_matches, quiet)


def register(app: typer.Typer) -> None:
    """Add this layer's commands and sub-apps to the root `bcarena` app."""
    app.command("train")(train)
    app.command("train-composite")(train_composite_cmd)
    app.add_typer(agent_app, name="agent")
    app.add_typer(expert_app, name="expert")
