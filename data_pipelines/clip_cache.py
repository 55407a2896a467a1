"""Per-video extraction results cached on disk, so an interrupted job resumes where it stopped.

Each video's encoded frames/motion (the array half of a record, records.encode_visual) is
stored as one `.npz` shard in the cache folder, keyed by the video path, its size and mtime,
and the extraction options, so a changed file or changed options are recomputed and nothing
stale is reused. A failure is stored as a `.skip.json` with its reason (a corrupt file stays
corrupt until it changes, which changes the key). Writes go to a temporary name and are
renamed into place, so a killed worker never leaves a half-written shard behind. Both kinds
keep the video's real frame count (the shard's `num_source_frames`; `num_source_frames` in a
`.skip.json` refusing a short video), so a rerun served from the cache still names the videos
shorter than the frames asked for.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import uuid
from typing import Any

import numpy as np

from data_pipelines import motion as motion_lib
from data_pipelines import records
from data_pipelines import video as video_lib


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
  """How frames and motion are extracted (one TFDS config per distinct set)."""
  num_frames: int = 32
  size: int = 224
  motion_mode: str = "flow_mask"
  sampling: str = "uniform"
  seed: int = 0
  short_policy: str = "repeat"
  interpolation: str = "linear"

  def __post_init__(self):
    if self.motion_mode not in motion_lib.MOTION_MODES:
      raise ValueError(f"unknown motion mode {self.motion_mode!r}; expected one of "
                       f"{motion_lib.MOTION_MODES}")
    if self.sampling not in video_lib.SAMPLINGS:
      raise ValueError(f"unknown sampling {self.sampling!r}; expected {video_lib.SAMPLINGS}")
    if self.short_policy not in video_lib.SHORT_POLICIES:
      raise ValueError(f"unknown short_policy {self.short_policy!r}; expected "
                       f"{video_lib.SHORT_POLICIES}")
    if self.interpolation not in video_lib.INTERPOLATIONS:
      raise ValueError(f"unknown interpolation {self.interpolation!r}; expected one of "
                       f"{sorted(video_lib.INTERPOLATIONS)}")
    if self.num_frames < 1 or self.size < 8:
      raise ValueError(f"num_frames must be >= 1 and size >= 8, got {self.num_frames}, "
                       f"{self.size}")

  @property
  def config_name(self) -> str:
    """TFDS config name, e.g. 'flow_mask_32f_224px' (+ sampling when not uniform)."""
    name = f"{self.motion_mode}_{self.num_frames}f_{self.size}px"
    return name if self.sampling == "uniform" else f"{name}_{self.sampling}"

  def video_seed(self, video_path: str) -> int:
    """A per-video seed for the random samplings, stable across runs and machines."""
    digest = hashlib.sha256(f"{self.seed}:{video_path}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _file_signature(video_path: str) -> str:
  from etils import epath
  st = epath.Path(video_path).stat()
  return f"{st.length}:{getattr(st, 'mtime', '')}"


def cache_key(video_path: str, options: ExtractOptions) -> str:
  """Key of a video's shard; raises VideoError if the file is missing (nothing to key)."""
  video_lib.check_file(video_path)
  payload = json.dumps([str(video_path), _file_signature(video_path),
                        dataclasses.asdict(options)], sort_keys=True)
  return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _pack(blobs) -> tuple[np.ndarray, np.ndarray]:
  sizes = np.array([len(b) for b in blobs], np.int64)
  data = np.frombuffer(b"".join(bytes(b) for b in blobs), np.uint8)
  return data, sizes


def _unpack(data: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  ends = np.cumsum(sizes)
  raw = data.tobytes()
  return np.array([raw[e - s:e] for s, e in zip(sizes.tolist(), ends.tolist())], dtype=object)


def _write_atomic(path: str, data: bytes) -> None:
  from etils import epath
  if "://" in path:  # object stores write whole objects atomically
    epath.Path(path).write_bytes(data)
    return
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def shard_paths(cache_dir: str, key: str) -> tuple[str, str]:
  from etils import epath
  d = epath.Path(cache_dir)
  return os.fspath(d / f"{key}.npz"), os.fspath(d / f"{key}.skip.json")


def save_visual(path: str, visual: dict[str, Any]) -> None:
  jpeg_data, jpeg_sizes = _pack(visual["frames_jpeg"])
  png_data, png_sizes = _pack(visual["motion_png"])
  buf = io.BytesIO()
  np.savez(buf, jpeg_data=jpeg_data, jpeg_sizes=jpeg_sizes, png_data=png_data,
           png_sizes=png_sizes, timestamps=visual["timestamps"], indices=visual["indices"],
           fps=np.float32(visual["fps"]), num_source_frames=np.int32(visual["num_source_frames"]))
  _write_atomic(path, buf.getvalue())


def load_visual(path: str) -> dict[str, Any]:
  from etils import epath
  with np.load(io.BytesIO(epath.Path(path).read_bytes()), allow_pickle=False) as z:
    return {
        "frames_jpeg": _unpack(z["jpeg_data"], z["jpeg_sizes"]),
        "motion_png": _unpack(z["png_data"], z["png_sizes"]),
        "timestamps": z["timestamps"].astype(np.float32),
        "indices": z["indices"].astype(np.int32),
        "fps": np.float32(z["fps"]),
        "num_source_frames": np.int32(z["num_source_frames"]),
    }


def shard_num_source_frames(path: str) -> int:
  """The source video's real frame count stored in a shard, reading that member only (an
  .npz is a zip: its directory and one small entry, not the frames)."""
  from etils import epath
  with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as z:
    return int(z["num_source_frames"])


def extract_visual(video_path: str, options: ExtractOptions) -> dict[str, Any]:
  """Decode + motion + JPEG/PNG encoding of one video (no cache)."""
  clip = motion_lib.extract(video_path, num_frames=options.num_frames, size=options.size,
                            mode=options.motion_mode, sampling=options.sampling,
                            seed=options.video_seed(str(video_path)),
                            short_policy=options.short_policy,
                            interpolation=options.interpolation)
  return records.encode_visual(clip)


def cached_status(video_path: str, options: ExtractOptions, cache_dir: str) -> dict[str, Any]:
  """What the cache knows about a video, computing nothing.

  Returns {"status": "cached" | "skipped" | "unknown", "reason": str, "key": str | None,
  "num_source_frames": int | None} (the video's real frame count where known, so a rerun can
  still name short videos).
  """
  try:
    key = cache_key(video_path, options)
  except video_lib.VideoError as e:
    return {"status": "skipped", "reason": e.reason, "key": None, "num_source_frames": None}
  ok_path, skip_path = shard_paths(cache_dir, key)
  from etils import epath
  if epath.Path(ok_path).exists():
    return {"status": "cached", "reason": "", "key": key,
            "num_source_frames": shard_num_source_frames(ok_path)}
  if epath.Path(skip_path).exists():
    skip = json.loads(epath.Path(skip_path).read_text())
    return {"status": "skipped", "reason": skip["reason"], "key": key,
            "num_source_frames": skip.get("num_source_frames")}
  return {"status": "unknown", "reason": "not extracted", "key": key, "num_source_frames": None}


def process_video(video_path: str, options: ExtractOptions, cache_dir: str) -> dict[str, Any]:
  """Makes sure a video's shard exists; never raises for bad input.

  Returns {"status": "cached" | "done" | "skipped", "reason": str, "key": str | None,
  "num_source_frames": int | None} (as cached_status).
  """
  status = cached_status(video_path, options, cache_dir)
  if status["status"] != "unknown":
    return status
  key = status["key"]
  ok_path, skip_path = shard_paths(cache_dir, key)
  try:
    visual = extract_visual(video_path, options)
  except video_lib.VideoError as e:
    _write_atomic(skip_path, json.dumps({"video": str(video_path), "reason": e.reason,
                                         "num_source_frames": e.num_source_frames}).encode())
    return {"status": "skipped", "reason": e.reason, "key": key,
            "num_source_frames": e.num_source_frames}
  except Exception as e:  # noqa: BLE001 — one bad video must never stop the job
    reason = f"failed to decode: {type(e).__name__}: {e}"
    return {"status": "skipped", "reason": reason, "key": key, "num_source_frames": None}
  save_visual(ok_path, visual)
  return {"status": "done", "reason": "", "key": key,
          "num_source_frames": int(visual["num_source_frames"])}


def get_visual(video_path: str, options: ExtractOptions, cache_dir: str | None) -> dict[str, Any]:
  """The encoded visual part for one video: from its shard, else extracted (and cached when a
  cache_dir is given). Raises VideoError for bad input."""
  if cache_dir is None:
    try:
      return extract_visual(video_path, options)
    except video_lib.VideoError:
      raise
    except Exception as e:  # noqa: BLE001 — reported as bad input, like process_video does
      raise video_lib.VideoError(str(video_path),
                                 f"failed to decode: {type(e).__name__}: {e}") from e
  result = process_video(video_path, options, cache_dir)
  if result["status"] == "skipped":
    raise video_lib.VideoError(str(video_path), result["reason"])
  return load_visual(shard_paths(cache_dir, result["key"])[0])
