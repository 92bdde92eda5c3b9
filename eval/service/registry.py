"""A model registry on MLflow: agent folders as registered model versions, with aliases (champion, challenger).

``register`` logs an agent folder as an MLflow *pyfunc model from code* (no pickle: the model's code is the short
:data:`PYFUNC_CODE` script, which loads the agent folder with :func:`bcarena.agents.load_agent`; the folder itself
is the model's artifact ``artifacts/agent``) inside an MLflow run holding the agent's offline metrics, win rates
and requirements check as metrics/params, and its lineage (agent and weights hash, dataset manifest hash,
experiment run id, git commit) as tags of the run and of the model version. Each call creates the next version of
the registered model ``name``; ``set_alias`` points an alias at a version.

``resolve_model`` turns ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or an agent folder into a local agent
folder: a registered version is downloaded once into a cache (versions are immutable), then validated like any
agent folder. The store is a local SQLite file by default (``sqlite:///<cwd>/mlruns/mlflow.db``, artifacts beside
it); any tracking URI can be given. An http(s) server must accept a connection within ``PROBE_TIMEOUT_S`` and
MLflow's HTTP retries are bounded (``HTTP_LIMITS``), so a server that is down costs seconds and one line.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bcarena.envs.files import atomic_folder, sha256_file, write_text
from bcarena.eval.errors import EvalError

PROBE_TIMEOUT_S = 3.0
# MLflow's own environment variables; a value the user has set wins. Worst case on a server that
# accepts connections but never answers: 3 attempts of 30 s.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
EXPERIMENT = "bcarena-registry"
AGENT_ARTIFACT = "agent"  # the MLflow model's name in its run, and the agent folder's name in its artifacts
PYFUNC_CODE = '''"""A bcarena agent as an MLflow pyfunc model: inputs (B, *shape) float32 -> actions (B,)."""

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class BcarenaAgentModel(PythonModel):
    def load_context(self, context):
        from bcarena.agents import load_agent

        self.agent = load_agent(context.artifacts["agent"])

    def predict(self, context, model_input: list[Any], params=None) -> list[int]:
        import numpy as np
        import torch

        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            return self.agent.export_module()(x).argmax(1).tolist()


mlflow.models.set_model(BcarenaAgentModel())
'''


class RegistryError(EvalError, LookupError):
    """An unknown registered model, version or alias, or a model URI that is not ``models:/NAME@ALIAS|/VERSION``."""


class RegistryUnavailable(EvalError, RuntimeError):
    """MLflow is not installed, or the tracking store cannot be reached or refused the request."""


# ----------------------------------------------------------------------------------------- the store
def unreachable_reason(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why an http(s) tracking ``uri`` cannot be used (no TCP connection within ``timeout`` s), or None.

    Other URIs (sqlite, databricks, ...) have no server to probe here: None.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"tracking URI {uri!r} has an invalid port"
    if not parts.hostname:
        return f"tracking URI {uri!r} names no host"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return f"MLflow tracking server {uri} is unreachable ({reason})"


@contextmanager
def bounded_http() -> Iterator[None]:
    """Apply ``HTTP_LIMITS`` where the environment does not set them, for the duration of the block."""
    added = {name: value for name, value in HTTP_LIMITS.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlruns/mlflow.db`` (the folder is created)."""
    folder = Path("mlruns").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _cache_root(uri: str) -> Path:
    """Downloaded versions live beside a local SQLite store, else under ./mlruns/models."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent / "models"
    return Path("mlruns/models").resolve()


@contextmanager
def _client(tracking_uri: str | None) -> Iterator[tuple[Any, Any, str]]:
    """(mlflow, MlflowClient, uri) with bounded HTTP; store failures become one RegistryUnavailable line."""
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise RegistryUnavailable(
            "the model registry needs the 'tracking' extra: pip install -c constraints.txt -e '.[tracking]'"
        ) from None
    uri = tracking_uri or default_tracking_uri()
    reason = unreachable_reason(uri)
    if reason is not None:
        raise RegistryUnavailable(f"{reason}; nothing was registered or resolved")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no database-migration chatter
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with bounded_http():
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            yield mlflow, mlflow.MlflowClient(uri, uri), uri
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"{' '.join(str(exc.message).split())[:300]} (tracking URI {uri})") from None
        raise RegistryUnavailable(
            f"MLflow at {uri} failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        ) from None
    except OSError as exc:  # requests' errors are OSErrors
        raise RegistryUnavailable(f"MLflow at {uri} failed ({type(exc).__name__}: {str(exc)[:300]})") from None


# ----------------------------------------------------------------------------------------- registering
def _numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    """Flatten nested numbers into ``out`` with dotted keys (MLflow's metric-name alphabet)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _numbers(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        out["".join(c if c.isalnum() or c in "_-./ " else "_" for c in prefix)] = float(value)


def agent_lineage(folder: Path) -> dict[str, str]:
    """What an agent folder says about where it came from: name, kind, obs type, weights and dataset hashes."""
    import json

    from bcarena.eval.service.export import agent_weights

    spec = json.loads((folder / "agent.json").read_text(encoding="utf-8"))
    info = spec.get("info") or {}
    lineage = {
        "agent.name": str(spec.get("name", folder.name)),
        "agent.kind": str(spec.get("kind", "?")),
        "agent.obs_type": str(spec.get("obs_type", "?")),
        "agent.json_sha256": sha256_file(folder / "agent.json"),
    }
    if any(folder.rglob("*.safetensors")):  # a bot's folder holds no weights
        lineage["agent.weights_sha256"] = agent_weights(folder)[0]
    dataset = info.get("dataset")
    if isinstance(dataset, str):
        lineage["dataset.path"] = dataset
        manifest = Path(dataset) / "manifest.json"
        lineage["dataset.manifest_sha256"] = sha256_file(manifest) if manifest.is_file() else "missing"
    return lineage


def offline_metrics(folder: Path) -> dict[str, float]:
    """Numbers the trainer left: ``info.val`` of agent.json and, beside the folder, ``metrics.json`` (val/test)."""
    import json

    out: dict[str, float] = {}
    spec = json.loads((folder / "agent.json").read_text(encoding="utf-8"))
    _numbers("val", (spec.get("info") or {}).get("val", {}), out)
    metrics = folder.parent / "metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text(encoding="utf-8"))
        _numbers("offline", {k: data.get(k) for k in ("val", "test") if isinstance(data.get(k), dict)}, out)
    return out


def register(
    agent_folder: str | os.PathLike,
    name: str,
    metrics: dict[str, Any] | None = None,
    win_rates: dict[str, float] | None = None,
    requirements: dict[str, Any] | None = None,
    lineage: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    alias: str | None = None,
) -> int:
    """Log the agent folder as the next version of registered model ``name``; returns the version number.

    ``metrics`` (nested numbers) default to :func:`offline_metrics`; ``win_rates`` are logged as
    ``win_rate.<opponent>``; ``requirements`` is a ``bcarena check`` report (``passed`` and each row's value);
    ``lineage`` (experiment run id, git commit, ...) joins :func:`agent_lineage` as tags. ``alias`` (e.g.
    ``champion``) then points at the new version.
    """
    from bcarena.agents import load_agent

    folder = Path(agent_folder)
    load_agent(folder)  # a folder that does not load is refused before anything is logged
    _check_name(name)
    if alias is not None:
        _check_alias(alias)
    tags = {**agent_lineage(folder), **(lineage or {})}
    numbers: dict[str, float] = {}
    _numbers("", metrics if metrics is not None else offline_metrics(folder), numbers)
    _numbers("win_rate", win_rates or {}, numbers)
    params: dict[str, str] = {}
    if requirements is not None:
        numbers["requirements.passed"] = float(bool(requirements.get("passed")))
        for row in requirements.get("rows", []):
            params[f"requirement.{row['requirement']}"[:250]] = f"{row['measured']} ({row['bound']})"[:500]
    with _client(tracking_uri) as (mlflow, client, uri), tempfile.TemporaryDirectory() as tmp:
        code = write_text(Path(tmp) / "bcarena_agent_model.py", PYFUNC_CODE)
        shutil.copytree(folder, Path(tmp) / AGENT_ARTIFACT)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(EXPERIMENT, artifact_location=_artifact_location(uri))
        )
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"register {name}", tags=tags) as run:
            mlflow.log_params({"agent_folder": str(folder.resolve()), **params})
            if numbers:
                mlflow.log_metrics(numbers)
            with warnings.catch_warnings():  # MLflow asks for predict() type hints it would validate inputs with
                warnings.simplefilter("ignore", UserWarning)
                info = mlflow.pyfunc.log_model(
                    name=AGENT_ARTIFACT,
                    python_model=str(code),
                    artifacts={"agent": str(Path(tmp) / AGENT_ARTIFACT)},
                    pip_requirements=["bcarena"],
                )
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description="bcarena agent (pyfunc over the agent folder)")
        version = client.create_model_version(name, info.model_uri, run.info.run_id, tags=tags)
        if alias is not None:
            client.set_registered_model_alias(name, alias, version.version)
        return int(version.version)


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside it, whatever the current directory."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None


def _check_name(name: str) -> None:
    if not name or "/" in name or "@" in name or name != name.strip():
        raise RegistryError(f"registered model name {name!r} must be non-empty, without '/', '@' or outer spaces")


def _check_alias(alias: str) -> None:
    if not ALIAS.match(alias) or alias.lower() == "latest" or re.fullmatch(r"v\d+", alias):
        raise RegistryError(
            f"alias {alias!r} must be a letter or '_' then letters, digits, '_' or '-' (not 'latest' or v<number>)"
        )


def set_alias(name: str, alias: str, version: int, tracking_uri: str | None = None) -> None:
    """Point ``alias`` of registered model ``name`` at ``version`` (which must exist)."""
    _check_alias(alias)
    with _client(tracking_uri) as (_, client, _uri):
        client.get_model_version(name, str(version))
        client.set_registered_model_alias(name, alias, str(version))


# ----------------------------------------------------------------------------------------- resolving
def is_model_uri(spec: str | os.PathLike) -> bool:
    return str(spec).startswith("models:/")


def parse_model_uri(uri: str) -> tuple[str, str | None, int | None]:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    match = MODEL_URI.match(uri)
    if match is None:
        raise RegistryError(f"model URI {uri!r} must be models:/NAME@ALIAS or models:/NAME/VERSION")
    version = match["version"]
    return match["name"], match["alias"], int(version) if version is not None else None


def model_version(uri: str, tracking_uri: str | None = None) -> tuple[str, int]:
    """(name, version number) a ``models:/`` URI points at now; unknown names and aliases are RegistryErrors."""
    name, alias, version = parse_model_uri(uri)
    with _client(tracking_uri) as (_, client, store):
        registered = client.search_registered_models(filter_string=f"name = '{name}'")
        if not registered:
            known = sorted(m.name for m in client.search_registered_models())
            raise RegistryError(f"no registered model {name!r} in {store}; registered models: {known}")
        if alias is not None:
            aliases = dict(registered[0].aliases or {})
            if alias not in aliases:
                raise RegistryError(f"registered model {name!r} has no alias {alias!r}; its aliases: {sorted(aliases)}")
            return name, int(aliases[alias])
        client.get_model_version(name, str(version))  # RESOURCE_DOES_NOT_EXIST -> RegistryError
        return name, int(version)


def resolve_model(
    spec: str | os.PathLike, tracking_uri: str | None = None, cache: str | os.PathLike | None = None
) -> Path:
    """A local agent folder for an agent folder, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    A registered version is downloaded once into ``cache/NAME/VERSION`` (default: beside a SQLite store, else
    ./mlruns/models), written atomically; the folder is then loaded like any agent folder (refused if it does not).
    """
    from bcarena.agents import load_agent

    if not is_model_uri(spec):
        folder = Path(spec)
        if not folder.is_dir():
            raise RegistryError(f"{folder}: neither an agent folder nor a models:/NAME@ALIAS|/VERSION URI")
        load_agent(folder)
        return folder
    name, version = model_version(str(spec), tracking_uri)
    with _client(tracking_uri) as (mlflow, _client_, uri):
        target = Path(cache) if cache is not None else _cache_root(uri)
        target = target / name / str(version)
        if not (target / "artifacts" / AGENT_ARTIFACT / "agent.json").is_file():
            with atomic_folder(target, overwrite=True) as tmp:
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp))
    folder = target / "artifacts" / AGENT_ARTIFACT
    load_agent(folder)
    return folder


def model_folder(spec: str, tracking_uri: str | None = None) -> Path:
    """What ``bcarena serve`` serves: a registered version's agent folder (downloaded), or the folder given."""
    if is_model_uri(spec):
        return resolve_model(spec, tracking_uri)
    folder = Path(spec)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise RegistryError(
            f"'agent': dir '{spec}' {what}; expected an agent or export folder or models:/NAME@ALIAS|/VERSION"
        )
    return folder
