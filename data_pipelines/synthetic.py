"""A small synthetic anomaly dataset: mp4 clips of moving shapes with text, for smoke runs.

  python -m data_pipelines.synthetic --out DIR --num_videos 24
  python -m data_pipelines.synthetic --out DIR --num_long_videos 3 --long_seconds 20,60

Each clip (default 96x96, 32 frames at 10 fps, mp4v) shows one or two coloured actors on a
textured static background doing one event:
- normal: `walk` (steady motion across the scene), `stand` (an actor sways in place);
- anomalous: `collision` (two actors run into each other and stop), `fall` (an actor walking
  drops to the ground), `run` (an actor walking suddenly sprints).
Text is templated but varied (several phrasings per event, random colours, actors, directions)
and always names subject, verb and object, so motion-text extraction finds phrases. Every clip's
first QA pair is ANOMALY_QUESTION answered "Yes." or "No.": the timeline scorer asks exactly that
question and reads P(yes) from the next token, so training must show the model that answer
(stage 2 sometimes swaps the first pair for the description, so the pair is not always seen).

Long videos (make_long_videos, --num_long_videos) are for temporal localization: one scene (one
background) played as a run of segments, each as long as a training clip, so a scoring window of
one clip's length looks like a training clip. Segments are normal (walk, stand) but for one or
two anomalous ones at random, never first and never next to each other, so every event has
normal footage on both sides and the ground truth is a clean frame interval. The last video of a
set of three or more is fully normal, for the false-alarm rate.

Written layout (HAWK and WebVid layouts over the same clips):
  DIR/videos/synthetic/clip_0000.mp4 ...
  DIR/all_videos_train.json, DIR/all_videos_test.json   HAWK {"video","description","QA"}
  DIR/captions.csv                                      WebVid page_dir,videoid,name
  DIR/long/videos/long_0000.mp4 ...                     long videos (only with --num_long_videos)
  DIR/long/annotations_ucf.txt                          UCF-Crime temporal annotations:
      long_0000.mp4  Anomaly  s1  e1  s2  e2            0-based frames, both ends inclusive,
      long_0002.mp4  Normal  -1  -1  -1  -1             -1 where there is no (second) interval
  DIR/long/long_videos.json                             the same with event names and seconds

Rerunning into the same DIR with the same clip settings (seed, size, frames, fps; recorded in
DIR/videos/synthetic/params.json) leaves the clips already there untouched, so their size and
mtime, and with them pre-extraction's cache keys (data_pipelines/clip_cache.py), stay the same.
A clip is written under a temporary name and renamed once complete, so a clip file under its
own name is always whole; with other settings every clip is written again. Long videos follow
the same rule with their own settings (DIR/long/videos/params.json).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from typing import Sequence

import cv2
import numpy as np

from hawk_jax import console

EVENTS = ("walk", "stand", "collision", "fall", "run")
ANOMALOUS = {"collision", "fall", "run"}
NORMAL_EVENTS = tuple(e for e in EVENTS if e not in ANOMALOUS)
ANOMALOUS_EVENTS = tuple(e for e in EVENTS if e in ANOMALOUS)
# Asked word for word by the timeline scorer; the first QA pair of every clip.
ANOMALY_QUESTION = "Is there any anomaly in this video? Answer yes or no."
COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 180, 60),
           "yellow": (230, 210, 40), "purple": (150, 60, 190), "orange": (240, 140, 30)}
ACTORS = {"person": (10, 22), "man": (10, 24), "woman": (9, 22), "cyclist": (14, 18),
          "car": (24, 12), "dog": (14, 9)}
PLACES = ("street", "parking lot", "square", "road", "sidewalk", "courtyard")


@dataclasses.dataclass
class Actor:
  colour: str
  kind: str
  x: float
  y: float

  @property
  def name(self) -> str:
    return f"{self.colour} {self.kind}"


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
  """Static textured ground (texture gives the flow something to lock on when still)."""
  base = rng.integers(90, 150, 3)
  ramp = np.linspace(-25, 25, size)[:, None, None]
  noise = rng.normal(0, 10, (size // 8, size // 8, 3))
  noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
  return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def _draw(frame: np.ndarray, actor: Actor, fallen: bool = False) -> None:
  w, h = ACTORS[actor.kind]
  if fallen:
    w, h = h, w
  x0, y0 = int(round(actor.x - w / 2)), int(round(actor.y - h / 2))
  colour = COLOURS[actor.colour]
  cv2.rectangle(frame, (x0, y0), (x0 + w, y0 + h), colour, -1)
  cv2.rectangle(frame, (x0, y0), (x0 + w, y0 + h), (20, 20, 20), 1)


def _render(event: str, size: int, num_frames: int, rng: np.random.Generator,
            background: np.ndarray | None = None):
  """Frames (RGB uint8 [T, size, size, 3]) and the actors of one event, over `background`
  ([size, size, 3]; a new one drawn from rng first when None, as every clip does)."""
  bg = _background(size, rng) if background is None else background
  colours = rng.permutation(list(COLOURS))
  kinds = list(ACTORS)
  a = Actor(str(colours[0]), str(rng.choice(kinds)), 0.0, 0.0)
  b = Actor(str(colours[1]), str(rng.choice(kinds)), 0.0, 0.0)
  direction = rng.choice([1, -1])
  ground = size * rng.uniform(0.45, 0.7)
  speed = size / num_frames * rng.uniform(0.5, 0.8)
  frames = []
  for t in range(num_frames):
    frame = bg.copy()
    fallen = False
    start = size / 2 - direction * size * 0.35
    if event == "walk":
      a.x, a.y = start + direction * speed * t, ground
    elif event == "stand":
      a.x, a.y = size / 2 + 2.0 * np.sin(t / 3.0), ground
    elif event == "run":
      switch = num_frames // 2
      steps = t if t < switch else switch + 3.5 * (t - switch)
      a.x, a.y = start + direction * speed * 0.5 * steps, ground
    elif event == "fall":
      switch = num_frames // 2
      a.x = start + direction * speed * min(t, switch)
      a.y = ground + (min(t - switch, 4) * size * 0.06 if t > switch else 0.0)
      fallen = t > switch
    elif event == "collision":
      meet = num_frames * 0.6
      tt = min(t, meet)
      a.x, a.y = size * 0.15 + (size * 0.35 - 6) * tt / meet, ground
      b.x, b.y = size * 0.85 - (size * 0.35 - 6) * tt / meet, ground
      fallen = t > meet + 2
      _draw(frame, b, fallen)
    _draw(frame, a, fallen)
    frames.append(frame)
  return np.stack(frames), a, b, ("right" if direction > 0 else "left")


def _pick(rng, options):
  return options[int(rng.integers(len(options)))]


def _text(event: str, a: Actor, b: Actor, direction: str, place: str, rng):
  """(description, caption, QA list) for one event."""
  A, B = a.name, b.name
  aA, aB = _with_article(A), _with_article(B)
  cA = aA[0].upper() + aA[1:]
  if event == "walk":
    desc = _pick(rng, [
        f"{cA} walks steadily across the {place} from the {_opposite(direction)} to the "
        f"{direction}. Nothing unusual happens; the scene is normal.",
        f"The {A} crosses the {place} at a calm, constant pace, moving to the {direction}. "
        f"There is no anomaly in this video.",
        f"In the {place}, {aA} walks toward the {direction} without stopping. The movement "
        f"is regular and nothing abnormal occurs."])
    caption = _pick(rng, [f"{aA} walks across the {place}",
                          f"{aA} crosses the {place} to the {direction}"])
    anomaly = "There is no anomaly; the " + A + " simply walks across the " + place + "."
    what = f"The {A} walks steadily to the {direction}."
  elif event == "stand":
    desc = _pick(rng, [
        f"{cA} stands in the middle of the {place} and sways slightly. The scene is calm "
        f"and normal.",
        f"The {A} waits in the {place}, moving only a little. No anomaly occurs."])
    caption = _pick(rng, [f"{aA} stands in the {place}", f"{aA} waits in the {place}"])
    anomaly = f"There is no anomaly; the {A} just stands in the {place}."
    what = f"The {A} stands still and sways a little."
  elif event == "collision":
    desc = _pick(rng, [
        f"{cA} and {aB} move toward each other in the {place}. The {A} hits the {B} "
        f"and both fall down. This collision is an anomaly.",
        f"In the {place}, the {A} runs into the {B}. They collide in the middle and fall, "
        f"which is abnormal.",
        f"The {A} crashes into the {B} in the {place}; the collision knocks both to the "
        f"ground."])
    caption = _pick(rng, [f"{aA} collides with {aB} in the {place}",
                          f"{aA} hits {aB} in the {place}"])
    anomaly = f"The {A} collides with the {B} and both fall down."
    what = f"The {A} and the {B} approach each other, collide and fall."
  elif event == "fall":
    desc = _pick(rng, [
        f"{cA} walks across the {place} and suddenly falls to the ground. The fall is an "
        f"anomaly.",
        f"The {A} is walking to the {direction} when it collapses and drops to the ground "
        f"in the {place}.",
        f"In the {place}, {aA} loses balance halfway and falls down, which is abnormal."])
    caption = _pick(rng, [f"{aA} falls down in the {place}",
                          f"{aA} collapses on the {place}"])
    anomaly = f"The {A} suddenly falls to the ground."
    what = f"The {A} walks to the {direction}, then falls to the ground."
  elif event == "run":
    desc = _pick(rng, [
        f"{cA} walks slowly across the {place}, then suddenly sprints to the {direction}. "
        f"The sudden run is an anomaly.",
        f"The {A} starts walking in the {place} and abruptly runs away at high speed, which "
        f"is abnormal.",
        f"In the {place}, {aA} suddenly speeds up and runs off to the {direction}."])
    caption = _pick(rng, [f"{aA} suddenly runs across the {place}",
                          f"{aA} sprints away in the {place}"])
    anomaly = f"The {A} suddenly starts running very fast."
    what = f"The {A} walks slowly, then sprints to the {direction}."
  else:
    raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
  is_anomaly = event in ANOMALOUS
  qa = [
      # Draws nothing from rng, so the pairs after it stay what they were before it was added.
      {"q": ANOMALY_QUESTION, "a": "Yes." if is_anomaly else "No."},
      {"q": _pick(rng, ["What is the anomaly in the video?", "What unusual event happens?",
                        "Is there anything abnormal in this video?"]),
       "a": anomaly},
      {"q": f"What does the {A} do?", "a": what},
      {"q": "Is this video normal or anomalous?",
       "a": "It is anomalous." if is_anomaly else "It is normal."},
      {"q": "Where does the scene take place?", "a": f"The scene takes place in a {place}."},
  ]
  return desc, caption, qa


def _with_article(noun_phrase: str) -> str:
  return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def _opposite(direction: str) -> str:
  return "left" if direction == "right" else "right"


_TMP_MARK = ".tmp-"  # in a temporary video's name, which a rerun removes


class _Mp4Writer:
  """An mp4v file written frame batch by frame batch yet whole or not at all: into a temporary
  name (ending in .mp4, which OpenCV picks the container by), renamed into place when the block
  ends without an error and removed when it ends with one. A long video thus never has to be in
  memory at once, and a reader never sees half of one under its own name."""

  def __init__(self, path: str, fps: float, width: int, height: int):
    self.path = path
    self.tmp = f"{path[:-4] if path.endswith('.mp4') else path}{_TMP_MARK}{os.getpid()}.mp4"
    self._writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                   (width, height))
    if not self._writer.isOpened():
      self._remove_tmp()
      raise OSError(f"{path}: OpenCV cannot open an mp4v writer (on {self.tmp})")

  def write(self, frames_rgb: np.ndarray) -> None:
    for frame in frames_rgb:
      self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

  def _remove_tmp(self) -> None:
    try:
      os.remove(self.tmp)
    except OSError:
      pass

  def __enter__(self) -> _Mp4Writer:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self._writer.release()
    if exc_type is None:
      os.replace(self.tmp, self.path)
    else:
      self._remove_tmp()


def write_mp4(path: str, frames_rgb: np.ndarray, fps: float) -> None:
  """Writes the clip to `path` whole or not at all (see _Mp4Writer)."""
  h, w = frames_rgb.shape[1:3]
  with _Mp4Writer(path, fps, w, h) as writer:
    writer.write(frames_rgb)


_PARAMS_FILE = "params.json"


def _keep_clips_made_with(clips_dir: str, params: dict) -> None:
  """Leaves the videos in clips_dir that were made with `params` (recorded in params.json);
  removes them all if made otherwise, then records `params` before any new clip is written,
  so a later rerun never keeps a clip made with other settings. Temporary files a killed run
  left are removed too."""
  path = os.path.join(clips_dir, _PARAMS_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      same = json.load(f) == params
  except (OSError, ValueError):
    same = False
  for name in os.listdir(clips_dir):
    if name.endswith(".mp4") and (_TMP_MARK in name or not same):
      os.remove(os.path.join(clips_dir, name))
  if not same:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(params, f)


def make_synthetic_dataset(out_dir: str, num_videos: int = 24, size: int = 96,
                           num_frames: int = 32, fps: float = 10.0, test_fraction: float = 0.2,
                           seed: int = 0) -> dict[str, str]:
  """Writes the clips and the annotation files; returns their paths (see module docstring).

  Events cycle through EVENTS so every kind appears once num_videos >= 5. The test split takes
  one clip in every k = round(1/test_fraction), on a diagonal (clip i when i % k == (i // k) %
  k): every k-th clip alone would, for k = len(EVENTS) = 5 (the default 0.2), be the same event
  every time (a test split of `run` clips only), while the diagonal visits every event.
  """
  if num_videos < 1:
    raise ValueError(f"num_videos must be >= 1, got {num_videos}")
  rng = np.random.default_rng(seed)
  videos_dir = os.path.join(out_dir, "videos")
  clips_dir = os.path.join(videos_dir, "synthetic")
  os.makedirs(clips_dir, exist_ok=True)
  # Clip i depends on these alone (num_videos and test_fraction change only how many clips
  # there are and which split each goes to).
  _keep_clips_made_with(clips_dir, {"seed": seed, "size": size, "num_frames": num_frames,
                                    "fps": fps})
  every = max(2, int(round(1 / test_fraction))) if test_fraction > 0 else 0
  train, test, captions = [], [], []
  for i in range(num_videos):
    event = EVENTS[i % len(EVENTS)]
    # Rendered even when the clip is kept: the text below draws from the same generator.
    frames, a, b, direction = _render(event, size, num_frames, rng)
    videoid = f"clip_{i:04d}"
    rel = f"synthetic/{videoid}.mp4"
    if not os.path.exists(os.path.join(videos_dir, rel)):
      write_mp4(os.path.join(videos_dir, rel), frames, fps)
    desc, caption, qa = _text(event, a, b, direction, _pick(rng, PLACES), rng)
    entry = {"video": rel, "description": desc, "QA": qa}
    (test if every and i % every == (i // every) % every else train).append(entry)
    captions.append({"videoid": videoid, "page_dir": "synthetic", "name": caption})
  paths = {
      "videos_dir": videos_dir,
      "train": os.path.join(out_dir, "all_videos_train.json"),
      "test": os.path.join(out_dir, "all_videos_test.json"),
      "captions": os.path.join(out_dir, "captions.csv"),
  }
  for split, entries in (("train", train), ("test", test)):
    with open(paths[split], "w", encoding="utf-8") as f:
      json.dump(entries, f, indent=1, ensure_ascii=False)
  with open(paths["captions"], "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["videoid", "page_dir", "name"])
    writer.writeheader()
    writer.writerows(captions)
  return paths


# Anomalous events per long video at most: a UCF-Crime annotation line holds two intervals.
MAX_LONG_EVENTS = 2
# Mixed into each long video's seed so its stream is not a clip's: default_rng(s) and
# default_rng([s, 0]) give the same numbers.
_LONG_STREAM = 0x6C6F6E67


def _long_frame_range(min_seconds: float, max_seconds: float, fps: float,
                      segment_frames: int) -> tuple[int, int]:
  """The frame counts whose duration lies in [min_seconds, max_seconds] (the small slack keeps
  e.g. 20 s at 10 fps at 200 frames despite float rounding); ValueError when there is none, or
  when the shortest holds fewer than the two segments (a normal one, then the anomaly) that a
  video with an anomaly needs."""
  if not 0 < min_seconds <= max_seconds:
    raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
  if segment_frames < 1:
    raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
  lo, hi = math.ceil(min_seconds * fps - 1e-6), math.floor(max_seconds * fps + 1e-6)
  if lo > hi:
    raise ValueError(f"no whole number of frames at {fps} fps lasts between {min_seconds} and "
                     f"{max_seconds} s")
  if lo < 2 * segment_frames:
    raise ValueError(f"{min_seconds} s at {fps} fps is {lo} frames, fewer than the two "
                     f"segments of {segment_frames} frames a video with an anomaly needs")
  return lo, hi


def _plan_long(rng: np.random.Generator, num_frames: int, segment_frames: int,
               with_anomaly: bool) -> list[str]:
  """The event of each segment. A last segment cut short by num_frames is always normal, so an
  anomalous segment is whole (its event happens in the segment's second half)."""
  num_segments = -(-num_frames // segment_frames)
  events = [_pick(rng, NORMAL_EVENTS) for _ in range(num_segments)]
  if with_anomaly:
    # Slots are the whole segments after the first. Picking k of slots - k + 1 and shifting the
    # j-th pick by j spreads them uniformly over all non-adjacent placements.
    slots = num_frames // segment_frames - 1
    k = min(int(rng.integers(1, MAX_LONG_EVENTS + 1)), (slots + 1) // 2)
    picks = np.sort(rng.choice(slots - k + 1, size=k, replace=False))
    for j, c in enumerate(picks):
      events[1 + int(c) + j] = _pick(rng, ANOMALOUS_EVENTS)
  return events


def _ucf_line(name: str, intervals: list[tuple[int, int]]) -> str:
  """`name  Anomaly  s1  e1  s2  e2` (or Normal), -1 where there is no interval; the format of
  UCF-Crime's Temporal_Anomaly_Annotation.txt, which the localization metrics read."""
  fields = [v for interval in intervals for v in interval]
  fields += [-1] * (2 * MAX_LONG_EVENTS - len(fields))
  return "  ".join([name, "Anomaly" if intervals else "Normal", *map(str, fields)])


def make_long_videos(out_dir: str, num_videos: int = 3, min_seconds: float = 20,
                     max_seconds: float = 60, size: int = 96, fps: float = 10.0,
                     segment_frames: int = 32, seed: int = 1) -> dict[str, str]:
  """Writes long videos with anomalous events at known frames under out_dir/long and returns
  the paths: videos_dir, annotations (UCF-Crime format) and index (long_videos.json); see the
  module docstring.

  Each video lasts a whole number of frames within [min_seconds, max_seconds] and holds one or
  two anomalous segments of segment_frames frames, except the last of three or more, which is
  normal. Video i depends only on (seed, i) and the other settings, so its plan is known
  before rendering and a kept video is not rendered again.
  """
  if num_videos < 1:
    raise ValueError(f"num_videos must be >= 1, got {num_videos}")
  lo, hi = _long_frame_range(min_seconds, max_seconds, fps, segment_frames)
  long_dir = os.path.join(out_dir, "long")
  videos_dir = os.path.join(long_dir, "videos")
  os.makedirs(videos_dir, exist_ok=True)
  # num_videos is a setting here: it decides which video is the normal one.
  _keep_clips_made_with(videos_dir, {
      "num_videos": num_videos, "min_seconds": min_seconds, "max_seconds": max_seconds,
      "size": size, "fps": fps, "segment_frames": segment_frames, "seed": seed})
  index, lines = [], []
  for i in range(num_videos):
    rng = np.random.default_rng([seed, _LONG_STREAM, i])
    num_frames = int(rng.integers(lo, hi + 1))
    normal = num_videos >= 3 and i == num_videos - 1
    segments = _plan_long(rng, num_frames, segment_frames, with_anomaly=not normal)
    name = f"long_{i:04d}.mp4"
    path = os.path.join(videos_dir, name)
    if not os.path.exists(path):
      background = _background(size, rng)
      with _Mp4Writer(path, fps, size, size) as writer:
        for k, event in enumerate(segments):
          frames = _render(event, size, segment_frames, rng, background=background)[0]
          writer.write(frames[:num_frames - k * segment_frames])
    events = []
    for k, event in enumerate(segments):
      if event in ANOMALOUS:
        start, end = k * segment_frames, (k + 1) * segment_frames - 1
        # Seconds as a half-open span: the event lasts until the end of its last frame.
        events.append({"event": event, "start_frame": start, "end_frame": end,
                       "start_s": round(start / fps, 3), "end_s": round((end + 1) / fps, 3)})
    index.append({"video": f"long/videos/{name}", "fps": fps, "num_frames": num_frames,
                  "segment_frames": segment_frames, "segments": segments, "events": events})
    lines.append(_ucf_line(name, [(e["start_frame"], e["end_frame"]) for e in events]))
  paths = {"videos_dir": videos_dir,
           "annotations": os.path.join(long_dir, "annotations_ucf.txt"),
           "index": os.path.join(long_dir, "long_videos.json")}
  with open(paths["annotations"], "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
  with open(paths["index"], "w", encoding="utf-8") as f:
    json.dump(index, f, indent=1)
  return paths


def _seconds_range(text: str) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected MIN,MAX in seconds, got {text!r}") from None
  return lo, hi


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m data_pipelines.synthetic", __doc__)
  p.add_argument("--out", required=True, help="output folder (videos/, annotations)")
  p.add_argument("--num_videos", type=int, default=24, help="videos to make")
  p.add_argument("--size", type=int, default=96, help="frame side in pixels")
  p.add_argument("--num_frames", type=int, default=32,
                 help="frames per video (and per segment of a long video)")
  p.add_argument("--fps", type=float, default=10.0, help="frames per second")
  p.add_argument("--test_fraction", type=float, default=0.2,
                 help="fraction of the videos in the test split")
  p.add_argument("--seed", type=int, default=0, help="seed of the scenes")
  p.add_argument("--num_long_videos", type=int, default=0,
                 help="long videos with anomalies at known frames to make too, in OUT/long")
  # A string default goes through type too, and --help shows it as typed.
  p.add_argument("--long_seconds", type=_seconds_range, default="20,60", metavar="MIN,MAX",
                 help="duration range of a long video in seconds")
  args = p.parse_args(argv)
  console.setup_logging(args.log_level)
  if args.num_long_videos > 0:
    try:  # before any clip is written: a bad range is a usage error, not half a dataset
      _long_frame_range(*args.long_seconds, args.fps, args.num_frames)
    except ValueError as e:
      p.error(str(e))
  paths = make_synthetic_dataset(args.out, args.num_videos, args.size, args.num_frames,
                                 args.fps, args.test_fraction, args.seed)
  summary = (f"{args.num_videos} videos in {paths['videos_dir']}; annotations: "
             + ", ".join(f"{k} {os.path.basename(v)}" for k, v in paths.items()
                         if k != "videos_dir"))
  if args.num_long_videos > 0:
    long_paths = make_long_videos(args.out, args.num_long_videos, *args.long_seconds,
                                  size=args.size, fps=args.fps, segment_frames=args.num_frames,
                                  seed=args.seed)
    summary += (f"; {args.num_long_videos} long videos in {long_paths['videos_dir']}, "
                f"annotations: {long_paths['annotations']}")
  print(summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
