"""Writing frame sequences to video files with OpenCV, atomically.

``.mp4`` uses the ``mp4v`` codec (lossy, plays everywhere); ``.mkv`` uses FFV1, which is
lossless, for frames that will be trained on. A video is written to a temporary file in the
same folder and renamed into place (``bcarena.envs.files``), so a crash never leaves a truncated
file under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from bcarena.envs.errors import BcarenaError
from bcarena.envs.files import commit_partial, discard_partial, new_partial

CODECS = {".mp4": "mp4v", ".mkv": "FFV1", ".avi": "MJPG"}


class VideoError(BcarenaError, RuntimeError):
    """A video could not be written or read (bad extension or fps, unreadable file, bad frames)."""


class VideoWriter:
    """Context manager writing BGR (H, W, 3) or gray (H, W) uint8 frames at ``fps``.

    The file appears under ``path`` only when the writer is closed without an exception.
    """

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CODECS:
            raise VideoError(f"{self.path}: unsupported video extension {suffix!r}; use one of {sorted(CODECS)}")
        if not fps > 0:
            raise VideoError(f"{self.path}: fps must be > 0, got {fps}")
        self.fps = float(fps)
        self._tmp: Path | None = None  # created with the writer, on the first frame
        self._writer: cv2.VideoWriter | None = None
        self._shape: tuple[int, ...] | None = None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise VideoError(f"{self.path}: frames must be uint8 (H, W) or (H, W, 3), got {frame.dtype} {frame.shape}")
        if self._writer is None:
            self._tmp = new_partial(self.path)
            height, width = frame.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*CODECS[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (width, height), frame.ndim == 3)
            if not self._writer.isOpened():
                raise VideoError(f"{self.path}: OpenCV could not open a {CODECS[self.path.suffix.lower()]} writer")
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise VideoError(
                f"{self.path}: frame {self.frames_written} has shape {frame.shape}, expected {self._shape}"
            )
        self._writer.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def close(self, keep: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is None:
            return
        if keep and self.frames_written:
            commit_partial(self._tmp, self.path)
        else:
            discard_partial(self._tmp)
        self._tmp = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


def read_video(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """All frames of a video: (T, H, W, 3) BGR uint8, or (T, H, W) with ``gray``."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open this video (unreadable or unsupported)")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if gray else frame)
    finally:
        capture.release()
    if not frames:
        raise VideoError(f"{path}: no decodable frames (truncated or empty video)")
    return np.stack(frames)
