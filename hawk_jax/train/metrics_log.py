"""Metrics to TensorBoard event files (tensorboardX, no TensorFlow) and a JSON-lines log, in a
workdir that is a local folder or gs://.

On a local workdir both files are written in place. An object store has no append, and
tensorboardX writes its event files through local file handles (its own gs:// writer needs
google-cloud-storage's client and rewrites the file from memory), so for a gs:// workdir both are
written to a local staging folder and copied whole into the workdir through etils.epath: every
`sync_secs` seconds while training and on close. A resumed run first copies the workdir's
metrics.jsonl to the staging folder so its lines are kept. What a crash loses is at most the last
`sync_secs` of metrics; TensorBoard reads each uploaded event file as it stands.

TensorBoard tags are grouped (`tensorboard_tag`): `perf/` for throughput and utilisation
(samples_per_s, tokens_per_s, step_gflop, mfu), `eval/` for the held-out metrics (`eval_loss`
-> `eval/loss`), `train/` for everything else (loss terms, learning_rate, grad_norm, skipped,
skip_streak, records_skipped); a key that already holds a `/` is its own tag. metrics.jsonl
keeps the flat keys (`{"step": 10, "loss": ..., "mfu": ...}`), which other code reads. Text
(`write_text`: the config, generated samples) and images (`write_images`: a frame + motion grid)
go to TensorBoard only; images are encoded as PNG with OpenCV, so nothing needs PIL.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Sequence

import numpy as np
from etils import epath

from hawk_jax.tensor_files import is_remote

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

PERF_KEYS = frozenset({"samples_per_s", "tokens_per_s", "step_gflop", "mfu"})
EVAL_PREFIX = "eval_"
IMAGE_GAP = 2  # px between the tiles of write_images' grid


def tensorboard_tag(key: str) -> str:
  """The TensorBoard tag of a metrics key: perf/<key>, eval/<key without eval_>, train/<key>;
  a key with a '/' is kept as it is."""
  if "/" in key:
    return key
  if key in PERF_KEYS:
    return f"perf/{key}"
  if key.startswith(EVAL_PREFIX) and len(key) > len(EVAL_PREFIX):
    return f"eval/{key[len(EVAL_PREFIX):]}"
  return f"train/{key}"


def image_grid(images) -> np.ndarray:
  """uint8 RGB [H, W, 3] from one image [H, W, C], a row [N, H, W, C] or rows [R, N, H, W, C]
  (C = 1 or 3; a list of equal images works too), the tiles IMAGE_GAP px apart on white.
  uint8 values are kept; float values are taken as 0..1 and clipped."""
  arr = np.asarray(images)
  if arr.ndim not in (3, 4, 5) or arr.shape[-1] not in (1, 3):
    raise ValueError(f"write_images wants [H, W, C], [N, H, W, C] or [R, N, H, W, C] with C "
                     f"1 or 3; got shape {arr.shape}")
  if arr.dtype != np.uint8:
    arr = (np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(
        np.uint8)
  if arr.shape[-1] == 1:
    arr = np.repeat(arr, 3, axis=-1)
  arr = arr.reshape((1,) * (5 - arr.ndim) + arr.shape)
  rows, cols, h, w, _ = arr.shape
  grid = np.full((rows * h + (rows - 1) * IMAGE_GAP, cols * w + (cols - 1) * IMAGE_GAP, 3), 255,
                 np.uint8)
  for r in range(rows):
    for c in range(cols):
      y, x = r * (h + IMAGE_GAP), c * (w + IMAGE_GAP)
      grid[y:y + h, x:x + w] = arr[r, c]
  return grid


class MetricsWriter:
  def __init__(self, workdir: str, enabled: bool = True, sync_secs: float = 30.0):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    self._remote = epath.Path(workdir) if enabled and is_remote(workdir) else None
    self._sync_secs = sync_secs
    self._last_sync = time.monotonic()
    self._synced: dict[str, tuple[int, int]] = {}  # local file -> (size, mtime_ns) uploaded
    if not enabled:
      return
    if self._remote is not None:
      self._local = tempfile.mkdtemp(prefix="hawk_metrics_")
      remote_jsonl = self._remote / METRICS_FILE
      if remote_jsonl.exists():  # a resumed run: keep the lines written before
        epath.Path(remote_jsonl).copy(os.path.join(self._local, METRICS_FILE))
    else:
      self._local = os.fspath(workdir)
    from tensorboardX import SummaryWriter
    # Event files are named by the second and the host; on gs:// a run resumed within the same
    # second would replace the earlier file instead of appending to it, so add a random part.
    suffix = f".{uuid.uuid4().hex[:8]}" if self._remote is not None else ""
    self._tb = SummaryWriter(os.path.join(self._local, TENSORBOARD_DIR), filename_suffix=suffix)
    self._jsonl = open(os.path.join(self._local, METRICS_FILE), "a", encoding="utf-8")

  def write(self, step: int, metrics: dict) -> None:
    """Scalars: one metrics.jsonl line with the flat keys, and TensorBoard scalars under the
    grouped tags (tensorboard_tag)."""
    if not self.enabled:
      return
    for k, v in metrics.items():
      self._tb.add_scalar(tensorboard_tag(k), float(v), step)
    self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}})
                      + "\n")
    self._jsonl.flush()
    self._maybe_sync()

  def write_text(self, step: int, tag: str, text: str, *, preformatted: bool = False) -> None:
    """Text under `tag` in TensorBoard's Text tab (TensorBoard renders it as Markdown;
    `preformatted` shows it verbatim, as a code block: configs, JSON). Not in metrics.jsonl."""
    if not self.enabled:
      return
    if preformatted:
      text = "\n".join("    " + line for line in str(text).splitlines())
    self._tb.add_text(tag, str(text), step)
    self._maybe_sync()

  def write_images(self, step: int, tag: str,
                   images: np.ndarray | Sequence[np.ndarray]) -> None:
    """One image under `tag` in TensorBoard's Images tab: `images` is an image [H, W, C], a row
    of them [N, H, W, C] or rows [R, N, H, W, C] (e.g. np.stack([frames, motion]) of one clip,
    [2, T, H, W, 3]), C = 1 or 3, uint8 or float in 0..1; tiled into one grid (image_grid).
    Not in metrics.jsonl."""
    if not self.enabled:
      return
    import cv2
    from tensorboardX.proto.summary_pb2 import Summary
    grid = image_grid(images)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
      raise ValueError(f"could not encode the {tag!r} image grid {grid.shape} as PNG")
    image = Summary.Image(height=grid.shape[0], width=grid.shape[1], colorspace=3,
                          encoded_image_string=png.tobytes())
    # tensorboardX's add_image would encode with PIL, which is not a dependency.
    self._tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]),
                                            step)
    self._maybe_sync()

  def _maybe_sync(self) -> None:
    if self._remote is not None and time.monotonic() - self._last_sync >= self._sync_secs:
      self.flush()

  def flush(self) -> None:
    """Writes what is buffered; on gs://, uploads the files that changed since the last time."""
    if not self.enabled:
      return
    self._tb.flush()
    self._jsonl.flush()
    if self._remote is not None:
      self._upload()

  def _upload(self) -> None:
    self._last_sync = time.monotonic()
    files = [(os.path.join(self._local, METRICS_FILE), self._remote / METRICS_FILE)]
    tb_local = os.path.join(self._local, TENSORBOARD_DIR)
    if os.path.isdir(tb_local):
      (self._remote / TENSORBOARD_DIR).mkdir(parents=True, exist_ok=True)
      files += [(os.path.join(tb_local, name), self._remote / TENSORBOARD_DIR / name)
                for name in sorted(os.listdir(tb_local))]
    for local, remote in files:
      st = os.stat(local)
      signature = (st.st_size, st.st_mtime_ns)
      if self._synced.get(local) != signature:
        epath.Path(local).copy(remote, overwrite=True)
        self._synced[local] = signature

  def close(self) -> None:
    if not self.enabled:
      return
    self._tb.close()
    self._jsonl.close()
    if self._remote is not None:
      self._upload()
      shutil.rmtree(self._local, ignore_errors=True)
