"""Frame sources (a file, a growing file, an OpenCV capture) and the window assembler.

A long video is decoded ONCE, in order. Every frame is grabbed (inter-coded frames must be
decoded in order anyway) but only the frames a pending window needs -- each sampled frame and
its predecessor -- and the thumbnails are converted and resized. A window is handed out as soon
as its last needed frame is read, and frames no pending window needs are dropped, so memory is
bounded by the windows in flight (about window_s / stride_s of them, 2T frames each) and not by
the video's length: an hour of video costs what a minute does.

Sources yield (source frame index, BGR frame or None when not wanted, arrival time):
- `FileSource`: a complete file (local or gs://, copied locally first); frame count from the
  container (counted by decoding when it has none).
- `GrowingFileSource`: a file another program is still writing (a recorder's .ts/.mkv/.avi).
  OpenCV stops at the end of what is written and does not see later data on the same handle,
  so each poll re-opens the file and skips the frames already read (cost: one re-decode of the
  file so far per poll -- for hours-long feeds prefer a capture URL). The newest frame of a poll
  is held back until a later one is readable, because it may be only partly written; the file
  has ended when it has not grown for `idle_s` seconds.
- `CaptureSource`: anything cv2.VideoCapture opens live (an RTSP/HTTP URL, a device index).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from data_pipelines import video as video_lib
from hawk_jax.timeline.windows import Window

Wanted = Callable[[int], bool]


def _quiet_ffmpeg() -> None:
  # FFmpeg's own log (e.g. "moov atom not found" while a file is written) is noise here;
  # OPENCV_FFMPEG_LOGLEVEL=32 shows it again. Read when OpenCV first opens a file.
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class FileSource:
  """A complete video file; `num_frames` and `fps` are known before decoding."""

  def __init__(self, path: str):
    _quiet_ffmpeg()
    self.path = str(path)
    video_lib.check_file(self.path)
    self._local, self._tmp = video_lib._local_copy(self.path)
    cap = cv2.VideoCapture(self._local)
    if not cap.isOpened():
      raise video_lib.VideoError(self.path, "unreadable: OpenCV cannot open it (corrupt or not "
                                            "a video)")
    self.fps = float(cap.get(cv2.CAP_PROP_FPS))
    self.num_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    if self.num_frames <= 0:
      self.num_frames = video_lib._count_frames(self._local)
    if not np.isfinite(self.fps) or self.fps <= 0:
      raise video_lib.VideoError(self.path, f"no valid frame rate in the container "
                                            f"(fps={self.fps})")
    if self.num_frames < 2:
      raise video_lib.VideoError(self.path, f"too few frames: {self.num_frames} source "
                                            f"frame(s), motion needs at least 2")

  def frames(self, wanted: Wanted) -> Iterator[tuple[int, np.ndarray | None, float]]:
    cap = cv2.VideoCapture(self._local)
    try:
      for i in range(self.num_frames):
        if not cap.grab():
          raise video_lib.VideoError(self.path, f"truncated or corrupt: the container reports "
                                                f"{self.num_frames} frames but decoding "
                                                f"stopped at frame {i}")
        bgr = None
        if wanted(i):
          ok, bgr = cap.retrieve()
          if not ok or bgr is None:
            raise video_lib.VideoError(self.path, f"corrupt: frame {i} could not be decoded")
        yield i, bgr, time.monotonic()
    finally:
      cap.release()

  def close(self) -> None:
    if self._tmp is not None:
      import shutil
      shutil.rmtree(self._tmp, ignore_errors=True)
      self._tmp = None


class GrowingFileSource:
  """A file still being written (module docstring). `fps` is read once the file opens;
  `num_frames` is None (unknown until it ends)."""
  num_frames = None

  def __init__(self, path: str, *, idle_s: float = 5.0, poll_s: float = 0.1,
               fps: float | None = None):
    _quiet_ffmpeg()
    self.path = str(path)
    self.idle_s = float(idle_s)
    self.poll_s = float(poll_s)
    self.fps = fps
    deadline = time.monotonic() + self.idle_s
    while True:  # wait for the writer's first frames
      cap = cv2.VideoCapture(self.path) if os.path.exists(self.path) else None
      if cap is not None and cap.isOpened() and cap.grab():
        if self.fps is None:
          self.fps = float(cap.get(cv2.CAP_PROP_FPS))
        cap.release()
        break
      if cap is not None:
        cap.release()
      if time.monotonic() > deadline:
        raise video_lib.VideoError(self.path, f"no readable frame within {self.idle_s:g} s "
                                              f"(--idle_s): missing, empty or not a video")
      time.sleep(self.poll_s)
    if not (self.fps and np.isfinite(self.fps) and self.fps > 0):
      raise video_lib.VideoError(self.path, f"no valid frame rate in the stream "
                                            f"(fps={self.fps}); pass --fps")

  def frames(self, wanted: Wanted) -> Iterator[tuple[int, np.ndarray | None, float]]:
    consumed = 0
    first_seen: dict[int, float] = {}
    last_size, last_growth = -1, time.monotonic()
    while True:
      size = os.path.getsize(self.path) if os.path.exists(self.path) else -1
      now = time.monotonic()
      if size != last_size:
        last_size, last_growth = size, now
      ended = now - last_growth > self.idle_s
      cap = cv2.VideoCapture(self.path)
      held = None
      try:
        skipped = 0
        while skipped < consumed and cap.grab():
          skipped += 1
        i = consumed
        # (a file that now holds fewer frames than were read -- rewritten -- gives nothing)
        while skipped == consumed and cap.grab():
          first_seen.setdefault(i, time.monotonic())
          if held is not None:
            yield held
            first_seen.pop(held[0], None)
            consumed += 1
            skipped += 1
          bgr = None
          if wanted(i):
            ok, bgr = cap.retrieve()
            bgr = bgr if ok else None
          held = (i, bgr, first_seen[i])
          i += 1
      finally:
        cap.release()
      if ended:
        if held is not None:
          yield held
        return
      time.sleep(self.poll_s)

  def close(self) -> None:
    pass


class CaptureSource:
  """A live OpenCV capture: a URL (rtsp://, http://) or a device index ("0"). Ends after
  `idle_s` seconds without a frame."""
  num_frames = None

  def __init__(self, source: str, *, idle_s: float = 5.0, fps: float | None = None):
    _quiet_ffmpeg()
    self.path = str(source)
    self._cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not self._cap.isOpened():
      raise video_lib.VideoError(self.path, "OpenCV cannot open this capture")
    self.idle_s = float(idle_s)
    self.fps = fps or float(self._cap.get(cv2.CAP_PROP_FPS))
    if not (self.fps and np.isfinite(self.fps) and self.fps > 0):
      raise video_lib.VideoError(self.path, f"the capture reports no frame rate "
                                            f"(fps={self.fps}); pass --fps")

  def frames(self, wanted: Wanted) -> Iterator[tuple[int, np.ndarray | None, float]]:
    i, last = 0, time.monotonic()
    while True:
      if not self._cap.grab():
        if time.monotonic() - last > self.idle_s:
          return
        time.sleep(0.01)
        continue
      last = time.monotonic()
      bgr = None
      if wanted(i):
        ok, bgr = self._cap.retrieve()
        bgr = bgr if ok else None
      yield i, bgr, last
      i += 1

  def close(self) -> None:
    self._cap.release()


@dataclasses.dataclass
class WindowFrames:
  """A window's sampled frames and their predecessors, uint8 RGB [T, S, S, 3], and when the
  window's last frame arrived (time.monotonic())."""
  window: Window
  frames: np.ndarray
  prev_frames: np.ndarray
  arrived: float


class Thumbnails:
  """Small RGB frames kept for the timeline picture: every `every`-th source frame."""

  def __init__(self, every: int, height: int = 72):
    self.every = max(1, int(every))
    self.height = int(height)
    self.frames: list[tuple[int, np.ndarray]] = []

  def wants(self, index: int) -> bool:
    return index % self.every == 0

  def add(self, index: int, bgr: np.ndarray) -> None:
    h, w = bgr.shape[:2]
    width = max(1, int(round(w * self.height / h)))
    small = cv2.resize(bgr, (width, self.height), interpolation=cv2.INTER_AREA)
    self.frames.append((index, cv2.cvtColor(small, cv2.COLOR_BGR2RGB)))


def assemble(source, windows: Iterable[Window], size: int,
             thumbnails: Thumbnails | None = None,
             interpolation: int = cv2.INTER_LINEAR,
             stats: dict | None = None) -> Iterator[WindowFrames]:
  """Windows (in start order; a finite plan or an endless stream of them) with their frames,
  each as soon as its last needed frame has been read (module docstring). `stats`, when given,
  gets `max_frames_held` (the most resized frames held at once) and `frames_read`."""
  upcoming = iter(windows)
  next_window = next(upcoming, None)
  pending: deque[Window] = deque()
  needed: dict[int, int] = {}      # source frame -> how many pending windows need it
  store: dict[int, np.ndarray] = {}

  def admit(index: int) -> None:
    nonlocal next_window
    while next_window is not None and next_window.start <= index + 1 and (
        int(next_window.indices.min()) - 1 <= index):
      pending.append(next_window)
      for f in next_window.needed:
        needed[f] = needed.get(f, 0) + 1
      next_window = next(upcoming, None)

  def wanted(index: int) -> bool:
    admit(index)
    return index in needed or (thumbnails is not None and thumbnails.wants(index))

  for index, bgr, arrived in source.frames(wanted):
    admit(index)
    if bgr is not None:
      if index in needed:
        small = cv2.resize(bgr, (size, size), interpolation=interpolation)
        store[index] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
      if thumbnails is not None and thumbnails.wants(index):
        thumbnails.add(index, bgr)
    elif index in needed:
      raise video_lib.VideoError(source.path, f"corrupt: frame {index} could not be decoded")
    if stats is not None:
      stats["frames_read"] = index + 1
      stats["max_frames_held"] = max(stats.get("max_frames_held", 0), len(store))
    while pending and pending[0].last_needed <= index:
      w = pending.popleft()
      idx = w.indices.tolist()
      yield WindowFrames(w, np.stack([store[i] for i in idx]),
                         np.stack([store[i - 1] for i in idx]), arrived)
      for f in w.needed:
        needed[f] -= 1
        if not needed[f]:
          del needed[f]
          store.pop(f, None)
  if pending and source.num_frames is not None:
    w = pending[0]
    raise video_lib.VideoError(source.path, f"truncated: window {w.index} needs frame "
                                            f"{w.last_needed}, decoding ended before it")
