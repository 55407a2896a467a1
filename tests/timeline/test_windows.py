"""Windows over long videos: the plan, the one-pass assembler (against an independent decode and
against `motion.extract`), frame scores and intervals."""
import cv2
import numpy as np
import pytest

from data_pipelines import motion as motion_lib
from data_pipelines.synthetic import write_mp4
from data_pipelines.video import VideoError
from hawk_jax.timeline import frames as frames_lib
from hawk_jax.timeline import windows as windows_lib


def _video(path, n=60, size=40, seed=0):
  """A square moving over a smooth background, its colour changing with time."""
  rng = np.random.default_rng(seed)
  bg = cv2.resize(rng.integers(0, 256, (5, 5, 3)).astype(np.uint8), (size, size),
                  interpolation=cv2.INTER_CUBIC)
  frames = np.repeat(bg[None], n, axis=0).copy()
  for t in range(n):
    x = (3 * t) % (size - 10)
    frames[t, 12:22, x:x + 10] = (255, (7 * t) % 256, 30)
  write_mp4(str(path), frames, fps=10.0)
  return str(path)


def _decode_all(path, size):
  """Every frame, resized and RGB, by a plain OpenCV loop (the reference)."""
  cap = cv2.VideoCapture(path)
  out = []
  while True:
    ok, bgr = cap.read()
    if not ok:
      return np.stack(out)
    out.append(cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR),
                            cv2.COLOR_BGR2RGB))


def test_plan_covers_every_frame_and_aligns_the_last_window_to_the_end():
  plan = windows_lib.plan_windows(103, 10.0, window_s=2.0, stride_s=0.7, num_frames=8)
  assert [w.start for w in plan[:3]] == [0, 7, 14]
  assert all(w.stop - w.start == 20 for w in plan)
  assert plan[-1].stop == 103  # aligned to the end
  covered = np.zeros(103, bool)
  for w in plan:
    covered[w.start:w.stop] = True
    assert w.indices.shape == (8,)
    assert (w.indices >= w.start + 1).all() and (w.indices < w.stop).all()
    assert np.all(np.diff(w.indices) >= 0)
    np.testing.assert_allclose(w.timestamps, (w.indices - w.start) / 10.0)
  assert covered.all()
  # a video shorter than one window is one window over all of it (frames repeat)
  [short] = windows_lib.plan_windows(6, 10.0, window_s=4.0, stride_s=1.0, num_frames=8)
  assert (short.start, short.stop) == (0, 6) and short.indices.max() <= 5
  with pytest.raises(ValueError, match="window_s"):
    windows_lib.plan_windows(100, 10.0, window_s=0.0, stride_s=1.0, num_frames=8)


def test_stream_windows_start_every_stride():
  it = windows_lib.stream_windows(10.0, 2.0, 0.5, 4)
  ws = [next(it) for _ in range(4)]
  assert [(w.start, w.stop) for w in ws] == [(0, 20), (5, 25), (10, 30), (15, 35)]


def test_frame_scores_average_overlapping_windows():
  plan = windows_lib.plan_windows(57, 10.0, window_s=1.5, stride_s=0.4, num_frames=4)
  scores = np.random.default_rng(0).random(len(plan))
  got = windows_lib.frame_scores(plan, scores, 57)
  for f in range(57):
    inside = [s for w, s in zip(plan, scores) if w.start <= f < w.stop]
    assert got[f] == pytest.approx(np.mean(inside), abs=1e-6)


def test_uncovered_frames_take_the_nearest_covered_score():
  it = windows_lib.stream_windows(10.0, 1.0, 1.0, 4)
  ws = [next(it) for _ in range(2)]  # frames 0..19 of 25
  got = windows_lib.frame_scores(ws, [0.2, 0.8], 25)
  np.testing.assert_allclose(got[:10], 0.2)
  np.testing.assert_allclose(got[10:], 0.8)


def test_intervals_threshold_merge_and_drop():
  s = np.zeros(50, np.float32)
  s[5:10] = 0.9
  s[12:15] = 0.7   # 2-frame gap after the first run
  s[30:31] = 0.6   # one frame
  ivs = windows_lib.find_intervals(s, 10.0, threshold=0.5)
  assert [(i["start_frame"], i["end_frame"]) for i in ivs] == [(5, 9), (12, 14), (30, 30)]
  assert ivs[0]["start_s"] == 0.5 and ivs[0]["end_s"] == 1.0 and ivs[0]["peak"] == 0.9
  merged = windows_lib.find_intervals(s, 10.0, threshold=0.5, min_gap_s=0.3, min_len_s=0.2)
  assert [(i["start_frame"], i["end_frame"]) for i in merged] == [(5, 14)]
  assert windows_lib.find_intervals(np.full(5, 0.5), 10.0, 0.5)[0]["end_frame"] == 4


def test_assembled_windows_equal_a_plain_decode(tmp_path):
  path = _video(tmp_path / "v.mp4", n=60)
  ref = _decode_all(path, 32)
  source = frames_lib.FileSource(path)
  plan = windows_lib.plan_windows(source.num_frames, source.fps, 1.6, 0.5, num_frames=6)
  stats = {}
  got = list(frames_lib.assemble(source, plan, 32, stats=stats))
  assert [g.window.index for g in got] == list(range(len(plan)))
  for g in got:
    np.testing.assert_array_equal(g.frames, ref[g.window.indices])
    np.testing.assert_array_equal(g.prev_frames, ref[g.window.indices - 1])
  assert stats["frames_read"] == 60


def test_one_window_over_a_clip_is_what_training_extracts(tmp_path):
  """A window over the whole clip samples, decodes and moves exactly as motion.extract does
  for the training records."""
  path = _video(tmp_path / "clip.mp4", n=32, seed=3)
  source = frames_lib.FileSource(path)
  [w] = windows_lib.plan_windows(source.num_frames, source.fps, 3.2, 1.0, num_frames=8)
  [got] = frames_lib.assemble(source, [w], 32)
  ref = motion_lib.extract(path, num_frames=8, size=32, mode="flow_soft")
  np.testing.assert_array_equal(w.indices, ref["indices"])
  np.testing.assert_array_equal(got.frames, ref["frames"])
  from hawk_jax.timeline.scoring import motion_frames
  np.testing.assert_array_equal(motion_frames(got.frames, got.prev_frames, "flow_soft"),
                                ref["motion"])
  np.testing.assert_allclose(w.timestamps, ref["timestamps"], atol=1e-6)


def test_memory_is_bounded_by_the_windows_in_flight(tmp_path):
  path = _video(tmp_path / "long.mp4", n=600, size=24)
  source = frames_lib.FileSource(path)
  plan = windows_lib.plan_windows(source.num_frames, source.fps, 2.0, 0.5, num_frames=8)
  stats = {}
  count = sum(1 for _ in frames_lib.assemble(source, plan, 16, stats=stats))
  assert count == len(plan) == 117
  in_flight = 2.0 / 0.5 + 1
  assert stats["max_frames_held"] <= in_flight * 2 * 8, stats  # not the 600 frames


def test_bad_files_are_named(tmp_path):
  with pytest.raises(VideoError, match="missing file"):
    frames_lib.FileSource(str(tmp_path / "nope.mp4"))
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video at all" * 10)
  with pytest.raises(VideoError, match="bad.mp4: unreadable"):
    frames_lib.FileSource(str(bad))
