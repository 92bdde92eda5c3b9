"""Recordings: capture gameplay at 10 FPS and convert it into action datasets.

Public API::

    record_episodes(source, opponents, episodes, out_dir, seed)      # one folder per episode
    build_dataset(recordings_dir, out_dir, alignment="window-priority", split=(0.8, 0.1, 0.1), seed=0)
    make_duel_dataset(out_dir, player="pro", episodes=50, seed=0)    # both in one call
    ActionDataset.load(path)                                         # the dataset contract
"""

from bcarena.recordings.converter import build_dataset, load_episode, make_duel_dataset
from bcarena.recordings.dataset import ActionDataset, DatasetError
from bcarena.recordings.errors import RecordingError
from bcarena.recordings.inputlog import ALIGNMENTS, InputLogError
from bcarena.recordings.recorder import RecordOptions, record_duel, record_episodes
from bcarena.recordings.sources import Policy, resolve_source

__all__ = [
    "ALIGNMENTS",
    "ActionDataset",
    "DatasetError",
    "InputLogError",
    "Policy",
    "RecordOptions",
    "RecordingError",
    "build_dataset",
    "load_episode",
    "make_duel_dataset",
    "record_duel",
    "record_episodes",
    "resolve_source",
]
