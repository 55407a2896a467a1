"""A small synthetic anomaly dataset: mp4 clips of moving shapes with text, for smoke runs.

  python -m data_pipelines.synthetic --out DIR --num_videos 24

Each clip (default 96x96, 32 frames at 10 fps, mp4v) shows one or two coloured actors on a
textured static background doing one event:
- normal: `walk` (steady motion across the scene), `stand` (an actor sways in place);
- anomalous: `collision` (two actors run into each other and stop), `fall` (an actor walking
  drops to the ground), `run` (an actor walking suddenly sprints).
Text is templated but varied (several phrasings per event, random colours, actors, directions)
and always names subject, verb and object, so motion-text extraction finds phrases.

Written layout (HAWK and WebVid layouts over the same clips):
  DIR/videos/synthetic/clip_0000.mp4 ...
  DIR/all_videos_train.json, DIR/all_videos_test.json   HAWK {"video","description","QA"}
  DIR/captions.csv                                      WebVid page_dir,videoid,name

Rerunning into the same DIR with the same clip settings (seed, size, frames, fps; recorded in
DIR/videos/synthetic/params.json) leaves the clips already there untouched, so their size and
mtime, and with them pre-extraction's cache keys (data_pipelines/clip_cache.py), stay the same.
A clip is written under a temporary name and renamed once complete, so a clip file under its
own name is always whole; with other settings every clip is written again.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from typing import Sequence

import cv2
import numpy as np

from hawk_jax import console

EVENTS = ("walk", "stand", "collision", "fall", "run")
ANOMALOUS = {"collision", "fall", "run"}
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


def _render(event: str, size: int, num_frames: int, rng: np.random.Generator):
  """Frames (RGB uint8 [T, size, size, 3]) and the actors of one event."""
  bg = _background(size, rng)
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


def write_mp4(path: str, frames_rgb: np.ndarray, fps: float) -> None:
  """Writes the clip to `path` whole or not at all: into a temporary name (ending in .mp4,
  which OpenCV picks the container by) renamed into place once the writer is closed."""
  h, w = frames_rgb.shape[1:3]
  tmp = f"{path[:-4] if path.endswith('.mp4') else path}{_TMP_MARK}{os.getpid()}.mp4"
  writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
  if not writer.isOpened():
    raise OSError(f"{path}: OpenCV cannot open an mp4v writer (on {tmp})")
  try:
    for frame in frames_rgb:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()
  os.replace(tmp, path)


_TMP_MARK = ".tmp-"
_PARAMS_FILE = "params.json"


def _keep_clips_made_with(clips_dir: str, params: dict) -> None:
  """Leaves the clips in clips_dir that were made with `params` (recorded in params.json);
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

  Events cycle through EVENTS so every kind appears once num_videos >= 5; the test split is
  every round(1/test_fraction)-th clip, so it holds every event too when large enough.
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
    (test if every and i % every == every - 1 else train).append(entry)
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


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m data_pipelines.synthetic", __doc__)
  p.add_argument("--out", required=True, help="output folder (videos/, annotations)")
  p.add_argument("--num_videos", type=int, default=24, help="videos to make")
  p.add_argument("--size", type=int, default=96, help="frame side in pixels")
  p.add_argument("--num_frames", type=int, default=32, help="frames per video")
  p.add_argument("--fps", type=float, default=10.0, help="frames per second")
  p.add_argument("--test_fraction", type=float, default=0.2,
                 help="fraction of the videos in the test split")
  p.add_argument("--seed", type=int, default=0, help="seed of the scenes")
  args = p.parse_args(argv)
  console.setup_logging(args.log_level)
  paths = make_synthetic_dataset(args.out, args.num_videos, args.size, args.num_frames,
                                 args.fps, args.test_fraction, args.seed)
  print(f"{args.num_videos} videos in {paths['videos_dir']}; annotations: "
        + ", ".join(f"{k} {os.path.basename(v)}" for k, v in paths.items() if k != "videos_dir"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
