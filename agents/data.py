"""Model inputs from an action dataset: tensors in memory, frames stacked by index, never copied.

``SplitData`` holds one split: state inputs (n, k * D) float32, or the split's gray frames
(n, H, W) uint8 plus a (n, k) ``stack_index`` whose row i lists the frames stacked for row i
(oldest first; the first frame of an episode repeats at its start, as ``TorchAgent`` does after
a reset). ``batch(idx)`` gathers float inputs for a batch of row indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bcarena.recordings.dataset import ActionDataset, DatasetError


@dataclass
class SplitData:
    obs_type: str
    frame_stack: int
    inputs: torch.Tensor  # state: (n, k*D) float32; pixels: (n, H, W) uint8
    stack_index: torch.Tensor | None  # pixels: (n, k) int64 rows of ``inputs``
    labels: torch.Tensor  # (n,) int64 action ids
    episodes: np.ndarray  # (n,) episode ids, rows of an episode contiguous and in frame order
    dataset: ActionDataset  # the split, rows in the same order

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.obs_type == "state":
            return (int(self.inputs.shape[1]),)
        return (self.frame_stack, int(self.inputs.shape[1]), int(self.inputs.shape[2]))

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Float32 model inputs (B, *input_shape) of rows ``idx``."""
        if self.obs_type == "state":
            return self.inputs[idx]
        return self.inputs[self.stack_index[idx]].float()

    def all_inputs(self, chunk: int = 4096):
        """Yield (row slice, inputs) chunks over the whole split (inference)."""
        for start in range(0, len(self), chunk):
            idx = torch.arange(start, min(start + chunk, len(self)))
            yield idx, self.batch(idx)


def stack_rows(episodes: np.ndarray, k: int) -> np.ndarray:
    """(n, k) row indices of the k frames ending at each row, clipped at its episode's first row."""
    n = episodes.shape[0]
    starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]]) if n else np.zeros(0, dtype=np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    rows = np.arange(n)[:, None] - np.arange(k - 1, -1, -1)[None, :]
    return np.maximum(rows, first[:, None])


def split_data(dataset: ActionDataset, split: str | None, obs_type: str, frame_stack: int) -> SplitData:
    """Inputs of one split (``None``: all rows) for a policy reading ``obs_type`` with ``frame_stack`` frames."""
    part = dataset.split(split) if split is not None else dataset
    table = part.table
    order = np.lexsort((table["frame"].to_numpy(), table["episode"].to_numpy()))
    if not np.all(order == np.arange(order.size)):
        part = ActionDataset(table.iloc[order], part.manifest, part.pixels, part.path)
    episodes = part.table["episode"].to_numpy()
    rows = stack_rows(episodes, frame_stack)
    labels = torch.as_tensor(part.actions())
    if obs_type == "state":
        states = part.states()
        if not np.isfinite(states).all():
            raise DatasetError(f"{part._where()}: state features hold NaN or inf")
        inputs = torch.as_tensor(states[rows].reshape(len(part), -1))
        return SplitData(obs_type, frame_stack, inputs, None, labels, episodes, part)
    frames = np.ascontiguousarray(part.frames())
    return SplitData(obs_type, frame_stack, torch.from_numpy(frames), torch.as_tensor(rows), labels, episodes, part)


def fit_normalization(data: SplitData, max_frames: int = 4096, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalization (mean, std) from training inputs: per feature for state, one scalar for pixels.

    Features that never vary get std 1 (they pass through centred, not blown up).
    """
    if data.obs_type == "state":
        x = data.inputs.double()
        mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
        std = torch.where(std < 1e-6, torch.ones_like(std), std)
        return mean.float(), std.float()
    n = data.inputs.shape[0]
    pick = np.random.default_rng(seed).choice(n, size=min(n, max_frames), replace=False)
    x = data.inputs[torch.as_tensor(np.sort(pick))].double()
    std = float(x.std())
    return torch.tensor(float(x.mean())), torch.tensor(std if std > 1e-6 else 1.0)
