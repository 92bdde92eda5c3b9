"""Export an agent's policy network to a serving format, guarded by an action-parity check.

An agent that can be served provides ``export_module()``: a ``torch.nn.Module`` mapping a float32
batch of *model inputs* — state: (B, k * F) for a game's F state features (Duel 37, Boxing 9);
pixels: (B, k, 84, 84) stacked frames, values 0..255 as float — to action scores (B, A) over the
game's A actions, whose argmax is the agent's action (normalization lives inside the module).

Formats (``FORMATS``) and the runtimes that execute them (``RUNTIMES``):
  onnx         model.onnx, weights embedded (no side ``.onnx.data`` file), run by ONNX Runtime
  torchscript  model.ts via ``torch.jit.trace``, run by ``torch.jit.load``
  torch        the agent folder itself (agent.json + model.safetensors), run eagerly
An export folder holds the model file and ``export.json`` (format, agent, game, observation layout,
action names, model SHA-256, parity result, library versions). It is written into a temporary
sibling folder and renamed into place only after the parity check passed.

Parity: the exported model must choose exactly the torch module's argmax action on at least
``MIN_PARITY_OBSERVATIONS`` recorded model inputs, taken from a dataset when one is given and
otherwise recorded by playing matches of the agent's own game against that game's default
opponent (Duel: the brawler; Boxing: the console CPU) on the one match loop. Recording goes
through the agent's own ``stacked`` / ``act_stacked``, so the inputs are exactly what the agent
fed its network (frame stacks included); for a greedy agent the module's argmax must also equal
the action it chose.

Any registered game exports the same way: ``export.json`` carries the agent's game (id and
version), its action names and its observation layout (the game's state feature names), never
another game's constants.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bcarena.agents.base import Agent
from bcarena.agents.capabilities import Exportable, FrameStacked, Stochastic
from bcarena.envs.files import OutsideFolderError, atomic_folder, inside, package_versions, sha256_file, write_json
from bcarena.envs.games import Game, check_agent_for_game, default_opponent, get_game
from bcarena.eval.service.layout import (
    AGENT_FILE,
    EXPORT_FILE,
    FORMAT_NAMES,
    MIN_PARITY_OBSERVATIONS,
    ExportError,
    ObsLayout,
)
from bcarena.recordings.dataset import ActionDataset


# ----------------------------------------------------------------------------- recording
@dataclass
class ParityInputs:
    """Model inputs (n, *shape) that an agent fed its network (float32 states, uint8 pixel stacks;
    the network sees them as float32), and the actions (n,) it chose: what an export must reproduce."""

    inputs: np.ndarray
    actions: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def exportable(agent: Agent) -> Exportable:
    """``agent`` itself if it declares :class:`Exportable`, else an ExportError saying why it cannot be served."""
    if not isinstance(agent, Exportable):
        raise ExportError(
            f"agent {agent.name!r} ({type(agent).__name__}) has no export_module(): "
            "only torch agents (MLP, CNN, composite) and PPO experts can be exported and served"
        )
    return agent


def export_module(agent: Agent) -> torch.nn.Module:
    """The agent's policy network in eval mode, or an ExportError saying why there is none."""
    module = exportable(agent).export_module()
    if not isinstance(module, torch.nn.Module):
        raise ExportError(
            f"{type(agent).__name__}.export_module() returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module.eval()


def is_greedy(agent: Agent) -> bool:
    """Whether the agent's action is its module's argmax (sampling agents are served greedily)."""
    return not isinstance(agent, Stochastic) or agent.greedy


class _Recorded(Exception):
    """Raised by a recording agent that stops the match loop once it holds its ``limit`` of inputs."""


class _RecordingAgent(Agent):
    """Wraps an agent; each ``act`` call stores the model inputs it built and the actions it chose.

    :class:`~bcarena.agents.capabilities.FrameStacked` agents build their model inputs with ``stacked(obs)``
    (frame stack updated) and act on them with ``act_stacked(inputs)``: exactly ``act``, with the inputs kept.
    With ``stop`` it raises :class:`_Recorded` once it holds ``limit`` inputs: the rest of the matches would
    only be played to be thrown away (a Boxing bout is ~1,200 decisions).
    """

    def __init__(self, agent: Agent, limit: int | None = None, stop: bool = False) -> None:
        export_module(agent)  # fail early for agents that cannot be exported
        self.agent, self.limit, self.stop = agent, limit, stop
        self.name, self.game, self.obs_type, self.action_names = (
            agent.name,
            agent.game,
            agent.obs_type,
            agent.action_names,
        )
        self.inputs: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self._seen: set[bytes] = set()

    @property
    def count(self) -> int:
        return len(self._seen)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.agent.obs_shape

    def reset(self, batch_size: int) -> None:
        self.agent.reset(batch_size)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        if isinstance(self.agent, FrameStacked):
            inputs = np.asarray(self.agent.stacked(obs))
            actions = np.asarray(self.agent.act_stacked(inputs), dtype=np.int64)
        elif self.obs_type == "state":
            inputs = np.asarray(obs, dtype=np.float32)  # a plain state agent's model input is its observation
            actions = np.asarray(self.agent.act(obs), dtype=np.int64)
        else:
            raise ExportError(
                f"agent {self.name!r} ({type(self.agent).__name__}) has no stacked()/act_stacked(), "
                "so the model inputs (frame stacks) it builds cannot be recorded"
            )
        self._keep_new(inputs, actions)
        if self.stop and self.limit is not None and self.count >= self.limit:
            raise _Recorded
        return actions

    def _keep_new(self, inputs: np.ndarray, actions: np.ndarray) -> None:
        """Keep rows not seen before (finished matches repeat their last input) until ``limit`` rows."""
        # Pixel inputs are whole numbers 0..255: uint8 keeps 10k frame stacks in a few hundred MB.
        inputs = inputs.astype(np.uint8 if self.obs_type == "pixels" else np.float32)
        keep = []
        for i, row in enumerate(inputs):
            if self.limit is not None and self.count >= self.limit:
                break
            key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
            if key not in self._seen:
                self._seen.add(key)
                keep.append(i)
        self.inputs.append(inputs[keep])
        self.actions.append(actions[keep])

    def recording(self, source: str) -> ParityInputs:
        return ParityInputs(np.concatenate(self.inputs), np.concatenate(self.actions), source)


# Distinct model inputs one match of a game yields, about, to size the first wave of matches that records them;
# a game not listed plays one match first and sizes the next waves by what it yielded.
INPUTS_PER_MATCH = {"duel": 150}
MAX_WAVE = 64  # matches played at once while recording


def record_from_matches(
    agent: Agent,
    count: int = MIN_PARITY_OBSERVATIONS,
    opponent: str | None = None,
    seed: int = 0,
    config: Any = None,
    batch: int | None = None,
) -> ParityInputs:
    """``count`` distinct model inputs recorded while ``agent`` plays matches of its own game (seeds seed,
    seed+1, ...) against ``opponent`` (default: the game's default opponent), ``config`` that game's config.

    ``batch`` matches are played at a time (default for Duel: about one per 150 inputs, at most 64; for another
    game one match, then as many as the inputs still missing need at the rate seen so far, at most 64). Play
    stops as soon as ``count`` inputs are held. Too few distinct inputs (after 50 waves, or a wave of 64 matches
    that found nothing new) is an ExportError.
    """
    from bcarena.eval.matches import match_seeds, play_matches_of_game, player_for_game

    game = check_served_game(agent)
    opponent = opponent or default_opponent(game)
    recorder = _RecordingAgent(agent, limit=count, stop=True)
    rival = player_for_game(opponent, game, config, seed)
    guess = INPUTS_PER_MATCH.get(game.name)
    fixed = batch or (min(MAX_WAVE, -(-count // guess)) if guess else None)
    played = gained = wave = 0
    while recorder.count < count:
        if played >= 50 * (fixed or MAX_WAVE) or (not fixed and played and not gained and wave == MAX_WAVE):
            raise ExportError(
                f"only {recorder.count} distinct observations after {played} matches of "
                f"{agent.name!r} vs {opponent}; need {count}"
            )
        before = recorder.count
        wave = fixed or _next_wave(count - before, before, played, wave, gained)
        with contextlib.suppress(_Recorded):  # enough inputs: the wave's matches end here
            play_matches_of_game(game, recorder, rival, match_seeds(seed + played, wave), config, batch_size=wave)
        played, gained = played + wave, recorder.count - before
    return recorder.recording(f"matches of {agent.name} vs {opponent}, seeds {seed}..{seed + played - 1}")


def _next_wave(missing: int, recorded: int, played: int, last: int, gained: int) -> int:
    """Matches to play next: one to start, then enough for ``missing`` inputs at the rate seen so far, and at
    least twice the last wave after one that found nothing new; at most ``MAX_WAVE``."""
    if not played:
        return 1
    wave = -(-missing * played // max(recorded, 1))
    return max(1, min(MAX_WAVE, wave if gained else max(wave, 2 * last)))


def record_from_dataset(agent: Agent, dataset: ActionDataset, count: int | None = None) -> ParityInputs:
    """Model inputs recorded while ``agent`` replays every dataset episode in frame order (``predict_dataset``)."""
    from bcarena.eval.offline import predict_dataset

    recorder = _RecordingAgent(agent, limit=count)
    predict_dataset(recorder, dataset)
    where = dataset.path if dataset.path is not None else "in-memory dataset"
    return recorder.recording(f"dataset {where}")


def record_observations(
    agent: Agent,
    count: int = MIN_PARITY_OBSERVATIONS,
    dataset: ActionDataset | None = None,
    seed: int = 0,
    config: Any = None,
) -> ParityInputs:
    """Recorded model inputs for a parity check: the dataset's frames when given, else matches of the agent
    in its own game (``config``: that game's config)."""
    if dataset is None:
        return record_from_matches(agent, count, seed=seed, config=config)
    recording = record_from_dataset(agent, dataset)
    if len(recording) < count:
        raise ExportError(
            f"{recording.source} yields {len(recording)} observations; the parity check needs "
            f">= {count} (use a bigger dataset or record from matches)"
        )
    return recording


def probe_input_shape(agent: Agent) -> tuple[int, ...]:
    """Shape of one model input: the ``input_shape`` an exportable agent declares."""
    return tuple(exportable(agent).input_shape)


# ----------------------------------------------------------------------------- runtimes
class Runtime(ABC):
    """Executes a policy network: float32 model inputs (B, *shape) -> scores (B, A) over the game's A actions."""

    name: str = "runtime"
    device: str = "cpu"

    @abstractmethod
    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Action scores (B, A) float32 for model inputs (B, *shape) float32."""

    def actions(self, inputs: np.ndarray) -> np.ndarray:
        """Argmax actions (B,) int64."""
        return np.asarray(self.scores(inputs)).argmax(axis=1).astype(np.int64)


def _torch_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("device 'cuda' requested but torch sees no CUDA device on this machine")
    if device not in ("cpu", "cuda"):
        raise ExportError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    return torch.device(device)


class TorchRuntime(Runtime):
    """A torch module (eager or TorchScript) under ``torch.inference_mode``."""

    def __init__(self, module: torch.nn.Module, device: str = "cpu", name: str = "torch") -> None:
        self.device = device
        self.module = module.to(_torch_device(device)).eval()
        self.name = name

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
            return self.module(x).float().cpu().numpy()


class OnnxRuntime(Runtime):
    """An ONNX model run by ONNX Runtime (CPU, or CUDA when the provider exists)."""

    name = "onnx"

    def __init__(self, model: Path | bytes, device: str = "cpu", threads: int | None = 1) -> None:
        ort = _import_onnxruntime()
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider"]}
        if device not in providers:
            raise ExportError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ExportError(
                "device 'cuda' requested but ONNX Runtime has no CUDAExecutionProvider here "
                f"(available: {ort.get_available_providers()})"
            )
        options = ort.SessionOptions()
        if threads:
            # Batch-1 decisions of a small network are fastest on one thread (no pool hand-off).
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=providers[device])
        self.device = device
        self.input_name = self.session.get_inputs()[0].name

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # an optional extra
        raise ExportError(
            "ONNX Runtime is not installed; install the serving extra: pip install 'bcarena[serve]'"
        ) from exc
    return onnxruntime


# ----------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class Format:
    """A serving format: how to write a module to one file and how to run that file."""

    name: str
    filename: str
    save: Callable[[torch.nn.Module, torch.Tensor, Path], None]
    load: Callable[[Path, str], Runtime]


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The torch.onnx exporter logs warnings about unrelated operators (torchvision) and prints progress."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _save_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the torch.onnx exporter needs it)
    except ImportError as exc:
        raise ExportError(
            "ONNX export needs onnxscript; install the serving extra: pip install 'bcarena[serve]'"
        ) from exc
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet_export():
        # external_data=False embeds the weights: one self-contained file, no model.onnx.data beside it.
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["obs"],
            output_names=["scores"],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )


def _save_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # torch >= 2.9 marks torch.jit deprecated; TorchScript is still a requested serving format.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))


def _load_torchscript(path: Path, device: str) -> Runtime:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=_torch_device(device))
    return TorchRuntime(module, device, name="torchscript")


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", "model.onnx", _save_onnx, lambda path, device: OnnxRuntime(path, device)),
    "torchscript": Format("torchscript", "model.ts", _save_torchscript, _load_torchscript),
}
assert tuple(FORMATS) == FORMAT_NAMES


# ----------------------------------------------------------------------------- parity
@dataclass
class ParityReport:
    """Exported model vs the torch agent on the same recorded model inputs."""

    observations: int
    mismatches: int  # exported argmax != torch module argmax
    module_mismatches: int  # torch module argmax != the action the agent chose (0 for a greedy agent)
    max_abs_score_diff: float  # exported vs torch scores
    source: str
    greedy: bool = True  # a sampling agent is served greedily: its own choices are not compared
    required: int = MIN_PARITY_OBSERVATIONS

    @property
    def passed(self) -> bool:
        return (
            self.observations >= self.required
            and self.mismatches == 0
            and (self.module_mismatches == 0 or not self.greedy)
        )


def parity_check(
    module: torch.nn.Module,
    runtime: Runtime,
    recording: ParityInputs,
    batch: int = 4096,
    required: int = MIN_PARITY_OBSERVATIONS,
    greedy: bool = True,
) -> ParityReport:
    """Compare ``runtime`` (the exported model) with the eager torch module on every recorded input."""
    reference = TorchRuntime(module, "cpu")
    mismatches = module_mismatches = 0
    max_diff = 0.0
    for start in range(0, len(recording), batch):
        x = recording.inputs[start : start + batch].astype(np.float32)
        chosen = recording.actions[start : start + batch]
        ref_scores = reference.scores(x)
        scores = np.asarray(runtime.scores(x))
        mismatches += int(np.sum(scores.argmax(1) != ref_scores.argmax(1)))
        module_mismatches += int(np.sum(ref_scores.argmax(1) != chosen))
        max_diff = max(max_diff, float(np.max(np.abs(scores - ref_scores))))
    return ParityReport(len(recording), mismatches, module_mismatches, max_diff, recording.source, greedy, required)


# ----------------------------------------------------------------------------- export
RUNTIME_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript")  # their versions are stamped into export.json


@dataclass
class ExportReport:
    """What ``export_agent`` wrote and the parity evidence that allowed it."""

    path: Path
    format: str
    model_file: Path
    model_bytes: int
    sha256: str
    layout: ObsLayout
    parity: ParityReport
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)


def _format(name: str) -> Format:
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; choose one of {sorted(FORMATS)}")
    return FORMATS[name]


def check_served_game(agent: Agent) -> Game:
    """The game ``agent`` declares, once it fits it by the one exact name check (``check_agent_for_game``): an
    unknown game, or action names that differ from the game's in any way, is a GameError naming both."""
    return check_agent_for_game(agent.name, agent.game, agent.action_names, get_game(agent.game))


def export_agent(
    agent: Agent,
    fmt: str,
    out: Path,
    recording: ParityInputs,
    overwrite: bool = False,
    required: int = MIN_PARITY_OBSERVATIONS,
    agent_source: str | None = None,
) -> ExportReport:
    """Write ``agent``'s network in format ``fmt`` to the folder ``out`` if it passes the parity check.

    Raises ExportError (and leaves nothing behind) when the exported model disagrees with the agent
    on any recorded input or when fewer than ``required`` inputs were recorded.
    """
    spec = _format(fmt)
    game = check_served_game(agent)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists (pass overwrite=True / --force to replace it)")
    if len(recording) < required:
        raise ExportError(
            f"parity check needs >= {required} recorded observations, got {len(recording)} from {recording.source}"
        )
    module = export_module(agent)
    layout = ObsLayout.from_input_shape(agent.obs_type, tuple(recording.inputs.shape[1:]), game.state_features)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        model_file = tmp / spec.filename
        spec.save(module, torch.from_numpy(recording.inputs[:2].astype(np.float32)), model_file)
        parity = parity_check(
            module, spec.load(model_file, "cpu"), recording, required=required, greedy=is_greedy(agent)
        )
        if not parity.passed:
            raise ExportError(
                f"export refused: {fmt} model's argmax differs from torch on {parity.mismatches} of "
                f"{parity.observations} recorded observations (torch module vs the agent's actions: "
                f"{parity.module_mismatches}; max score difference "
                f"{parity.max_abs_score_diff:.3g}; {parity.source})"
            )
        digest = sha256_file(model_file)
        metadata = {
            "format": fmt,
            "model_file": spec.filename,
            "sha256": digest,
            "model_bytes": model_file.stat().st_size,
            "agent": {"name": agent.name, "class": type(agent).__name__, "source": agent_source},
            "game": {"name": game.name, "version": game.version},
            "layout": layout.to_dict(),
            "action_names": list(agent.action_names),  # the game's, exactly (check_served_game)
            "parity": asdict(parity),
            "versions": package_versions(RUNTIME_PACKAGES),
        }
        write_json(tmp / EXPORT_FILE, metadata)
    return ExportReport(out, fmt, out / spec.filename, metadata["model_bytes"], digest, layout, parity, metadata)


# ----------------------------------------------------------------------------- served models
@dataclass
class ServedModel:
    """A runnable model plus what a server tells clients about it."""

    runtime: Runtime
    layout: ObsLayout
    agent_name: str
    format: str
    sha256: str
    model_bytes: int
    action_names: tuple[str, ...]
    game: str  # the game whose observations it takes and whose actions it answers

    def metadata(self) -> dict[str, Any]:
        return {
            "agent": self.agent_name,
            "format": self.format,
            "runtime": self.runtime.name,
            "device": self.runtime.device,
            "model_sha256": self.sha256,
            "model_bytes": self.model_bytes,
            "layout": self.layout.to_dict(),
            "action_names": list(self.action_names),
        }


def agent_weights(path: Path) -> tuple[str, int]:
    """(SHA-256, bytes) of an agent folder's weights: every .safetensors file in it, composite parts included."""
    files = sorted(Path(path).rglob("*.safetensors"))
    if not files:
        raise ExportError(f"{path}: agent folder holds no .safetensors weights")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest(), sum(f.stat().st_size for f in files)


def served_from_agent(
    agent: Agent,
    source: Path | None,
    backend: str = "torch",
    device: str = "cpu",
    parity_observations: int = MIN_PARITY_OBSERVATIONS,
) -> ServedModel:
    """Serve an in-memory agent: eagerly with torch, or converted to ``backend`` after a parity check
    on ``parity_observations`` inputs recorded from matches of the agent."""
    module = export_module(agent)
    if backend == "torch":
        game = check_served_game(agent)
        shape = probe_input_shape(agent)
        digest, size = agent_weights(source) if source is not None else (_module_digest(module), _module_bytes(module))
        return ServedModel(
            TorchRuntime(module, device),
            ObsLayout.from_input_shape(agent.obs_type, shape, game.state_features),
            agent.name,
            "torch",
            digest,
            size,
            tuple(agent.action_names),  # the agent's own game's actions (a Boxing agent answers Boxing's names)
            game.name,
        )
    recording = record_from_matches(agent, parity_observations)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_agent(
            agent,
            backend,
            Path(tmp) / "export",
            recording,
            required=parity_observations,
            agent_source=str(source) if source else None,
        )
        return load_export(report.path, device)


def _module_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def load_export(path: Path, device: str = "cpu") -> ServedModel:
    """Load an export folder written by ``export_agent``.

    Every field of export.json is checked before the model is touched: the model file must lie
    inside the folder (a hand-edited ``model_file`` cannot serve another folder's model or read
    any file on the machine), its size and SHA-256 must match, and only then is it parsed; a model
    that does not parse, or whose scores do not fit the layout and action names, is an ExportError.
    """
    path = Path(path)
    meta_file = path / EXPORT_FILE
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: not an export folder (no {EXPORT_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ExportError(f"{meta_file}: not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    spec, model_name, expected, layout, agent_name, action_names, game = _export_fields(meta, meta_file)
    try:
        model_file = inside(path, model_name, "model_file")
    except OutsideFolderError:
        raise ExportError(
            f"{meta_file}: model_file {model_name!r} lies outside the export folder; "
            f"an export folder serves only the model file it holds"
        ) from None
    if not model_file.is_file():
        raise ExportError(f"{path}: model file {model_name} is missing")
    size = model_file.stat().st_size
    if "model_bytes" in meta and size != meta["model_bytes"]:
        raise ExportError(f"{model_file}: {size} bytes, but export.json says {meta['model_bytes']}")
    # Loading into memory first means the bytes hashed are the bytes run.
    data = model_file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ExportError(f"{model_file}: SHA-256 {digest[:12]}... does not match export.json ({expected[:12]}...)")
    try:
        runtime = OnnxRuntime(data, device) if spec.name == "onnx" else spec.load(model_file, device)
        scores = np.asarray(runtime.scores(np.zeros((1, *layout.shape), dtype=np.float32)))
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime and torch.jit raise many types for bad models
        raise ExportError(
            f"{model_file}: not a runnable {spec.name} model for inputs {layout.shape} "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if scores.shape != (1, len(action_names)):
        raise ExportError(
            f"{model_file}: the model gives scores of shape {scores.shape} for one observation; "
            f"export.json names {len(action_names)} actions"
        )
    return ServedModel(runtime, layout, agent_name, spec.name, digest, len(data), action_names, game)


def _export_fields(meta: Any, meta_file: Path) -> tuple[Format, str, str, ObsLayout, str, tuple[str, ...], str]:
    """(format, model file name, SHA-256, layout, agent name, action names, game) of export.json, each type-checked;
    an export written before exports named their game is Duel's (the only game they served)."""

    def fail(field_name: str, expected: str) -> ExportError:
        value = meta.get(field_name, "<missing>") if isinstance(meta, dict) else meta
        return ExportError(f"{meta_file}: {field_name} is {str(value)[:80]!r}; expected {expected}")

    if not isinstance(meta, dict):
        raise ExportError(f"{meta_file}: must hold a JSON object, got {type(meta).__name__}")
    if not isinstance(meta.get("format"), str) or meta["format"] not in FORMATS:
        raise fail("format", f"one of {sorted(FORMATS)}")
    if not isinstance(meta.get("model_file"), str) or not meta["model_file"]:
        raise fail("model_file", "the name of the model file in this folder")
    sha = meta.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise fail("sha256", "64 lowercase hex digits")
    if "model_bytes" in meta and (not isinstance(meta["model_bytes"], int) or isinstance(meta["model_bytes"], bool)):
        raise fail("model_bytes", "an integer")
    agent = meta.get("agent")
    if not isinstance(agent, dict) or not isinstance(agent.get("name"), str):
        raise ExportError(f"{meta_file}: agent must be an object with a string 'name'")
    names = meta.get("action_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise fail("action_names", "a non-empty list of action names")
    game = meta.get("game", {"name": "duel"})
    if not isinstance(game, dict) or not isinstance(game.get("name"), str) or not game["name"]:
        raise fail("game", "an object with the game's 'name' and 'version'")
    raw = meta.get("layout")
    shape = raw.get("shape") if isinstance(raw, dict) else None
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ExportError(f"{meta_file}: layout.shape must be a list of positive integers, got {shape!r}")
    features = raw.get("features")
    if raw.get("obs_type") == "state" and not (
        isinstance(features, list) and features and all(isinstance(f, str) and f for f in features)
    ):
        raise ExportError(f"{meta_file}: layout {raw} is inconsistent; a state layout names its game's features")
    try:
        # The layout must be exactly what the exporter derives from that shape (dtype, features, stack).
        layout = ObsLayout.from_input_shape(raw.get("obs_type"), tuple(shape), tuple(features or ()))
        written = ObsLayout.from_dict(raw)
    except (ExportError, KeyError, TypeError) as exc:
        raise ExportError(f"{meta_file}: invalid layout ({exc})") from None
    if written != layout:
        raise ExportError(f"{meta_file}: layout {raw} is inconsistent; for shape {shape} it must be {layout.to_dict()}")
    return FORMATS[meta["format"]], meta["model_file"], sha, layout, agent["name"], tuple(names), game["name"]


def load_served(
    path: Path, backend: str | None = None, device: str = "cpu", parity_observations: int = MIN_PARITY_OBSERVATIONS
) -> ServedModel:
    """A served model from an export folder (its own format) or an agent folder (torch, or exported on the fly)."""
    path = Path(path)
    if (path / EXPORT_FILE).is_file():
        served = load_export(path, device)
        if backend is not None and backend != served.format:
            raise ExportError(
                f"{path} is a {served.format} export; it cannot run with backend {backend!r} "
                f"(serve the agent folder instead to convert it)"
            )
        return served
    from bcarena.agents import load_agent

    if not (path / AGENT_FILE).is_file():
        raise ExportError(f"{path}: neither an export folder ({EXPORT_FILE}) nor an agent folder ({AGENT_FILE})")
    agent = load_agent(path)
    return served_from_agent(agent, path, backend or "torch", device, parity_observations)
