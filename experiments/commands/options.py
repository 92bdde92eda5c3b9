"""What the commands' flags share: registry choices, comma-separated lists, output paths, KEY=VALUE pairs.

Every parser here raises ``typer.BadParameter`` naming the value and what was expected, so a bad
flag fails before the command does any work, as one line (the root app prints it, exit code 2).
Typer passes defaults through the parser too, so each one accepts an already-parsed value.
Registries named by ``"module:attribute"`` are imported only when a value is parsed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer

Parser = Callable[[Any], Any]


def registry_names(registry: str | Sequence[str]) -> tuple[str, ...]:
    """The names of ``registry``: a sequence (or dict) of names, or ``"module:attribute"`` naming one."""
    if not isinstance(registry, str):
        return tuple(registry)
    module, _, attribute = registry.partition(":")
    return tuple(getattr(importlib.import_module(module), attribute))


def choice(registry: str | Sequence[str]) -> Any:
    """A ``Literal`` of the registry's names: the flag's type, its help ``<a|b|c>`` and its error, from one list."""
    return Literal[registry_names(registry)]


def names(registry: str | Sequence[str] | None = None) -> Parser:
    """Parser of comma-separated names (``brawler,turtle``) -> ``list[str]``; each one of ``registry`` if given."""

    def parse(value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        items = [part.strip() for part in str(value).split(",") if part.strip()]
        if not items:
            raise typer.BadParameter(f"expected one or more comma-separated names, got {value!r}")
        if registry is not None:
            known = registry_names(registry)
            unknown = [n for n in items if n not in known]
            if unknown:
                raise typer.BadParameter(f"unknown name(s) {unknown}; expected names from {list(known)}")
        return items

    return parse


def positive_ints(value: Any) -> list[int]:
    """Parser of comma-separated positive integers (``256,256``) -> ``list[int]``."""
    if isinstance(value, list):
        return value
    try:
        numbers = [int(part) for part in str(value).split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise typer.BadParameter(f"expected comma-separated positive integers like 256,256, got {value!r}")
    return numbers


def numbers(*fields: str) -> Parser:
    """Parser of one number per field (``0.8,0.1,0.1`` for train,val,test) -> ``tuple[float, ...]``.

    Only the form is checked here; what the numbers must satisfy is for the library to say.
    """

    def parse(value: Any) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(float(x) for x in str(value).split(","))
        except ValueError:
            parts = ()
        if len(parts) != len(fields):
            raise typer.BadParameter(
                f"expected {len(fields)} comma-separated numbers {','.join(fields)}, got {value!r}"
            )
        return parts

    return parse


def path_to(kind: Literal["folder", "file"], suffixes: str | Sequence[str] = ()) -> Parser:
    """Parser of a path to a folder, or to a file with one of ``suffixes``, that need not exist yet (an output).

    It must not lie under a file, and if it exists it must be of that kind: checked up front, so that a
    typo fails in a second and not after the work it was meant to keep.
    """

    def parse(value: Any) -> Path:
        path = Path(value)
        allowed = registry_names(suffixes)
        if allowed and path.suffix.lower() not in allowed:
            raise typer.BadParameter(f"{str(path)!r} has suffix {path.suffix!r}; expected one of {list(allowed)}")
        for parent in reversed(path.parents):
            if parent.exists() and not parent.is_dir():
                raise typer.BadParameter(
                    f"{str(path)!r} lies under {str(parent)!r}, which is a file; expected a {kind} path"
                )
        if kind == "folder" and path.exists() and not path.is_dir():
            raise typer.BadParameter(f"{str(path)!r} is a file; expected a folder")
        if kind == "file" and path.is_dir():
            raise typer.BadParameter(f"{str(path)!r} is a folder; expected a file")
        return path

    return parse


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "loss=focal"]`` -> ``{"a.b": 1, "loss": "focal"}`` (values parsed as YAML)."""
    from bcarena.envs.yaml_files import YamlError, parse_yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = parse_yaml(value, f"--set {key.strip()}")
        except YamlError as exc:
            raise typer.BadParameter(str(exc)) from None
    return out


# Where independent jobs (training runs, tournament pairings) run: this process, or Ray tasks (the [ray] extra).
if TYPE_CHECKING:  # the names are known at run time only: to a type checker a choice is a str
    EXECUTOR = str
else:
    EXECUTOR = choice(("local", "ray"))
