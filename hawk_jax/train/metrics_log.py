"""Metrics to TensorBoard event files (tensorboardX, no TensorFlow) and a JSON-lines log."""
from __future__ import annotations

import json
import os


class MetricsWriter:
  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), step)
    self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}})
                      + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
