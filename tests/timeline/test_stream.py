"""Live scoring of a file another thread is still writing: one JSON line per window with its
latency, the same scores the finished file gets, and the keeps-up summary."""
import json
import threading
import time

import av
import numpy as np
import pytest

from hawk_jax.timeline import cli
from hawk_jax.timeline import frames as frames_lib
from tests.support import random_stage2_workdir

FPS = 20
NUM = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return random_stage2_workdir(tmp_path_factory)


def _frame(t, size=48):
  img = np.full((size, size, 3), 90, np.uint8)
  x = (2 * t) % (size - 12)
  img[16:28, x:x + 12] = (250, (9 * t) % 256, 40)
  return img


def _write_growing(path, pace_s, started: threading.Event):
  """MPEG-TS, flushed frame by frame, as a recorder writes it."""
  with open(path, "wb") as f:
    out = av.open(f, "w", format="mpegts")
    stream = out.add_stream("mpeg4", rate=FPS)
    stream.width = stream.height = 48
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = 8
    stream.codec_context.max_b_frames = 0
    for t in range(NUM):
      frame = av.VideoFrame.from_ndarray(_frame(t), format="rgb24")
      for packet in stream.encode(frame):
        out.mux(packet)
      f.flush()
      if t == 4:
        started.set()
      time.sleep(pace_s)
    for packet in stream.encode():
      out.mux(packet)
    out.close()


def test_growing_file_source_yields_every_frame_once_in_order(tmp_path):
  path = str(tmp_path / "grow.ts")
  started = threading.Event()
  writer = threading.Thread(target=_write_growing, args=(path, 0.01, started))
  writer.start()
  started.wait(10)
  source = frames_lib.GrowingFileSource(path, idle_s=1.0, poll_s=0.05)
  seen = [(i, bgr is not None) for i, bgr, _ in source.frames(lambda i: i % 2 == 0)]
  writer.join()
  assert [i for i, _ in seen] == list(range(NUM))
  assert all(has == (i % 2 == 0) for i, has in seen)
  assert source.fps == FPS


def test_stream_scores_a_file_while_it_is_written(workdir, tmp_path, capsys):
  path = str(tmp_path / "live.ts")
  started = threading.Event()
  writer = threading.Thread(target=_write_growing, args=(path, 1.0 / FPS, started))
  writer.start()
  started.wait(10)
  code = cli.main(["--checkpoint", workdir, "--stream", path, "--window_s", "1",
                   "--stride_s", "0.5", "--idle_s", "1.5", "--describe",
                   "--describe_threshold", "0", "--max_new_tokens", "2"])
  writer.join()
  out, err = capsys.readouterr()
  assert code == 0, err
  lines = [json.loads(x) for x in out.splitlines()]
  # windows of 20 frames every 10 that fit into 64 frames: starts 0, 10, ..., 40
  assert [x["window"] for x in lines] == [0, 1, 2, 3, 4]
  for x in lines:
    assert x["end_s"] - x["start_s"] == pytest.approx(1.0)
    assert 0.0 <= x["score"] <= 1.0
    assert x["latency_s"] >= 0.0 and x["behind_s"] >= 0.0
    assert isinstance(x["description"], str)  # --describe, every window above 0
  last = err.strip().splitlines()[-1]
  assert last.startswith("stream: 5 windows") and "latency median" in last
  assert "kept up with real time" in last or "FELL BEHIND" in last
  # the finished file, scored offline, gives the same window scores
  code = cli.main(["--checkpoint", workdir, path, "--out", str(tmp_path / "offline"),
                   "--window_s", "1", "--stride_s", "0.5"])
  capsys.readouterr()
  assert code == 0
  offline = json.loads((tmp_path / "offline" / "timeline.json").read_text())["windows"]
  for x, y in zip(lines, offline):
    assert (x["start_s"], x["end_s"]) == (y["start_s"], y["end_s"])
    assert x["score"] == pytest.approx(y["score"], abs=1e-4)


def test_stream_summary_says_when_scoring_falls_behind():
  from hawk_jax.timeline.stream import summary_line
  s = {"windows": 10, "media_s": 10.0, "wall_s": 25.0, "median_latency_s": 0.5,
       "max_latency_s": 1.0, "final_behind_s": 15.0}
  assert "FELL BEHIND real time by 15.0 s" in summary_line(s, 1.0)
  assert "0.40x real time" in summary_line(s, 1.0)
  assert "kept up" in summary_line(dict(s, final_behind_s=0.4), 1.0)


def test_capture_source_reads_a_live_capture_until_it_goes_quiet(tmp_path):
  """An OpenCV capture (here of a finished file; an RTSP URL or a camera index alike): every
  frame once, in order, then the end after idle_s without a frame."""
  path = str(tmp_path / "cam.ts")
  _write_growing(path, 0.0, threading.Event())
  source = frames_lib.CaptureSource(path, idle_s=0.3)
  t0 = time.monotonic()
  seen = [i for i, bgr, _ in source.frames(lambda i: True) if bgr is not None]
  source.close()
  assert seen == list(range(NUM)) and source.fps == FPS
  assert time.monotonic() - t0 >= 0.3
  with pytest.raises(Exception, match="cannot open"):
    frames_lib.CaptureSource(str(tmp_path / "no_such_camera.ts"))
