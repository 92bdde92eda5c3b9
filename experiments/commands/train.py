"""``bcarena train``, ``train-composite``, ``agent info`` and ``expert train | finetune``: making agents.

The ``train`` flags are generated from :class:`bcarena.agents.config.TrainConfig`: one flag per
scalar field (``--loss``, ``--batch-size``, ``--restore-best/--no-restore-best``, ...), its choices,
help and default read from the field, so a renamed or added option is a flag without an edit here.
Sections and mappings are reached with ``--set KEY=VALUE``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import typer
from pydantic.fields import FieldInfo
from rich.table import Table

from bcarena.agents.config import EventWeighting, TrainConfig
from bcarena.envs.limits import MAX_MATCHES, MAX_PARALLEL, MAX_SEED, MAX_TIMESTEPS
from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import names, parse_sets, path_to, positive_ints

app = command_app()
agent_app = command_app("Inspect agent folders.")
expert_app = command_app("Stable-Baselines3 PPO experts on Duel, and BC -> PPO fine-tuning.")
app.add_typer(agent_app, name="agent")
app.add_typer(expert_app, name="expert")
BOTS = "bcarena.envs.duel.bots:BOTS"
EVENTS = typing.get_args(typing.get_args(EventWeighting.model_fields["events"].annotation)[0])


def _metrics_table(rows: list[tuple[str, Any]]) -> Table:
    from bcarena.agents.validation import SUMMARY_METRICS

    table = Table("split", *SUMMARY_METRICS)
    for split, metrics in rows:
        if metrics is not None:
            table.add_row(split, *(f"{getattr(metrics, name):.2%}" for name in SUMMARY_METRICS))
    return table


# ----------------------------------------------------------------------------------------- train
def train(
    dataset: Path = typer.Option(
        ..., exists=True, file_okay=False, help="action dataset folder (bcarena dataset build)"
    ),
    out: Path = typer.Option(
        ..., parser=path_to("folder"), help="run folder: agent/, checkpoint.pt, history.json, metrics.json"
    ),
    config: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="training config, JSON or YAML (TrainConfig keys)"
    ),
    events: Any = typer.Option(
        None,
        parser=names(EVENTS),
        metavar="{" + "|".join(EVENTS) + "},...",
        help="event-weighted sampling around these events, comma-separated",
    ),
    set_: list[str] | None = typer.Option(
        None, "--set", help="any config key, e.g. --set event_weighting.weight=20 (repeatable)"
    ),
    resume: bool = typer.Option(False, help="continue the run in --out from its checkpoint"),
    quiet: bool = typer.Option(False, help="no progress bars"),
    **config_flags: Any,
) -> None:
    """Train a behavior-cloning agent on an action dataset (flags override --config)."""
    from bcarena.agents.config import load_train_config
    from bcarena.agents.train import train_bc

    overrides = {key: value for key, value in config_flags.items() if value is not None}
    if events is not None:
        overrides["event_weighting.events"] = events
    overrides.update(parse_sets(set_))
    result = train_bc(
        dataset, load_train_config(config, overrides), out, resume=resume, progress=not quiet, name=out.name
    )
    mix = ", ".join(f"{n} {f:.1%}" for n, f in zip(result.agent.action_names, result.sampling.class_mix_sampled) if f)
    console.print(f"sampled class mix ({result.sampling.sampler}, {result.sampling.epoch_size} draws/epoch): {mix}")
    console.print(_metrics_table([("val", result.val), ("test", result.test)]))
    console.print(f"best epoch {result.best_epoch}; agent -> {out / 'agent'}")


def _scalar(annotation: Any) -> Any:
    """The flag type of a field annotation (``X | None`` -> ``X``), or None when it is not one value."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        present = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = present[0] if len(present) == 1 else None
    if typing.get_origin(annotation) is Literal or annotation in (bool, int, float, str):
        return annotation
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (int,):
        return list
    return None


def config_flag(name: str, field: FieldInfo) -> inspect.Parameter | None:
    """The ``--name`` flag of one TrainConfig field (None: reached only through ``--set``)."""
    kind = _scalar(field.annotation)
    if kind is None:
        return None
    default = field.get_default(call_default_factory=True)
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    help_text = "; ".join(filter(None, [field.description, f"config default: {shown}"]))
    if kind is list:  # widths like 256,256
        option = typer.Option(None, parser=positive_ints, metavar="N,N,...", help=help_text, show_default=False)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Any)
    option = typer.Option(None, help=help_text, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)


def with_config_flags(command: Callable[..., None], config: type[TrainConfig]) -> Callable[..., None]:
    """``command`` with its ``**config_flags`` replaced by one flag per scalar field of ``config``."""
    signature = inspect.signature(command)
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in signature.parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    flags = [flag for name, field in config.model_fields.items() if (flag := config_flag(name, field)) is not None]
    clash = {p.name for p in own} & {f.name for f in flags}
    if clash:
        raise RuntimeError(f"TrainConfig fields {sorted(clash)} clash with the {command.__name__} command's own flags")
    at = [p.name for p in own].index("events")  # the generated flags go between --config and --events
    command.__signature__ = signature.replace(parameters=[*own[:at], *flags, *own[at:]])  # type: ignore[attr-defined]
    command.__annotations__ = {**command.__annotations__, **{f.name: f.annotation for f in flags}}
    return command


app.command("train")(with_config_flags(train, TrainConfig))


@app.command("train-composite")
def train_composite(
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="action dataset folder"),
    out: Path = typer.Option(..., parser=path_to("folder"), help="run folder: movement/, skill/, agent/"),
    movement_config: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="TrainConfig of the movement model"
    ),
    skill_config: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="TrainConfig of the skill-timing model (default: weighted_ce, sqrt_inverse)",
    ),
    set_movement: list[str] | None = typer.Option(None, help="KEY=VALUE for the movement model"),
    set_skill: list[str] | None = typer.Option(None, help="KEY=VALUE for the skill model"),
    resume: bool = typer.Option(False, help="continue interrupted part runs"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Train a composite agent: a movement model plus a skill-timing model.

    The two are combined into one agent in OUT/agent.
    """
    from bcarena.agents.composite import train_composite as train_parts
    from bcarena.agents.config import load_train_config

    skill_defaults = {} if skill_config else {"loss": "weighted_ce", "class_weights": "sqrt_inverse"}
    move_cfg = load_train_config(movement_config, parse_sets(set_movement))
    skill_cfg = load_train_config(skill_config, {**skill_defaults, **parse_sets(set_skill)})
    result = train_parts(dataset, move_cfg, skill_cfg, out, resume=resume, progress=not quiet, name=out.name)
    console.print(_metrics_table([("val", result.val), ("test", result.test)]))
    console.print(f"agent -> {out / 'agent'}")


# ----------------------------------------------------------------------------------------- agent
@agent_app.command("info")
def agent_info(path: Path = typer.Argument(..., exists=True, file_okay=False, help="agent folder")) -> None:
    """Show what an agent folder holds (kind, inputs, actions, selection, training metrics).

    The weights are loaded too: an agent that cannot load is an error (exit code 2).
    """
    import json

    from bcarena.agents.base import load_agent, read_agent_spec

    spec = read_agent_spec(path)
    load_agent(path)  # the weights too: an agent that cannot play is not a valid agent folder
    console.print_json(json.dumps({k: v for k, v in spec.items() if k not in ("normalization", "policy_config")}))


# ---------------------------------------------------------------------------------------- expert
def _ppo_run(
    model_fn: Callable[[Any], Any],
    pool: list[str],
    timesteps: int,
    num_envs: int,
    out: Path,
    name: str,
    eval_matches: int,
    quiet: bool,
) -> None:
    from bcarena.agents.sb3 import DuelSB3VecEnv, SB3Agent, train_ppo, win_rate

    model = model_fn(DuelSB3VecEnv(num_envs, pool))
    seeds = np.arange(10**6, 10**6 + eval_matches)
    before = {o: win_rate(SB3Agent.from_model(model), o, seeds)["win"] for o in pool}
    agent = train_ppo(model, timesteps, out, name=name, progress=not quiet)
    table = Table("opponent", "win rate before", "win rate after")
    for o in pool:
        table.add_row(o, f"{before[o]:.1%}", f"{win_rate(agent, o, seeds)['win']:.1%}")
    console.print(table)
    console.print(f"agent -> {out / 'agent'}")


def _ppo_settings(env: Any) -> dict[str, Any]:
    return {"n_steps": 128, "batch_size": min(1024, 128 * env.num_envs), "verbose": 0}


@expert_app.command("train")
def expert_train(
    out: Path = typer.Option(..., parser=path_to("folder"), help="run folder; the expert is saved to OUT/agent"),
    opponents: Any = typer.Option(
        "brawler,turtle,pro", parser=names(BOTS), metavar="BOT,BOT,...", help="bot pool, comma-separated"
    ),
    timesteps: int = typer.Option(200_000, min=0, max=MAX_TIMESTEPS, help="PPO environment steps"),
    num_envs: int = typer.Option(32, min=1, max=MAX_PARALLEL, help="parallel matches"),
    hidden: Any = typer.Option(
        "256,256", parser=positive_ints, metavar="N,N,...", help="actor and critic layer widths"
    ),
    seed: int = typer.Option(0, min=0, max=MAX_SEED),
    eval_matches: int = typer.Option(200, min=1, max=MAX_MATCHES),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train a PPO expert on Duel (state observations) against a pool of bots."""
    from bcarena.agents.sb3 import random_ppo

    _ppo_run(
        lambda env: random_ppo(env, hidden, seed=seed, **_ppo_settings(env)),
        opponents,
        timesteps,
        num_envs,
        out,
        "ppo-expert",
        eval_matches,
        quiet,
    )


@expert_app.command("finetune")
def expert_finetune(
    bc: Path = typer.Option(..., exists=True, file_okay=False, help="BC agent folder (MLP on state, frame_stack 1)"),
    out: Path = typer.Option(
        ..., parser=path_to("folder"), help="run folder; the fine-tuned agent is saved to OUT/agent"
    ),
    opponents: Any = typer.Option(
        "brawler", parser=names(BOTS), metavar="BOT,BOT,...", help="bot pool, comma-separated"
    ),
    timesteps: int = typer.Option(100_000, min=0, max=MAX_TIMESTEPS, help="PPO environment steps"),
    num_envs: int = typer.Option(32, min=1, max=MAX_PARALLEL),
    seed: int = typer.Option(0, min=0, max=MAX_SEED),
    eval_matches: int = typer.Option(200, min=1, max=MAX_MATCHES),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Fine-tune a BC agent with PPO: its MLP weights initialize the SB3 actor (BC -> RL)."""
    from bcarena.agents.base import load_agent
    from bcarena.agents.sb3 import ppo_from_bc

    agent = load_agent(bc)
    _ppo_run(
        lambda env: ppo_from_bc(agent, env, seed=seed, **_ppo_settings(env)),
        opponents,
        timesteps,
        num_envs,
        out,
        f"{bc.name}-ppo",
        eval_matches,
        quiet,
    )
