"""A long video's timeline: windows -> scores (batched) -> frame scores -> intervals.

`video_timeline` decodes the file once (hawk_jax/timeline/frames.py), scores its windows in
batches as they are assembled, optionally describes the windows whose score is at least
`describe_threshold`, and returns the `timeline.json` object:

  {"video", "fps", "num_frames", "duration_s", "window_s", "stride_s", "question",
   "windows": [{"start_s", "end_s", "score", "yes_no_mass", "description"?}],
   "frame_scores": [one per source frame], "threshold",
   "intervals": [{"start_s", "end_s", "peak", "start_frame", "end_frame"}]}

`stream_windows_scored` is the live counterpart (hawk_jax/timeline/stream.py prints it).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterable, Iterator

import numpy as np

from hawk_jax.infer.engine import DEFAULT_QUESTION
from hawk_jax.timeline import frames as frames_lib
from hawk_jax.timeline import windows as windows_lib
from hawk_jax.timeline.scoring import AnomalyScorer, motion_frames

# Thumbnails in the picture's strip.
NUM_THUMBNAILS = 12


@dataclasses.dataclass
class TimelineOptions:
  window_s: float = 4.0
  stride_s: float = 1.0
  threshold: float = 0.5          # frame score at or above it is anomalous (intervals)
  min_gap_s: float = 0.0          # intervals closer than this are merged
  min_len_s: float = 0.0          # intervals shorter than this are dropped
  describe: bool = False
  describe_threshold: float = 0.5
  describe_question: str = ""     # "" -> the engine's default description question


@dataclasses.dataclass
class ScoredWindow:
  window: windows_lib.Window
  score: float
  yes_no_mass: float
  arrived: float                   # time.monotonic() when its last frame arrived
  scored: float                    # time.monotonic() when its score was known
  description: str | None = None

  def as_json(self) -> dict:
    out = {"start_s": round(self.window.start_s, 3), "end_s": round(self.window.end_s, 3),
           "score": round(float(self.score), 5),
           "yes_no_mass": round(float(self.yes_no_mass), 5)}
    if self.description is not None:
      out["description"] = self.description
    return out


def _batches(items: Iterable, size: int) -> Iterator[list]:
  batch = []
  for item in items:
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def score_windows(scorer: AnomalyScorer, assembled: Iterable[frames_lib.WindowFrames],
                  options: TimelineOptions, generation=None, batch_size: int | None = None,
                  on_window: Callable[[ScoredWindow], None] | None = None
                  ) -> Iterator[ScoredWindow]:
  """Scores assembled windows `batch_size` at a time (default: the scorer's rows)."""
  engine = scorer.engine
  question = options.describe_question or DEFAULT_QUESTION
  for batch in _batches(assembled, batch_size or scorer.rows):
    motion = np.stack([motion_frames(b.frames, b.prev_frames, engine.motion_mode)
                       for b in batch])
    frames = np.stack([b.frames for b in batch])
    visual = scorer.visual(frames, motion)
    stamps = [b.window.timestamps for b in batch]
    scores, mass = scorer.score(visual, stamps)
    now = time.monotonic()
    out = [ScoredWindow(b.window, float(s), float(m), b.arrived, now)
           for b, s, m in zip(batch, scores, mass)]
    if options.describe:
      rows = [i for i, s in enumerate(scores) if s >= options.describe_threshold]
      for i, text in zip(rows, scorer.describe(visual, rows, stamps, generation, question)):
        out[i].description = text
    for item in out:
      if on_window is not None:
        on_window(item)
      yield item


def video_timeline(scorer: AnomalyScorer, path: str, options: TimelineOptions,
                   generation=None, on_window: Callable[[ScoredWindow], None] | None = None,
                   on_plan: Callable[[int], None] | None = None) -> tuple[dict, list]:
  """(timeline.json object, thumbnails [(frame index, RGB)]) of one video file."""
  engine = scorer.engine
  source = frames_lib.FileSource(path)
  try:
    plan = windows_lib.plan_windows(source.num_frames, source.fps, options.window_s,
                                    options.stride_s, engine.num_frames)
    if on_plan is not None:
      on_plan(len(plan))
    thumbs = frames_lib.Thumbnails(math.ceil(source.num_frames / NUM_THUMBNAILS))
    assembled = frames_lib.assemble(source, plan, engine.image_size, thumbs)
    scored = list(score_windows(scorer, assembled, options, generation, on_window=on_window))
  finally:
    source.close()
  return timeline_json(path, source.fps, source.num_frames, scored, options,
                       scorer.question), thumbs.frames


def timeline_json(path: str, fps: float, num_frames: int, scored: list[ScoredWindow],
                  options: TimelineOptions, question: str) -> dict:
  scores = [w.score for w in scored]
  per_frame = windows_lib.frame_scores([w.window for w in scored], scores, num_frames)
  return {
      "video": str(path), "fps": fps, "num_frames": int(num_frames),
      "duration_s": round(num_frames / fps, 3),
      "window_s": options.window_s, "stride_s": options.stride_s, "question": question,
      "windows": [w.as_json() for w in scored],
      "frame_scores": [round(float(s), 5) for s in per_frame],
      "threshold": options.threshold,
      "intervals": windows_lib.find_intervals(per_frame, fps, options.threshold,
                                              options.min_gap_s, options.min_len_s),
  }
