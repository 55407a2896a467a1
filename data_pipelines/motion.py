"""Motion frames between adjacent source frames (docs/model.md, "Motion").

Motion is always computed between source frames i-1 and i at the full frame rate, for each
sampled index i, on the frames after they were resized to size x size (as released HAWK does:
decord resizes on decode, then the flow runs on the grey versions of those frames).

A motion frame is the RGB frame times a per-pixel WEIGHT in [0, 1]. The weight is what the
records store (uint8 0..255, one PNG per frame) and `apply_weight` is the one function that
turns frame + weight into the motion frame, here and in the loaders, so the two agree exactly.

Modes (`MOTION_MODES`):
- `flow_mask` (released HAWK): Farneback flow on grey frames with the released parameters,
  magnitude via `cv2.cartToPolar`, weight = 255 where magnitude > 0.2 px, else 0.
- `flow_soft` (paper Eq. 4, normalised flow magnitude as a soft weight). Our normalisation:
  per frame, weight = magnitude / max(max(magnitude), 0.2), i.e. divided by the frame's largest
  magnitude, but never by less than the released 0.2 px threshold, so a still frame with
  sub-threshold jitter is not blown up to full weight. Stored as round(255 * weight).
- `frame_diff` (cheap, no flow): d = |grey_i - grey_{i-1}|, weight = d / max(max(d), 10) with the
  same per-frame normalisation; 10 grey levels is the floor, above typical compression noise.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from data_pipelines import video as video_lib

MOTION_MODES = ("flow_mask", "flow_soft", "frame_diff")

# Released HAWK: cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 10, 3, 5, 1.2, 0).
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=10, iterations=3, poly_n=5,
                        poly_sigma=1.2, flags=0)
# Released HAWK's `mag_threshold`: pixels whose flow magnitude exceeds it are "moving".
MAG_THRESHOLD = 0.2
# frame_diff normalisation floor, in grey levels.
DIFF_FLOOR = 10.0


def apply_weight(frames: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """Motion frames: `frames` uint8 [..., H, W, 3] times `weight` uint8 [..., H, W] / 255.

  Defined as (frames * weight + 127) // 255 (round to nearest; exact for 0/255 masks: frame
  or zero). Computed with cv2.multiply(scale=1/255), which rounds to nearest too and equals the
  integer formula on all 256 x 256 (frame, weight) pairs (f * w / 255 is never a tie), at
  about half the time of the uint16 numpy version; this runs in every loader worker.
  """
  frames = np.asarray(frames)
  weight = np.asarray(weight)
  if frames.dtype != np.uint8 or weight.dtype != np.uint8:
    raise TypeError(f"apply_weight wants uint8 frames and weights, got {frames.dtype} and "
                    f"{weight.dtype}")
  if frames.shape[:-1] != weight.shape or frames.shape[-1] != 3:
    raise ValueError(f"apply_weight: frames {frames.shape} and weight {weight.shape} do not "
                     f"match (want [..., H, W, 3] and [..., H, W])")
  if frames.size == 0:
    return frames.copy()
  rows = int(np.prod(frames.shape[:-2]))  # cv2 wants 2-D (or 3-D with <= 4 channels) arrays
  f2 = np.ascontiguousarray(frames).reshape(rows, -1)
  w2 = np.repeat(weight[..., None], 3, axis=-1).reshape(rows, -1)
  return cv2.multiply(f2, w2, scale=1.0 / 255.0).reshape(frames.shape)


def to_grey(rgb: np.ndarray) -> np.ndarray:
  """Grey frame as released: cv2.cvtColor(RGB -> GRAY) of the resized RGB frame."""
  return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def flow_magnitude(prev_grey: np.ndarray, cur_grey: np.ndarray) -> np.ndarray:
  """Farneback flow magnitude (float32 [H, W], pixels) with the released parameters."""
  flow = cv2.calcOpticalFlowFarneback(prev_grey, cur_grey, None, **FARNEBACK_PARAMS)
  mag, _ = cv2.cartToPolar(flow[..., 0], flow[..., 1])
  return mag


def _normalised_to_uint8(x: np.ndarray, floor: float) -> np.ndarray:
  x = x.astype(np.float32)
  denom = max(float(x.max()), floor)
  return np.clip(np.rint(x / denom * 255.0), 0, 255).astype(np.uint8)


def motion_weight(prev_rgb: np.ndarray, cur_rgb: np.ndarray, mode: str) -> np.ndarray:
  """uint8 [H, W] motion weight (0..255) between two resized RGB frames."""
  prev_grey, cur_grey = to_grey(prev_rgb), to_grey(cur_rgb)
  if mode == "flow_mask":
    mag = flow_magnitude(prev_grey, cur_grey)
    return np.where(mag > MAG_THRESHOLD, 255, 0).astype(np.uint8)
  if mode == "flow_soft":
    return _normalised_to_uint8(flow_magnitude(prev_grey, cur_grey), MAG_THRESHOLD)
  if mode == "frame_diff":
    diff = cv2.absdiff(cur_grey, prev_grey)
    return _normalised_to_uint8(diff, DIFF_FLOOR)
  raise ValueError(f"unknown motion mode {mode!r}; expected one of {MOTION_MODES}")


def motion_weights(prev_frames: np.ndarray, frames: np.ndarray, mode: str) -> np.ndarray:
  """uint8 [T, H, W] weights for pairs (prev_frames[t], frames[t])."""
  if mode not in MOTION_MODES:
    raise ValueError(f"unknown motion mode {mode!r}; expected one of {MOTION_MODES}")
  return np.stack([motion_weight(p, c, mode) for p, c in zip(prev_frames, frames)])


def extract(video_path: str, num_frames: int = 32, size: int = 224, mode: str = "flow_mask",
            sampling: str = "uniform", seed: int | None = None,
            short_policy: str = "repeat", interpolation: str = "linear") -> dict[str, Any]:
  """Decodes a video, samples frames and computes their motion.

  Args:
    video_path: local path (or any etils.epath path, e.g. gs://; copied locally to decode).
    num_frames: T, the number of sampled frames.
    size: frames are resized to size x size.
    mode: one of MOTION_MODES.
    sampling: "uniform" (released eval/stage-2), "headtail" (released stage 1) or "jitter".
    seed: RNG seed for the random samplings.
    short_policy: what to do with 2 <= num_source_frames < T; see video.sample_indices.
    interpolation: resize mode, one of video.INTERPOLATIONS (default cv2.INTER_LINEAR).

  Returns:
    dict with `frames` uint8 [T, size, size, 3] RGB, `weights` uint8 [T, size, size],
    `motion` = apply_weight(frames, weights), `indices` int32 [T] source frame indices,
    `timestamps` float32 [T] seconds (index / fps), `fps` and `num_source_frames`.

  Raises:
    video.VideoError naming the file and the reason for bad input.
  """
  if mode not in MOTION_MODES:
    raise ValueError(f"unknown motion mode {mode!r}; expected one of {MOTION_MODES}")
  clip = video_lib.read_clip(video_path, num_frames=num_frames, size=size, sampling=sampling,
                             seed=seed, short_policy=short_policy,
                             interpolation=interpolation)
  weights = motion_weights(clip["prev_frames"], clip["frames"], mode)
  return {
      "frames": clip["frames"],
      "weights": weights,
      "motion": apply_weight(clip["frames"], weights),
      "indices": clip["indices"],
      "timestamps": clip["timestamps"],
      "fps": clip["fps"],
      "num_source_frames": clip["num_source_frames"],
      "motion_mode": mode,
  }
