"""Metrics to TensorBoard event files (tensorboardX, no TensorFlow) and a JSON-lines log, in a
workdir that is a local folder or gs://.

On a local workdir both files are written in place. An object store has no append, and
tensorboardX writes its event files through local file handles (its own gs:// writer needs
google-cloud-storage's client and rewrites the file from memory), so for a gs:// workdir both are
written to a local staging folder and copied whole into the workdir through etils.epath: every
`sync_secs` seconds while training and on close. A resumed run first copies the workdir's
metrics.jsonl to the staging folder so its lines are kept. What a crash loses is at most the last
`sync_secs` of metrics; TensorBoard reads each uploaded event file as it stands.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid

from etils import epath

from hawk_jax.tensor_files import is_remote

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


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
    if not self.enabled:
      return
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), step)
    self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}})
                      + "\n")
    self._jsonl.flush()
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
