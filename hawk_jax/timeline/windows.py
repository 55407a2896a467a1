"""Windows over a long video, and from window scores to frame scores and intervals.

A window is `window_s` seconds of source frames, [start, stop); windows start every
`stride_s` seconds. Each window is sampled as a training clip is (data_pipelines/video.py,
`uniform`): T indices by the released formula over the window's frames, local index 0 moved
to 1, so every sampled frame has its predecessor and motion always comes from two consecutive
source frames. Timestamps in the prompt are window-relative (index - start) / fps: the model
was trained on clips whose time starts at 0.

For a file, the last window is aligned to the video's end when the stride does not land there,
so every source frame is inside at least one window (a video shorter than one window is one
window, with repeated frames as `short_policy="repeat"` gives). A live stream has no end to
align to: its windows are start = k * stride only (`stream_window`).

Frame scores: each source frame's score is the MEAN of the scores of the windows that contain
it. Averaging, rather than the max, keeps a short anomaly from spreading over every window
that merely overlaps it, and needs no tuning; with stride = window it is the window's score.

Intervals: maximal runs of frames whose score is >= `threshold`, runs separated by a gap of
less than `min_gap_s` merged, runs shorter than `min_len_s` dropped; each carries its peak
frame score. `end_s` is exclusive: (last frame + 1) / fps.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from data_pipelines import video as video_lib


@dataclasses.dataclass(frozen=True)
class Window:
  index: int
  start: int              # first source frame
  stop: int               # one past the last source frame
  indices: np.ndarray     # int64 [T] sampled source frames (each >= 1, its predecessor too)
  fps: float

  @property
  def start_s(self) -> float:
    return self.start / self.fps

  @property
  def end_s(self) -> float:
    return self.stop / self.fps

  @property
  def timestamps(self) -> np.ndarray:
    """Window-relative seconds of the sampled frames (what the prompt says)."""
    return ((self.indices - self.start) / self.fps).astype(np.float32)

  @property
  def needed(self) -> set[int]:
    """Source frames to decode: each sampled frame and its predecessor."""
    return set(self.indices.tolist()) | set((self.indices - 1).tolist())

  @property
  def last_needed(self) -> int:
    return int(self.indices.max())


def window_frames(window_s: float, stride_s: float, fps: float) -> tuple[int, int]:
  """(frames per window, frames per stride) at `fps`; ValueError for a bad setting."""
  if not (np.isfinite(fps) and fps > 0):
    raise ValueError(f"fps must be positive, got {fps}")
  if not window_s > 0:
    raise ValueError(f"--window_s must be positive, got {window_s}")
  if not stride_s > 0:
    raise ValueError(f"--stride_s must be positive, got {stride_s}")
  length = max(2, int(round(window_s * fps)))
  stride = max(1, int(round(stride_s * fps)))
  return length, stride


def _window(index: int, start: int, stop: int, num_frames: int, fps: float) -> Window:
  local = video_lib.sample_indices(stop - start, num_frames, "uniform")
  # video_lib moves local index 0 to 1; in a window that starts after frame 0 the frame
  # before `start` exists, but the window keeps the training clip's layout exactly.
  return Window(index, start, stop, (local + start).astype(np.int64), fps)


def plan_windows(num_source: int, fps: float, window_s: float, stride_s: float,
                 num_frames: int) -> list[Window]:
  """The windows of a file of `num_source` frames (see the module docstring)."""
  if num_source < 2:
    raise ValueError(f"too few frames: {num_source} source frame(s), motion needs at least 2")
  length, stride = window_frames(window_s, stride_s, fps)
  if num_source <= length:
    return [_window(0, 0, num_source, num_frames, fps)]
  starts = list(range(0, num_source - length + 1, stride))
  if starts[-1] + length < num_source:
    starts.append(num_source - length)
  return [_window(i, s, s + length, num_frames, fps) for i, s in enumerate(starts)]


def stream_windows(fps: float, window_s: float, stride_s: float,
                   num_frames: int) -> Iterator[Window]:
  """The endless windows of a live stream: start = k * stride."""
  length, stride = window_frames(window_s, stride_s, fps)
  k = 0
  while True:
    yield _window(k, k * stride, k * stride + length, num_frames, fps)
    k += 1


def frame_scores(windows: Sequence[Window], scores: Sequence[float],
                 num_source: int) -> np.ndarray:
  """float32 [num_source]: each frame's mean over the windows that contain it. Frames no
  window covers (only when the windows do not reach the end, as in a stream cut short) take
  the score of the nearest covered frame."""
  if len(windows) != len(scores):
    raise ValueError(f"{len(windows)} windows but {len(scores)} scores")
  total = np.zeros(num_source, np.float64)
  count = np.zeros(num_source, np.int64)
  for w, s in zip(windows, scores):
    stop = min(w.stop, num_source)
    total[w.start:stop] += float(s)
    count[w.start:stop] += 1
  covered = np.flatnonzero(count)
  if covered.size == 0:
    return np.zeros(num_source, np.float32)
  out = np.zeros(num_source, np.float64)
  out[covered] = total[covered] / count[covered]
  missing = np.flatnonzero(count == 0)
  if missing.size:
    nearest = np.searchsorted(covered, missing).clip(0, covered.size - 1)
    left = (nearest - 1).clip(0)
    pick = np.where(np.abs(covered[left] - missing) < np.abs(covered[nearest] - missing),
                    covered[left], covered[nearest])
    out[missing] = out[pick]
  return out.astype(np.float32)


def find_intervals(scores: np.ndarray, fps: float, threshold: float = 0.5,
                   min_gap_s: float = 0.0, min_len_s: float = 0.0) -> list[dict]:
  """[{"start_s", "end_s", "peak", "start_frame", "end_frame"}] of the runs of frames with
  score >= threshold (module docstring); end_frame is inclusive, end_s exclusive."""
  above = np.asarray(scores) >= threshold
  runs: list[list[int]] = []
  i, n = 0, above.size
  while i < n:
    if not above[i]:
      i += 1
      continue
    j = i
    while j + 1 < n and above[j + 1]:
      j += 1
    if runs and (i - runs[-1][1] - 1) / fps < min_gap_s:
      runs[-1][1] = j
    else:
      runs.append([i, j])
    i = j + 1
  out = []
  for a, b in runs:
    if (b - a + 1) / fps < min_len_s:
      continue
    out.append({"start_s": round(a / fps, 3), "end_s": round((b + 1) / fps, 3),
                "peak": round(float(np.max(scores[a:b + 1])), 4),
                "start_frame": int(a), "end_frame": int(b)})
  return out
