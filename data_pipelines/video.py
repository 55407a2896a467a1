"""Video decoding and frame sampling (docs/model.md, "Motion" and "Data").

Sampling follows released HAWK (`hawk/processors/video_processor.py`):
- `uniform` (stage 2 and eval): `np.arange(0, n, n / T).astype(int)`;
- `headtail` (stage 1, WebVid): T/2 sorted random indices from the first half of the video and
  T/2 from the second half;
- `jitter` (ours, for training): one random index inside each of T equal segments.
Motion needs the source frame before each sampled one, so index 0 becomes 1 (released
`compute_optical_flow` sets `frame_list[0] = 1`; we move every 0, which only differs when
indices repeat). Appearance and motion use the same indices (released samples them separately;
docs/model.md, "Motion" asks for the same ones). Timestamps are index / fps seconds.

Short videos: fewer than 2 source frames is bad input (no pair for motion). For
2 <= n < T, `short_policy` decides:
- `repeat` (default): the uniform formula with T (not min(T, n)) gives T indices with repeats,
  so every record has T frames and batches stack;
- `released`: released `load_video` clamps T to n and returns n frames;
- `skip`: bad input, as the released WebVid loader drops clips that do not give T frames.
(headtail with n < T draws with replacement, jitter repeats naturally.)

Frames are decoded with OpenCV, converted to RGB and resized to size x size with
cv2.INTER_LINEAR (released decord resizes inside ffmpeg's scaler; `interpolation` picks
another cv2 mode). Only the needed frames (each sampled i and its i-1) are converted and
resized; the others are only grabbed, since inter-coded frames must be decoded in order anyway.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import cv2
import numpy as np

SAMPLINGS = ("uniform", "headtail", "jitter")
SHORT_POLICIES = ("repeat", "released", "skip")
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}


class VideoError(ValueError):
  """Bad video input; the message names the file and what is wrong with it. A video refused
  for its length carries `num_source_frames` (else None), so the extraction summary can name
  it as a short video."""

  def __init__(self, path: str, reason: str, num_source_frames: int | None = None):
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason
    self.num_source_frames = num_source_frames


def released_uniform_indices(num_source: int, num_frames: int) -> list[int]:
  """Released HAWK's motion indices, verbatim: clamp T to n, arange formula, first -> 1."""
  n_frms = min(num_frames, num_source)
  indices = np.arange(0, num_source, num_source / n_frms).astype(int).tolist()
  indices[0] = 1
  return indices


def uniform_indices(num_source: int, num_frames: int) -> np.ndarray:
  """The released uniform formula for T frames (repeats when n < T), before 0 -> 1."""
  # For n, T up to 20000 x 64 the float arange has exactly T entries; [:T] guards the rest.
  return np.arange(0, num_source, num_source / num_frames).astype(np.int64)[:num_frames]


def headtail_indices(num_source: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
  """Released headtail: sorted random half from each half of the video (with replacement
  when a half is shorter than what it must give). T odd: the tail gives the extra frame."""
  half = num_source // 2
  n_head, n_tail = num_frames // 2, num_frames - num_frames // 2
  head_range, tail_range = np.arange(0, half), np.arange(half, num_source)
  head = np.sort(rng.choice(head_range, n_head, replace=n_head > len(head_range)))
  tail = np.sort(rng.choice(tail_range, n_tail, replace=n_tail > len(tail_range)))
  return np.concatenate([head, tail]).astype(np.int64)


def jitter_indices(num_source: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
  """One uniformly random index in each of T equal segments of [0, n)."""
  starts = np.floor(np.arange(num_frames) * num_source / num_frames).astype(np.int64)
  ends = np.floor(np.arange(1, num_frames + 1) * num_source / num_frames).astype(np.int64)
  ends = np.maximum(ends, starts + 1)
  return starts + (rng.random(num_frames) * (ends - starts)).astype(np.int64)


def sample_indices(num_source: int, num_frames: int, sampling: str = "uniform",
                   rng: np.random.Generator | None = None,
                   short_policy: str = "repeat") -> np.ndarray:
  """Source frame indices (int64, all >= 1) to sample; see the module docstring.

  Raises ValueError (with the reason) for videos that cannot be sampled.
  """
  if sampling not in SAMPLINGS:
    raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLINGS}")
  if short_policy not in SHORT_POLICIES:
    raise ValueError(f"unknown short_policy {short_policy!r}; expected one of {SHORT_POLICIES}")
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if num_source < 2:
    raise ValueError(f"too few frames: {num_source} source frame(s), motion needs at least 2")
  if num_source < num_frames:
    if short_policy == "skip":
      raise ValueError(f"too few frames: {num_source} source frames < {num_frames} to sample "
                       f"(short_policy='skip')")
    if short_policy == "released":
      num_frames = num_source
  rng = rng if rng is not None else np.random.default_rng()
  if sampling == "uniform":
    indices = uniform_indices(num_source, num_frames)
  elif sampling == "headtail":
    indices = headtail_indices(num_source, num_frames, rng)
  else:
    indices = jitter_indices(num_source, num_frames, rng)
  return np.maximum(indices, 1)


def _is_remote(path: str) -> bool:
  return "://" in str(path)


def _local_copy(path: str) -> tuple[str, str | None]:
  """(local path, temp dir to delete) — remote files (gs://...) are copied to a temp dir."""
  if not _is_remote(path):
    return os.fspath(path), None
  from etils import epath
  tmp = tempfile.mkdtemp(prefix="hawk_video_")
  local = os.path.join(tmp, os.path.basename(str(path)) or "video")
  with epath.Path(path).open("rb") as src, open(local, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 22)
  return local, tmp


def check_file(path: str) -> None:
  """Raises VideoError for a missing or empty file."""
  from etils import epath
  p = epath.Path(path)
  if not p.exists():
    raise VideoError(str(path), "missing file")
  if p.is_dir():
    raise VideoError(str(path), "is a directory, not a video file")
  if p.stat().length == 0:
    raise VideoError(str(path), "empty file (0 bytes)")


def _count_frames(local: str) -> int:
  cap = cv2.VideoCapture(local)
  count = 0
  while cap.grab():
    count += 1
  cap.release()
  return count


def read_clip(path: str, num_frames: int = 32, size: int = 224, sampling: str = "uniform",
              seed: int | None = None, short_policy: str = "repeat",
              interpolation: str = "linear") -> dict[str, Any]:
  """Decodes the sampled frames (and each one's predecessor) of a video, resized.

  Returns a dict: `frames` and `prev_frames` uint8 [T, size, size, 3] RGB (frame i and i-1),
  `indices` int32 [T], `timestamps` float32 [T] (index / fps), `fps` float,
  `num_source_frames` int. Raises VideoError naming the file and what is wrong.
  """
  path = str(path)
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"unknown interpolation {interpolation!r}; expected {list(INTERPOLATIONS)}")
  check_file(path)
  local, tmp = _local_copy(path)
  try:
    cap = cv2.VideoCapture(local)
    if not cap.isOpened():
      raise VideoError(path, "unreadable: OpenCV cannot open it (corrupt or not a video)")
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    num_source = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if num_source <= 0:  # some containers carry no frame count: count by decoding
      num_source = _count_frames(local)
    if not np.isfinite(fps) or fps <= 0:
      raise VideoError(path, f"no valid frame rate in the container (fps={fps})")
    try:
      indices = sample_indices(num_source, num_frames, sampling, np.random.default_rng(seed),
                               short_policy)
    except ValueError as e:
      raise VideoError(path, str(e), num_source_frames=num_source) from None
    needed = set(indices.tolist()) | set((indices - 1).tolist())
    last = max(needed)
    decoded: dict[int, np.ndarray] = {}
    resize_mode = INTERPOLATIONS[interpolation]
    for i in range(last + 1):
      if not cap.grab():
        raise VideoError(path, f"truncated or corrupt: the container reports {num_source} "
                               f"frames but decoding stopped at frame {i} (needed up to {last})")
      if i in needed:
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
          raise VideoError(path, f"corrupt: frame {i} could not be decoded")
        small = cv2.resize(bgr, (size, size), interpolation=resize_mode)
        decoded[i] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    cap.release()
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  return {
      "frames": np.stack([decoded[i] for i in indices.tolist()]),
      "prev_frames": np.stack([decoded[i - 1] for i in indices.tolist()]),
      "indices": indices.astype(np.int32),
      "timestamps": (indices / fps).astype(np.float32),
      "fps": fps,
      "num_source_frames": num_source,
  }
