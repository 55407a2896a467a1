"""The record contract between pre-extraction and the loaders.

Both TFDS builders (`hawk_anomaly`, `video_captions`) write ArrayRecord examples with the
features of `features()`: frames as JPEG bytes, motion WEIGHTS as PNG bytes (one per frame),
timestamps/indices/fps/num_source_frames, and text. Records hold only arrays, numbers and
text (docs/model.md, "Data"). `decode_record` is the one place that turns a stored example back into
frames and motion frames (with motion.apply_weight, as extract() does), and `open_split` gives
random access to a written split without decoding anything, so decoding can happen in Grain
worker processes.

A data dir may be gs://: TFDS reads its metadata through etils.epath, and ArrayRecord reads
gs:// shards itself (its google-cloud-cpp client: application-default credentials, or an
emulator named by CLOUD_STORAGE_EMULATOR_ENDPOINT), one ranged read per record, without a local
copy. (ArrayRecord's writer, by contrast, opens local files only: data_pipelines/extract.py
writes a gs:// dataset locally first and uploads it.)
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import cv2
import numpy as np

from data_pipelines import motion as motion_lib

JPEG_QUALITY = 90
# PNG level 6: 5-10% smaller than level 3 for noisy soft weights at ~2x the (small) encode
# time; level 9 saves little more at 5x. Decode speed does not depend on the level.
PNG_COMPRESSION = 6

TEXT_FIELDS = ("video", "source", "description", "caption", "qa_json", "motion_mode")


def features():
  """The TFDS FeaturesDict both builders write (Tensor/Text only: no TensorFlow needed)."""
  import tensorflow_datasets as tfds
  f = tfds.features
  spec = {
      "frames_jpeg": f.Tensor(shape=(None,), dtype=np.object_),
      "motion_png": f.Tensor(shape=(None,), dtype=np.object_),
      "timestamps": f.Tensor(shape=(None,), dtype=np.float32),
      "indices": f.Tensor(shape=(None,), dtype=np.int32),
      "fps": f.Tensor(shape=(), dtype=np.float32),
      "num_source_frames": f.Tensor(shape=(), dtype=np.int32),
  }
  spec.update({name: f.Text() for name in TEXT_FIELDS})
  return f.FeaturesDict(spec)


def encode_jpeg(rgb: np.ndarray) -> bytes:
  ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
  if not ok:
    raise ValueError(f"JPEG encoding failed for a frame of shape {rgb.shape}")
  return buf.tobytes()


def encode_png(grey: np.ndarray) -> bytes:
  ok, buf = cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
  if not ok:
    raise ValueError(f"PNG encoding failed for a weight map of shape {grey.shape}")
  return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
  """RGB uint8 [H, W, 3] from JPEG bytes."""
  # IMREAD_COLOR_RGB: libjpeg writes RGB directly (same pixels as BGR + cvtColor, faster).
  rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
  if rgb is None:
    raise ValueError(f"undecodable JPEG frame ({len(data)} bytes)")
  return rgb


def decode_png(data: bytes) -> np.ndarray:
  """uint8 [H, W] from grey PNG bytes."""
  grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if grey is None or grey.ndim != 2:
    raise ValueError(f"undecodable or non-grey PNG weight map ({len(data)} bytes)")
  return grey


def encode_visual(clip: Mapping[str, Any]) -> dict[str, Any]:
  """The array part of a record from motion.extract()'s output (frames + weights + meta)."""
  frames, weights = clip["frames"], clip["weights"]
  return {
      "frames_jpeg": np.array([encode_jpeg(f) for f in frames], dtype=object),
      "motion_png": np.array([encode_png(w) for w in weights], dtype=object),
      "timestamps": np.asarray(clip["timestamps"], np.float32),
      "indices": np.asarray(clip["indices"], np.int32),
      "fps": np.float32(clip["fps"]),
      "num_source_frames": np.int32(clip["num_source_frames"]),
  }


def make_example(visual: Mapping[str, Any], *, video: str, source: str, motion_mode: str,
                 description: str = "", caption: str = "",
                 qa: list[dict[str, str]] | None = None) -> dict[str, Any]:
  """A full record: `visual` from encode_visual plus the text fields."""
  example = dict(visual)
  example.update(video=video, source=source, description=description, caption=caption,
                 qa_json=json.dumps(list(qa or []), ensure_ascii=False),
                 motion_mode=motion_mode)
  return example


def _text(value) -> str:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8")
  if isinstance(value, np.ndarray) and value.shape == ():
    return _text(value.item())
  return str(value)


def decode_record(example: Mapping[str, Any]) -> dict[str, Any]:
  """Frames, motion frames and text from one stored example (see the module docstring).

  Returns a dict with `frames` uint8 [T, S, S, 3] RGB, `motion` uint8 [T, S, S, 3]
  (= motion.apply_weight(frames, weights)), `weights` uint8 [T, S, S], `timestamps` float32
  [T], `indices` int32 [T], `fps`, `num_source_frames`, and `video`, `source`,
  `description`, `caption`, `motion_mode` (str) and `qa` (list of {"q", "a"} dicts).
  """
  missing = [k for k in ("frames_jpeg", "motion_png", "timestamps", "indices")
             if k not in example]
  if missing:
    raise KeyError(f"record lacks {missing}; has {sorted(example)}")
  video = _text(example.get("video", ""))
  jpegs, pngs = list(example["frames_jpeg"]), list(example["motion_png"])
  if not jpegs or len(jpegs) != len(pngs):
    raise ValueError(f"record {video!r}: {len(jpegs)} frames but {len(pngs)} motion maps")
  frames = np.stack([decode_jpeg(bytes(b)) for b in jpegs])
  weights = np.stack([decode_png(bytes(b)) for b in pngs])
  qa_text = _text(example.get("qa_json", "[]")) or "[]"
  try:
    qa = json.loads(qa_text)
  except json.JSONDecodeError as e:
    raise ValueError(f"record {video!r}: qa_json is not JSON ({e})") from e
  return {
      "frames": frames,
      "weights": weights,
      "motion": motion_lib.apply_weight(frames, weights),
      "timestamps": np.asarray(example["timestamps"], np.float32),
      "indices": np.asarray(example["indices"], np.int32),
      "fps": float(example.get("fps", 0.0)),
      "num_source_frames": int(example.get("num_source_frames", 0)),
      "video": video,
      "source": _text(example.get("source", "")),
      "description": _text(example.get("description", "")),
      "caption": _text(example.get("caption", "")),
      "motion_mode": _text(example.get("motion_mode", "")),
      "qa": qa,
  }


def find_dataset_dirs(data_dir: str) -> list[str]:
  """Directories under data_dir (itself included, up to 3 levels) holding a written dataset."""
  from etils import epath
  root = epath.Path(data_dir)
  if not root.exists():
    raise FileNotFoundError(f"{data_dir}: no such directory")
  found, frontier = [], [root]
  for _ in range(4):
    next_frontier = []
    for d in frontier:
      if (d / "dataset_info.json").exists():
        found.append(os.fspath(d))
        continue
      # Not into extract's shard cache (many files), TFDS temp/download dirs or dot dirs.
      next_frontier.extend(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(
          ("incomplete", "downloads", "cache", ".")))
    frontier = next_frontier
  return sorted(found)


def open_split(data_dir: str, split: str):
  """Random-access source (len, __getitem__ -> raw example dict) over one written split.

  `data_dir` is a dataset version directory (holding dataset_info.json) or a folder above one
  (e.g. extract's --out_dir), local or gs://; it must hold exactly one dataset. Nothing is
  decoded here: the source yields JPEG/PNG bytes for decode_record to decode in Grain workers.
  """
  import tensorflow_datasets as tfds
  dirs = find_dataset_dirs(data_dir)
  if not dirs:
    raise FileNotFoundError(f"{data_dir}: no written TFDS dataset (dataset_info.json) found")
  if len(dirs) > 1:
    raise ValueError(f"{data_dir}: holds several datasets {dirs}; pass one of them")
  builder = tfds.builder_from_directory(dirs[0])
  if split not in builder.info.splits:
    raise KeyError(f"{dirs[0]}: no split {split!r}; has {sorted(builder.info.splits)}")
  return builder.as_data_source(split)
