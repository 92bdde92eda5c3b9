"""Export an action dataset to Minari, the gymnasium offline-RL dataset standard.

Each dataset episode becomes a Minari episode. Minari wants ``T + 1`` observations for ``T``
actions (the observation after the last action too); a recording holds only the frames on
which decisions were taken, so the last observation is repeated as the final one (and the
episode is marked terminated if the match ended, truncated if the recording stopped early).
Rewards are 0: behaviour cloning needs none, and none were recorded. Storage is Minari's
Arrow format (pyarrow is a core dependency; HDF5 would need h5py). Pixels are stored
losslessly (no JPEG), so the observations read back equal the dataset's exactly.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from bcarena.recordings.dataset import ActionDataset, DatasetError

OBSERVATIONS = ("state", "pixels")


ENV_IDS = {"duel": "bcarena/Duel-v0", "boxing": "ALE/Boxing-v5"}  # gymnasium ids recorded in the Minari metadata


def export_minari(
    dataset: ActionDataset,
    dataset_id: str,
    observations: str = "state",
    author: str = "bcarena",
    description: str | None = None,
):
    """Write ``dataset`` as Minari dataset ``dataset_id`` (e.g. ``"bcarena/duel-pro-v0"``) under
    ``$MINARI_DATASETS_PATH``; returns the ``minari.MinariDataset``."""
    try:
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError:
        raise DatasetError("Minari export needs the 'minari' extra: pip install 'bcarena[minari]'") from None
    if observations not in OBSERVATIONS:
        raise DatasetError(f"observations must be one of {OBSERVATIONS}, got {observations!r}")
    if observations == "state":
        values = dataset.states()
        space = spaces.Box(-np.inf, np.inf, shape=values.shape[1:], dtype=np.float32)
    else:
        values = np.asarray(dataset.frames())[..., None]
        space = spaces.Box(0, 255, shape=values.shape[1:], dtype=np.uint8)
    actions = dataset.actions()
    episodes = dataset.table["episode"].to_numpy()
    results = {s["episode"]: s.get("result", {}) for s in dataset.manifest["sources"]}
    starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]])
    ends = np.r_[starts[1:], episodes.size]
    buffers = []
    for start, end in zip(starts, ends):
        n = end - start
        truncated = bool(results.get(int(episodes[start]), {}).get("truncated", False))
        obs = np.concatenate([values[start:end], values[end - 1 : end]])
        buffers.append(
            EpisodeBuffer(
                id=int(episodes[start]),
                observations=obs,
                actions=actions[start:end],
                rewards=np.zeros(n),
                terminations=np.r_[np.zeros(n - 1, bool), not truncated],
                truncations=np.r_[np.zeros(n - 1, bool), truncated],
            )
        )
    manifest = dataset.manifest
    env_id = ENV_IDS.get(manifest["game"])
    if manifest["game"] == "boxing":
        import bcarena.envs.boxing  # noqa: F401  (registers the ALE ids)
    if dataset_id in minari.list_local_datasets():
        raise DatasetError(
            f"Minari dataset {dataset_id!r} already exists at {minari.storage.get_dataset_path(dataset_id)}"
            f"; choose another id or delete it (minari delete {dataset_id})"
        )
    with warnings.catch_warnings():  # Minari nags about unset permalink/email; a generated export has neither
        warnings.filterwarnings("ignore", message=".*(code_permalink|author_email|eval_env).*")
        return minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=gym.spec(env_id) if env_id else None,
            action_space=spaces.Discrete(dataset.num_actions),
            observation_space=space,
            algorithm_name=f"recorded {manifest['game']} play ({manifest['alignment']} alignment)",
            author=author,
            data_format="arrow",
            jpeg_encoding=False,
            description=description
            or f"bcarena {manifest['game']} action dataset, {manifest['num_episodes']} "
            f"episodes, actions {manifest['action_names']}",
        )
