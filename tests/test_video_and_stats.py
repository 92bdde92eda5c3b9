import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from bcarena.envs.video import VideoError, VideoWriter, read_video
from bcarena.eval.stats import wilson_interval


@pytest.mark.parametrize("wins, n", [(0, 400), (400, 400), (37, 100), (1, 3), (513, 1000)])
def test_wilson_matches_statsmodels(wins, n):
    ref = proportion_confint(wins, n, alpha=0.05, method="wilson")
    assert wilson_interval(wins, n) == pytest.approx(ref, abs=1e-12)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError, match="trials > 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match=r"within \[0, trials=10\]"):
        wilson_interval(11, 10)


def _write_video(path, frames, fps=10):
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def test_ffv1_round_trips_frames_exactly(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(12, 84, 84), dtype=np.uint8)
    _write_video(tmp_path / "frames.mkv", frames)
    np.testing.assert_array_equal(read_video(tmp_path / "frames.mkv", gray=True), frames)


def test_mp4_is_written_atomically_and_readable(tmp_path):
    frames = np.zeros((5, 64, 96, 3), dtype=np.uint8)
    path = _write_video(tmp_path / "clip.mp4", frames)
    assert read_video(path).shape == (5, 64, 96, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no partial file left behind


def test_a_failed_write_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((8, 8, 3), dtype=np.uint8)
        raise RuntimeError("capture crashed")

    with pytest.raises(RuntimeError, match="capture crashed"):
        _write_video(tmp_path / "clip.mp4", frames())
    assert list(tmp_path.iterdir()) == []


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="broken.mp4"):
        read_video(bad)
