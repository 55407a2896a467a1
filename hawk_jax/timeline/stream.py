"""Live scoring: windows scored as their frames arrive, one JSON line each.

Each line: {"window", "start_s", "end_s", "score", "yes_no_mass", "latency_s", "behind_s",
"description"?}.
- `latency_s`: from the moment the window's last frame was read to the moment its score was
  known.
- `behind_s`: how far the scoring trails the stream's own clock: wall time since the stream's
  first frame minus the media time of the window's end. A source played in real time that the
  model keeps up with gives about `latency_s`; a model slower than real time gives a number that
  grows window after window (frames then wait in the source's buffer before they are read).
  A file that already exists reads faster than real time and gives 0.

The summary line at the end says whether scoring kept up with real time, and if not by how much
it fell behind and at what fraction of real-time speed it ran.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from typing import TextIO

from hawk_jax.timeline import frames as frames_lib
from hawk_jax.timeline import windows as windows_lib
from hawk_jax.timeline.run import ScoredWindow, TimelineOptions, score_windows
from hawk_jax.timeline.scoring import AnomalyScorer


def open_source(source: str, *, idle_s: float, fps: float | None):
  """A growing file for a path (it may still be being written), else an OpenCV capture (a URL
  or a device index)."""
  if "://" in source or source.isdigit():
    return frames_lib.CaptureSource(source, idle_s=idle_s, fps=fps)
  return frames_lib.GrowingFileSource(source, idle_s=idle_s, fps=fps)


def run_stream(scorer: AnomalyScorer, source, options: TimelineOptions, generation=None,
               out: TextIO | None = None) -> dict:
  """Scores `source` until it ends; prints one JSON line per window to `out`; returns the
  summary (also the last stderr line)."""
  engine = scorer.engine
  out = sys.stdout if out is None else out
  fps = float(source.fps)
  windows = windows_lib.stream_windows(fps, options.window_s, options.stride_s,
                                       engine.num_frames)
  start: list[float] = []

  class _Clock:  # the stream's clock starts when its first frame is read
    def __init__(self, inner):
      self.inner, self.path, self.num_frames = inner, inner.path, None

    def frames(self, wanted):
      for item in self.inner.frames(wanted):
        if not start:
          start.append(item[2] - 1.0 / fps)
        yield item

  latencies, behind = [], []

  def emit(w: ScoredWindow) -> None:
    lag = max(0.0, (w.scored - start[0]) - w.window.end_s)
    line = {"window": w.window.index, **w.as_json(),
            "latency_s": round(w.scored - w.arrived, 4), "behind_s": round(lag, 3)}
    latencies.append(w.scored - w.arrived)
    behind.append(lag)
    out.write(json.dumps(line) + "\n")
    out.flush()

  t_begin = time.monotonic()
  assembled = frames_lib.assemble(_Clock(source), windows, engine.image_size)
  scored = list(score_windows(scorer, assembled, options, generation, batch_size=scorer.rows,
                              on_window=emit))
  wall = time.monotonic() - (start[0] if start else t_begin)
  media = scored[-1].window.end_s if scored else 0.0
  summary = {"windows": len(scored), "media_s": round(media, 3), "wall_s": round(wall, 3),
             "median_latency_s": round(statistics.median(latencies), 4) if latencies else None,
             "max_latency_s": round(max(latencies), 4) if latencies else None,
             "final_behind_s": round(behind[-1], 3) if behind else None}
  return summary


def summary_line(summary: dict, lag_tolerance_s: float) -> str:
  if not summary["windows"]:
    return "stream: no complete window (the stream ended before one window of frames)"
  head = (f"stream: {summary['windows']} windows, {summary['media_s']:.1f} s of video in "
          f"{summary['wall_s']:.1f} s; latency median {summary['median_latency_s']:.3f} s, "
          f"max {summary['max_latency_s']:.3f} s")
  if summary["final_behind_s"] <= lag_tolerance_s:
    return head + "; kept up with real time"
  speed = summary["media_s"] / max(summary["wall_s"], 1e-9)
  return (head + f"; FELL BEHIND real time by {summary['final_behind_s']:.1f} s at the end "
          f"(scoring ran at {speed:.2f}x real time: try a larger --stride_s, a smaller model or "
          f"a faster device)")
