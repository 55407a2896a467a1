"""What the demo tests share: a tiny stage-2 workdir (random parameters, written as training
writes them), a short synthetic video, an engine over the workdir and a pre-extracted test split
made from the video. Session-scoped: the handler and browser tests use the same ones."""
import os

import cv2
import numpy as np
import pytest

from configs.common import base_config
from data_pipelines import motion, records
from hawk_jax.infer.engine import Engine
from tests.support import write_random_workdir, write_records

NUM_FRAMES = 4
MAX_NEW = 8


def moving_square(seed: int, size: int = 48, n: int = 10) -> np.ndarray:
  """uint8 [n, size, size, 3]: a smooth random background with a square moving across it."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
  bg = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
  frames = np.repeat(bg[None], n, axis=0).copy()
  for t in range(n):
    x = 2 + 3 * t
    frames[t, 10:22, x:x + 12] = (255, 40 * seed % 256, 20)
  return frames


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory):
  cfg = base_config(2, "size=tiny")
  cfg.data.num_frames = NUM_FRAMES
  cfg.generate.max_new_tokens = MAX_NEW
  path = str(tmp_path_factory.mktemp("demo_stage2"))
  write_random_workdir(path, cfg, steps=(10,), std=0.08)
  return path


def write_webm(path: str, frames_rgb: np.ndarray, fps: float) -> None:
  """A VP8 WebM (OpenCV's FFmpeg), which a browser plays, unlike synthetic.write_mp4's mp4v
  (on which the page's video player shows "Video not playable")."""
  h, w = frames_rgb.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"VP80"), fps, (w, h))
  if not writer.isOpened():
    raise OSError(f"{path}: OpenCV cannot open a VP8 writer")
  try:
    for frame in frames_rgb:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()


@pytest.fixture(scope="session")
def demo_video(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("demo_videos") / "square.webm")
  write_webm(path, moving_square(1), fps=5.0)
  return path


@pytest.fixture(scope="session")
def demo_engine(demo_workdir):
  # One device, as the demo serves the tiny model in the browser test (a subprocess that sees
  # one CPU device): the same programs, so the same greedy tokens.
  return Engine.from_workdir(demo_workdir, layout="single")


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory, demo_video):
  clip = motion.extract(demo_video, num_frames=NUM_FRAMES, size=48, mode="flow_soft")
  qa = [{"q": "What moves?", "a": "A red square moves to the right."}]
  examples = [records.make_example(records.encode_visual(clip), video=f"clips/{name}",
                                   source="test", motion_mode="flow_soft",
                                   description=f"A red square slides right ({name}).", qa=qa)
              for name in ("a.mp4", "b.mp4")]
  return write_records({"test": examples}, tmp_path_factory.mktemp("demo_data"))


def write_not_a_video(folder) -> str:
  path = os.path.join(str(folder), "notes.mp4")
  with open(path, "w", encoding="utf-8") as f:
    f.write("not a video\n")
  return path
