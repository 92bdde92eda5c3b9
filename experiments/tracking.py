"""MLflow tracking of experiment runs (optional extra ``tracking``: mlflow-skinny + SQLAlchemy).

Every run logs its parameters, metrics per agent, plots and videos, so teams can compare runs in
MLflow's UI (``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``). The default store is a
SQLite file under the project (``mlruns/mlflow.db``, artifacts in ``mlruns/artifacts``) — MLflow's
plain-folder store is deprecated; any tracking URI (a server, a database) can be given instead.

Tracking never fails a run: the run folder is complete before anything is logged, so a store that
cannot be used (not installed, a server that is down, a database that refuses) is one
``TrackingUnavailable`` line. A tracking server must accept a connection within
``PROBE_TIMEOUT_S``, and MLflow's HTTP retries are bounded (``HTTP_LIMITS``; both shared with the model
registry, :mod:`bcarena.eval.service.registry`): its defaults wait
about 4 minutes on a server that is down.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bcarena.envs.errors import BcarenaError
from bcarena.eval.service.registry import PROBE_TIMEOUT_S, unreachable_reason
from bcarena.eval.service.registry import bounded_http as _bounded_http


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


NOT_LOGGED = "the run folder is complete, but this run is not in MLflow"


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingUnavailable unless an http(s) tracking ``uri`` accepts a TCP connection within ``timeout`` s.

    Other URIs (sqlite, databricks, ...) pass: they have no server to probe here.
    """
    reason = unreachable_reason(uri, timeout)
    if reason is not None:
        raise TrackingUnavailable(f"{reason}; {NOT_LOGGED}")


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
        for name in RUN_FILES:
            if (artifacts_dir / name).is_file():
                mlflow.log_artifact(str(artifacts_dir / name))
        return run.info.run_id


# Run-folder files logged as artifacts (aggregates*: across seeds, when the run has them; experiments.runner).
RUN_FILES = (
    "results.json",
    "config.resolved.yaml",
    "environment.json",
    "leaderboard.parquet",
    "aggregates.json",
    "aggregates.md",
    "performance_profile.png",
)


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
