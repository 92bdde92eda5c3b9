"""MLflow tracking of experiment runs (optional extra ``tracking``: mlflow-skinny + SQLAlchemy).

Every run logs its parameters, metrics per agent, plots and videos, so teams can compare runs in
MLflow's UI (``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``). The default store is a
SQLite file under the project (``mlruns/mlflow.db``, artifacts in ``mlruns/artifacts``) — MLflow's
plain-folder store is deprecated; any tracking URI (a server, a database) can be given instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


class TrackingUnavailable(RuntimeError):
    pass


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise TrackingUnavailable("MLflow tracking needs the 'tracking' extra: pip install -c constraints.txt -e '.[tracking]' "
                                  "(or set tracking.mlflow: false in the experiment)") from None
    return mlflow


def default_uri(project_root: Path) -> str:
    folder = (project_root / "mlruns").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside it, whatever the current directory."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return None


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        out[prefix] = float(value)


def log_run(uri: str, experiment: str, run_name: str, params: dict[str, Any], metrics: dict[str, Any],
            artifacts_dir: Path, tags: dict[str, str] | None = None) -> str:
    """Log one experiment run; returns the MLflow run id. ``metrics`` may be nested (flattened with dots)."""
    mlflow = _mlflow()
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
