"""Validating agent folders before anything is built: ``agent.json`` fields and safetensors headers.

Loading an agent folder goes (1) read ``agent.json`` (size-capped), (2) validate every field against
the kind's pydantic model (types, ranges, cross-field consistency), (3) compare the tensor names,
shapes and dtypes the spec implies with the weights file's **header** (no tensor data is read), and
only then (4) build modules and load tensors. So a hand-edited ``hidden: [20000, 20000]`` is refused
in microseconds with a one-line :class:`AgentFileError`, instead of allocating gigabytes first.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from bcarena.envs.duel.env import OBS_TYPES
from bcarena.envs.errors import BcarenaError

AGENT_FILE = "agent.json"
FORMAT = "bcarena-agent"
FORMAT_VERSION = 1
MAX_AGENT_FILE_BYTES = 16 * 2**20  # agent.json holds settings and a few normalization vectors, never weights
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header
MAX_LAYER_WIDTH = 1 << 16  # widths, channels, input sizes: far above anything trained here
MAX_FRAME_STACK = 64
SAFETENSORS_FLOAT32 = "F32"


class AgentFileError(BcarenaError, ValueError):
    """An agent folder is missing, malformed, or does not match the code asked to load it."""


# ------------------------------------------------------------------------------------- field types
Width = Annotated[StrictInt, Field(ge=1, le=MAX_LAYER_WIDTH)]
FrameStack = Annotated[StrictInt, Field(ge=1, le=MAX_FRAME_STACK)]
Seed = Annotated[StrictInt, Field(ge=0)]
ActionId = Annotated[StrictInt, Field(ge=0)]
FiniteFloat = StrictFloat  # ints pass, bools and strings do not; NaN/inf are refused by ``Strict``
Name = Annotated[str, Field(min_length=1, max_length=200)]


def one_of(choices: Iterable[str]) -> AfterValidator:
    """Restrict a str field to a registry's names (``Annotated[str, one_of(REGISTRY)]``): each name is written once."""
    names = sorted(choices)

    def check(value: str) -> str:
        if value not in names:
            raise ValueError(f"must be one of {names}")
        return value

    return AfterValidator(check)


class Strict(BaseModel):
    """Base of every agent.json model: unknown keys are errors, NaN/inf never pass as numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Header(Strict):
    """The fields ``save_agent`` writes for every kind (the kind-specific ones come from ``SavableAgent._spec``)."""

    format: str  # format, version and kind are checked first, each with its own message
    format_version: StrictInt
    kind: str
    name: Name
    obs_type: Annotated[str, one_of(OBS_TYPES)]
    game: str = "duel"  # files from before games were declared are Duel agents
    bcarena_version: str


def check_actions(
    action_names: list[str], skill_actions: list[int], num_actions: int, field: str = "action_names"
) -> None:
    """Raise ``ValueError`` (turned into a field error by pydantic) unless the action lists fit ``num_actions``."""
    if len(action_names) != num_actions:
        raise ValueError(f"{field} lists {len(action_names)} actions but the policy has {num_actions} outputs")
    if len(set(action_names)) != len(action_names):
        raise ValueError(f"{field} has duplicates: {action_names}")
    if len(set(skill_actions)) != len(skill_actions) or any(a >= num_actions for a in skill_actions):
        raise ValueError(f"skill_actions must be distinct action ids in [0, {num_actions}), got {skill_actions}")


# ------------------------------------------------------------------------------------ reading files
def read_spec_file(folder: Path) -> dict[str, Any]:
    """The JSON object in ``folder/agent.json`` (not yet validated beyond being a size-capped JSON object)."""
    spec_path = folder / AGENT_FILE
    if not folder.is_dir():
        raise AgentFileError(f"{folder}: no agent folder here")
    try:
        size = spec_path.stat().st_size
    except FileNotFoundError:
        raise AgentFileError(f"{spec_path}: missing (not an agent folder?)") from None
    if size > MAX_AGENT_FILE_BYTES:
        raise AgentFileError(
            f"{spec_path}: {size} bytes; an agent.json holds at most {MAX_AGENT_FILE_BYTES} "
            "(settings only: weights belong in .safetensors files)"
        )
    try:
        spec = json.loads(spec_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise AgentFileError(f"{spec_path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise AgentFileError(f"{spec_path}: must hold a JSON object")
    return spec


M = TypeVar("M", bound=BaseModel)


def parse_spec(model: type[M], data: dict[str, Any], where: Path) -> M:
    """``data`` validated by ``model``, or an AgentFileError naming ``where``, the field and the value."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise AgentFileError(f"{where}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """The first validation problem as one line (plus how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        text = f"unknown field {field!r}"
    else:
        got = repr(first.get("input"))
        got = got if len(got) <= 80 else got[:77] + "..."
        message = first["msg"].removeprefix("Value error, ")
        text = f"field {field!r}: {message} (got {got})" if field else message
    return text + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else "")


def read_weights_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (dtype, shape)}`` from a safetensors file's header, reading no tensor data.

    The format: 8 bytes little-endian header length N, N bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}``, then the data.
    """
    try:
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise AgentFileError(f"{path}: unreadable safetensors (file too short for a header)")
            (length,) = struct.unpack("<Q", prefix)
            size = path.stat().st_size
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise AgentFileError(f"{path}: unreadable safetensors (header of {length} bytes in a {size}-byte file)")
            header = json.loads(file.read(length))
    except FileNotFoundError:
        raise AgentFileError(f"{path}: missing") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise AgentFileError(f"{path}: unreadable safetensors ({exc})") from None
    if not isinstance(header, dict):
        raise AgentFileError(f"{path}: unreadable safetensors (header is not a JSON object)")
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(offset) for offset in entry["data_offsets"])
            shape = tuple(int(d) for d in entry["shape"])
            dtype = str(entry["dtype"])
        except (TypeError, KeyError, ValueError) as exc:
            raise AgentFileError(f"{path}: unreadable safetensors (entry {name!r}: {exc!r})") from None
        if dtype == SAFETENSORS_FLOAT32 and (end - begin != 4 * math.prod(shape) or end + 8 + length > size):
            raise AgentFileError(f"{path}: unreadable safetensors (tensor {name!r} {shape} does not fit its bytes)")
        out[name] = (dtype, shape)
    return out


def check_weights(path: Path, expected: dict[str, tuple[int, ...]], what: str) -> None:
    """Refuse ``path`` unless its header holds exactly the float32 tensors ``expected`` (name -> shape)."""
    found = read_weights_header(path)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [
        f"{k}: file {found[k][1]} vs expected {shape}"
        for k, shape in expected.items()
        if k in found and found[k][1] != tuple(shape)
    ]
    if missing or unexpected or wrong:
        raise AgentFileError(
            f"{path}: weights are from another architecture than {what}"
            + (f"; missing tensors {missing[:4]}" if missing else "")
            + (f"; unexpected tensors {unexpected[:4]}" if unexpected else "")
            + (f"; shape mismatch {wrong[:4]}" if wrong else "")
        )
    other = sorted(k for k, (dtype, _) in found.items() if dtype != SAFETENSORS_FLOAT32)
    if other:
        raise AgentFileError(
            f"{path}: tensors must be float32 ({SAFETENSORS_FLOAT32}); {other[:4]} are {found[other[0]][0]}"
        )
