"""The one YAML reader of the project, bounded so a small file cannot take the machine down.

Every YAML the project reads (experiment files, service requirements, sweep search spaces,
training configs, ``--set KEY=VALUE`` values, a run's ``config.resolved.yaml``) goes through
:func:`load_yaml` / :func:`parse_yaml`. PyYAML's ``safe_load`` builds no objects from tags, but it
accepts a "billion laughs": a few hundred bytes of nested aliases that every consumer walking the
data (pydantic, ``json.dumps``, a line-number map) expands into billions of values. So a document
is refused when it is larger than ``MAX_YAML_BYTES``, holds more than ``MAX_ALIASES`` aliases,
its aliases would expand to more than ``MAX_ALIAS_EXPANSION`` extra values, an alias refers to a
node that contains it, or it nests deeper than ``MAX_YAML_DEPTH``. The limits are checked on the
composed node graph, before any Python object is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bcarena.envs.errors import BcarenaError

MAX_YAML_BYTES = 1 << 20  # 1 MiB; project YAML files are a few KiB
MAX_ALIASES = 1000  # alias events (``*name``) in one document
MAX_ALIAS_EXPANSION = 10_000  # values the aliases add once expanded (a mapping entry counts key and value)
MAX_YAML_DEPTH = 64  # nested collections


class YamlError(BcarenaError, ValueError):
    """A YAML file or text is missing, unreadable, malformed or over a limit; the message names it."""


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML document: its ``data`` and the composed ``node`` (line marks), both None when empty."""

    data: Any
    node: yaml.Node | None


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts alias events while composing and refuses more than ``MAX_ALIASES``."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source, self.aliases = source, 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise YamlError(f"{self.source}: more than {MAX_ALIASES} YAML aliases (*name); write the values out")
        return super().compose_node(parent, index)


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse recursive aliases, nesting deeper than ``MAX_YAML_DEPTH`` and alias expansion over the budget.

    A node reached again through an alias is counted with its full expanded size each time, which is
    what a consumer walking the data sees; sizes are memoized per node, so this is linear in the graph.
    """
    sizes: dict[int, int] = {}  # id(node) -> values it expands to, itself included
    open_nodes: set[int] = set()  # ancestors of the node being sized: reaching one again is a cycle

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise YamlError(
                f"{source}:{node.start_mark.line + 1}: an alias refers to a node that contains it "
                "(a recursive document); write the values out"
            )
        if depth > MAX_YAML_DEPTH:
            raise YamlError(f"{source}:{node.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        open_nodes.add(key)
        total = 1 + sum(size(child, depth + 1) for child in children)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded = size(root, 0)
    extra = expanded - len(sizes)  # every distinct node counted once is the document as written
    if extra > MAX_ALIAS_EXPANSION:
        raise YamlError(
            f"{source}: its aliases expand to {extra} more values, over the limit of "
            f"{MAX_ALIAS_EXPANSION} (a 'billion laughs' document?); write the values out"
        )


def _syntax_message(exc: yaml.YAMLError, source: str) -> str:
    """One line for a PyYAML syntax error: the file and line, then what PyYAML found."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    found = "; ".join(part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part)
    return f"{where}: not valid YAML: {found or exc}"


def parse_yaml_document(text: str, source: str = "<string>") -> YamlDocument:
    """Parse YAML ``text`` (one document) within the limits; ``source`` names it in error messages."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(f"{source}: {len(text)} characters of YAML, over the limit of {MAX_YAML_BYTES}")
    loader = _BoundedLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None, None)
        _check_expansion(node, source)
        return YamlDocument(loader.construct_document(node), node)
    except yaml.YAMLError as exc:
        raise YamlError(_syntax_message(exc, source)) from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply to read (over {MAX_YAML_DEPTH} levels)") from None
    finally:
        loader.dispose()


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """The value of YAML ``text`` (None when empty), read within the limits of :func:`parse_yaml_document`."""
    return parse_yaml_document(text, source).data


def load_yaml_document(path: str | os.PathLike, what: str = "YAML") -> YamlDocument:
    """Read the YAML file ``path`` within the limits; ``what`` names the kind of file in error messages."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)  # never more than the cap in memory
    except FileNotFoundError:
        raise YamlError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise YamlError(f"{path}: is a folder; expected a {what} file") from None
    except OSError as exc:
        raise YamlError(f"{path}: cannot read this {what} file ({exc.strerror})") from None
    if len(data) > MAX_YAML_BYTES:
        raise YamlError(f"{path}: {what} file is larger than the limit of {MAX_YAML_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: not UTF-8 text (byte {exc.start}); expected a {what} file") from None
    return parse_yaml_document(text, str(path))


def load_yaml(path: str | os.PathLike, what: str = "YAML") -> Any:
    """The value of the YAML file ``path`` (None when empty); see :func:`load_yaml_document`."""
    return load_yaml_document(path, what).data
