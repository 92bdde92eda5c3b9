"""MLflow tracking of experiment runs (optional extra ``tracking``: mlflow-skinny + SQLAlchemy).

Every run logs its parameters, metrics per agent, plots and videos, so teams can compare runs in
MLflow's UI (``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``). The default store is a
SQLite file under the project (``mlruns/mlflow.db``, artifacts in ``mlruns/artifacts``) — MLflow's
plain-folder store is deprecated; any tracking URI (a server, a database) can be given instead.

Tracking never fails a run: the run folder is complete before anything is logged, so a store that
cannot be used (not installed, a server that is down, a database that refuses) is one
``TrackingUnavailable`` line. A tracking server must accept a connection within
``PROBE_TIMEOUT_S``, and MLflow's HTTP retries are bounded (``HTTP_LIMITS``): its defaults wait
about 4 minutes on a server that is down.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bcarena.envs.errors import BcarenaError


class TrackingUnavailable(BcarenaError, RuntimeError):
    """MLflow is not installed (the optional ``tracking`` extra) or the tracking store cannot be used."""


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise TrackingUnavailable(
            "MLflow tracking needs the 'tracking' extra: pip install -c constraints.txt "
            "-e '.[tracking]' (or set tracking.mlflow: false in the experiment)"
        ) from None
    return mlflow


PROBE_TIMEOUT_S = 3.0
# MLflow's own environment variables; a value the user has set wins. Worst case on a server that
# accepts connections but never answers: 3 attempts of 30 s.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
NOT_LOGGED = "the run folder is complete, but this run is not in MLflow"


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingUnavailable unless an http(s) tracking ``uri`` accepts a TCP connection within ``timeout`` s.

    Other URIs (sqlite, databricks, ...) pass: they have no server to probe here.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TrackingUnavailable(f"tracking URI {uri!r} has an invalid port; {NOT_LOGGED}") from None
    if not parts.hostname:
        raise TrackingUnavailable(f"tracking URI {uri!r} names no host; {NOT_LOGGED}")
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise TrackingUnavailable(f"MLflow tracking server {uri} is unreachable ({reason}); {NOT_LOGGED}") from None


@contextmanager
def _bounded_http() -> Iterator[None]:
    """Apply ``HTTP_LIMITS`` where the environment does not set them, for the duration of the block."""
    added = {name: value for name, value in HTTP_LIMITS.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def default_uri(project_root: Path) -> str:
    folder = (project_root / "mlruns").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside it, whatever the current directory."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        out[prefix] = float(value)


def log_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    artifacts_dir: Path,
    tags: dict[str, str] | None = None,
) -> str:
    """Log one experiment run; returns the MLflow run id. ``metrics`` may be nested (flattened with dots).

    Any failure of the store raises TrackingUnavailable (one line), never MLflow's own exceptions.
    """
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    check_reachable(uri)
    try:
        with _bounded_http():
            return _log_run(mlflow, uri, experiment, run_name, params, metrics, artifacts_dir, tags)
    except (MlflowException, OSError) as exc:  # requests' errors are OSErrors
        reason = " ".join(str(exc).split())[:300]
        raise TrackingUnavailable(f"MLflow at {uri} failed ({type(exc).__name__}: {reason}); {NOT_LOGGED}") from None


def _log_run(
    mlflow: Any,
    uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    artifacts_dir: Path,
    tags: dict[str, str] | None,
) -> str:
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no database-migration chatter in run logs
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=_artifact_root(uri))
    mlflow.set_experiment(experiment)
    flat: dict[str, float] = {}
    _flatten("", metrics, flat)
    with mlflow.start_run(run_name=run_name, tags=tags or {}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in _flatten_params(params).items()})
        # MLflow metric names allow only a restricted alphabet.
        mlflow.log_metrics({_safe(k): v for k, v in flat.items()})
        for sub in ("plots", "replays", "curves", "confusion"):
            if (artifacts_dir / sub).is_dir():
                mlflow.log_artifacts(str(artifacts_dir / sub), artifact_path=sub)
        for name in ("results.json", "config.resolved.yaml", "environment.json", "leaderboard.parquet"):
            if (artifacts_dir / name).is_file():
                mlflow.log_artifact(str(artifacts_dir / name))
        return run.info.run_id


def _flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten_params(v, key))
        else:
            out[key] = v
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
