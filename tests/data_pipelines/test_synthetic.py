"""The synthetic dataset: the yes/no anomaly question added to every clip without changing the
clips or texts a seed made before, and long videos whose annotated intervals hold the events.

Pictures are checked on decoded frames, through actor colours (the background is a dull texture,
the actors saturated palette colours), so the checks see what a model would see.
"""
import json
import os

import cv2
import numpy as np
import pytest

from data_pipelines import synthetic

# Seed 0, 10 clips of 48x48x8 at 5 fps, recorded before the anomaly question was added:
# (videoid, description, caption, the old first question, mean RGB of the rendered frames).
# The first question is the generator's last draw for a clip, so it and the next clip's pixels
# catch a change in draw order; the means catch a change in rendering (a different background
# moves them by whole units, codec and OpenCV versions do not enter since they are pre-encoding).
BEFORE = [
    ("clip_0000", "The orange person crosses the courtyard at a calm, constant pace, moving to "
     "the left. There is no anomaly in this video.", "an orange person walks across the "
     "courtyard", "What unusual event happens?", (148.43, 123.5, 109.67)),
    ("clip_0001", "A yellow man stands in the middle of the road and sways slightly. The scene "
     "is calm and normal.", "a yellow man stands in the road",
     "Is there anything abnormal in this video?", (117.73, 110.03, 102.6)),
    ("clip_0002", "The red car crashes into the yellow woman in the courtyard; the collision "
     "knocks both to the ground.", "a red car collides with a yellow woman in the courtyard",
     "What unusual event happens?", (108.69, 124.42, 105.69)),
    ("clip_0003", "In the parking lot, a red car loses balance halfway and falls down, which is "
     "abnormal.", "a red car collapses on the parking lot", "What unusual event happens?",
     (145.42, 105.27, 130.88)),
    ("clip_0004", "An orange woman walks slowly across the sidewalk, then suddenly sprints to "
     "the left. The sudden run is an anomaly.", "an orange woman sprints away in the sidewalk",
     "What unusual event happens?", (126.05, 134.15, 101.21)),
    ("clip_0005", "An orange person walks steadily across the sidewalk from the right to the "
     "left. Nothing unusual happens; the scene is normal.",
     "an orange person crosses the sidewalk to the left",
     "Is there anything abnormal in this video?", (104.83, 144.42, 116.38)),
    ("clip_0006", "A green dog stands in the middle of the square and sways slightly. The scene "
     "is calm and normal.", "a green dog stands in the square",
     "Is there anything abnormal in this video?", (121.72, 140.5, 139.41)),
    ("clip_0007", "In the courtyard, the green cyclist runs into the red man. They collide in the "
     "middle and fall, which is abnormal.",
     "a green cyclist collides with a red man in the courtyard",
     "What is the anomaly in the video?", (92.53, 118.5, 113.51)),
    ("clip_0008", "A green man walks across the parking lot and suddenly falls to the ground. "
     "The fall is an anomaly.", "a green man falls down in the parking lot",
     "What unusual event happens?", (98.31, 122.3, 131.07)),
    ("clip_0009", "The blue man starts walking in the courtyard and abruptly runs away at high "
     "speed, which is abnormal.", "a blue man suddenly runs across the courtyard",
     "What unusual event happens?", (101.73, 131.41, 136.79)),
]


def test_every_clip_asks_the_anomaly_question_first_and_keeps_its_old_texts_and_pixels(
    tmp_path, monkeypatch):
  means = {}
  write = synthetic.write_mp4

  def spy(path, frames, fps):
    means[os.path.basename(path)[:-4]] = frames.reshape(-1, 3).mean(0)
    write(path, frames, fps)

  monkeypatch.setattr(synthetic, "write_mp4", spy)
  paths = synthetic.make_synthetic_dataset(str(tmp_path), num_videos=10, size=48, num_frames=8,
                                           fps=5.0, seed=0)
  entries = json.load(open(paths["train"])) + json.load(open(paths["test"]))
  by_id = {os.path.basename(e["video"])[:-4]: e for e in entries}
  with open(paths["captions"], encoding="utf-8") as f:
    captions = {line.split(",")[0]: line.rstrip("\n").split(",", 2)[2] for line in f}
  assert sorted(by_id) == [b[0] for b in BEFORE]
  for i, (videoid, desc, caption, old_first_q, mean) in enumerate(BEFORE):
    entry = by_id[videoid]
    anomalous = synthetic.EVENTS[i % len(synthetic.EVENTS)] in synthetic.ANOMALOUS
    assert entry["QA"][0] == {"q": synthetic.ANOMALY_QUESTION,
                              "a": "Yes." if anomalous else "No."}, videoid
    assert len(entry["QA"]) == 5 and entry["QA"][1]["q"] == old_first_q, videoid
    assert entry["description"] == desc and captions[videoid] == caption, videoid
    np.testing.assert_allclose(means[videoid], mean, atol=0.05, err_msg=videoid)


def test_the_anomaly_question_is_the_one_the_scorer_asks():
  # The timeline scorer reads P(yes) after exactly this prompt; a rewording must change both.
  assert synthetic.ANOMALY_QUESTION == "Is there any anomaly in this video? Answer yes or no."


# Long videos: 20-24 s at 5 fps in segments of 10 frames, so lengths are not all whole segments
# (the cut last segment is exercised). Seed 7 gives every anomalous kind, videos with two events
# and lengths 116, 102, 116, 119; the test checks the kinds are there rather than trusting it.
LONG = {"num_videos": 4, "min_seconds": 20, "max_seconds": 24, "size": 48, "fps": 5.0,
        "segment_frames": 10, "seed": 7}
PALETTE = np.array(list(synthetic.COLOURS.values()), np.float32)
# A pixel is an actor's when within this RGB distance of a palette colour: the background and the
# codec's blend at actor edges stay further (measured: none in 30 seeds' normal segments).
NEAR = 35.0
MIN_PIXELS = 40  # of one colour, to count an actor (the smallest, a dog, has ~100 at 48 px)


def _decode(path):
  cap = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = cap.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  cap.release()
  return np.stack(frames)


def _actor_labels(frames):
  """Per pixel: index of the palette colour it shows, -1 for background."""
  dist = np.linalg.norm(frames[..., None, :].astype(np.float32) - PALETTE, axis=-1)
  labels = dist.argmin(-1)
  labels[dist.min(-1) > NEAR] = -1
  return labels


def _actors_per_frame(labels):
  return np.array([sum(int((frame == c).sum() >= MIN_PIXELS) for c in range(len(PALETTE)))
                   for frame in labels])


def _vertical_travel(labels):
  """Range of the actor pixels' mean row over a segment."""
  rows = [np.nonzero(frame >= 0)[0].mean() for frame in labels if (frame >= 0).sum() >= MIN_PIXELS]
  return max(rows) - min(rows)


def _speed_up(labels, size):
  """Mean step of the actor's leading edge in a segment's second half over its first half (the
  leading edge enters the picture first, so it is not cut by the edge the actor starts at)."""
  cols = [np.nonzero((frame >= 0).any(0))[0] for frame in labels]
  seen = [c for c in cols if len(c)]
  right = seen[-1].mean() > seen[0].mean()
  lead = [None if not len(c) else (c.max() if right else size - 1 - c.min()) for c in cols]

  def steps(lo, hi):
    return [lead[t + 1] - lead[t] for t in range(lo, hi)
            if lead[t] is not None and lead[t + 1] is not None and lead[t + 1] < size - 1]

  half = len(labels) // 2
  return np.mean(steps(half, len(labels) - 1)) / max(np.mean(steps(0, half - 1)), 0.5)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
  out = tmp_path_factory.mktemp("long")
  paths = synthetic.make_long_videos(str(out), **LONG)
  with open(paths["index"], encoding="utf-8") as f:
    index = json.load(f)
  frames = {v["video"]: _decode(str(out / v["video"])) for v in index}
  return {"out": out, "paths": paths, "index": index, "frames": frames}


def test_long_videos_have_the_frames_and_duration_they_claim(long_videos):
  paths, index = long_videos["paths"], long_videos["index"]
  assert paths["videos_dir"] == str(long_videos["out"] / "long" / "videos")
  assert [v["video"] for v in index] == [f"long/videos/long_{i:04d}.mp4" for i in range(4)]
  for v in index:
    frames = long_videos["frames"][v["video"]]
    assert frames.shape == (v["num_frames"], 48, 48, 3), v["video"]
    assert LONG["min_seconds"] <= v["num_frames"] / v["fps"] <= LONG["max_seconds"]
  assert len({v["num_frames"] for v in index}) > 1  # lengths are drawn, not fixed
  assert any(v["num_frames"] % LONG["segment_frames"] for v in index)  # a cut last segment


def test_ucf_annotations_parse_and_give_the_events_intervals(long_videos):
  with open(long_videos["paths"]["annotations"], encoding="utf-8") as f:
    lines = f.read().splitlines()
  index = long_videos["index"]
  assert len(lines) == len(index)
  seg = LONG["segment_frames"]
  for line, v in zip(lines, index):
    name, label, *numbers = line.split()
    assert name == os.path.basename(v["video"]) and len(numbers) == 4, line
    numbers = [int(n) for n in numbers]
    intervals = [(s, e) for s, e in zip(numbers[::2], numbers[1::2]) if (s, e) != (-1, -1)]
    assert -1 not in [n for interval in intervals for n in interval], line  # padding at the end
    assert numbers[2 * len(intervals):] == [-1] * (4 - 2 * len(intervals)), line
    assert intervals == [(e["start_frame"], e["end_frame"]) for e in v["events"]], line
    assert label == ("Anomaly" if intervals else "Normal"), line
    for event, (s, e) in zip(v["events"], intervals):
      assert event["event"] in synthetic.ANOMALOUS
      # Whole segments, never the first, ending inside the video.
      assert s % seg == 0 and e == s + seg - 1 and s >= seg and e < v["num_frames"], line
      assert event["start_s"] == pytest.approx(s / v["fps"])
      assert event["end_s"] == pytest.approx((e + 1) / v["fps"])
    starts = [s for s, _ in intervals]
    assert all(b - a >= 2 * seg for a, b in zip(starts, starts[1:])), line  # a normal between
  assert [bool(v["events"]) for v in index] == [True, True, True, False]  # the last is normal
  assert max(len(v["events"]) for v in index) == 2
  assert {e["event"] for v in index for e in v["events"]} == synthetic.ANOMALOUS


def test_annotated_intervals_show_their_event_and_normal_segments_do_not(long_videos):
  """A collision shows two actors at once, a fall moves the actor down, a run speeds it up;
  normal footage (walk, stand) has one actor at a constant height and speed."""
  seg, size = LONG["segment_frames"], LONG["size"]
  for v in long_videos["index"]:
    labels = _actor_labels(long_videos["frames"][v["video"]])
    events = {e["start_frame"]: e for e in v["events"]}
    for start in range(0, v["num_frames"], seg):
      part = labels[start:start + seg]
      where = f"{v['video']} frames {start}..{start + len(part) - 1}"
      event = events.get(start, {}).get("event")
      if event is None:
        assert v["segments"][start // seg] in synthetic.NORMAL_EVENTS, where
        assert _actors_per_frame(part).max() == 1, where
        assert _vertical_travel(part) <= 2, where
        if v["segments"][start // seg] == "walk" and len(part) == seg:
          assert _speed_up(part, size) < 1.5, where
      elif event == "collision":
        assert _actors_per_frame(part).max() == 2, where
      elif event == "fall":
        assert _vertical_travel(part) >= 0.1 * size, where
      else:
        assert event == "run" and _speed_up(part, size) >= 2, where


def test_long_videos_share_one_background():
  # One scene per video: a segment over a given background draws only the actors on it.
  rng = np.random.default_rng(0)
  background = synthetic._background(48, rng)
  frames = synthetic._render("walk", 48, 6, rng, background=background)[0]
  unchanged = (frames == background).all(-1).mean()
  assert unchanged > 0.8  # all but the actor


def test_a_rerun_keeps_long_videos_and_another_seed_rewrites_them(tmp_path):
  kwargs = dict(num_videos=2, min_seconds=4, max_seconds=4, size=48, fps=5.0, segment_frames=8,
                seed=3)
  paths = synthetic.make_long_videos(str(tmp_path), **kwargs)
  videos = sorted(p for p in os.listdir(paths["videos_dir"]) if p.endswith(".mp4"))
  assert videos == ["long_0000.mp4", "long_0001.mp4"]
  files = [os.path.join(paths["videos_dir"], v) for v in videos]
  for path in files:  # an old mtime, so a rewrite cannot hide within the clock's resolution
    os.utime(path, ns=(10**18, 10**18))
  before = [(os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in files]
  annotations = open(paths["annotations"]).read()
  synthetic.make_long_videos(str(tmp_path), **kwargs)
  assert [(os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in files] == before
  assert open(paths["annotations"]).read() == annotations
  synthetic.make_long_videos(str(tmp_path), **{**kwargs, "seed": 4})
  assert all(os.stat(p).st_mtime_ns != 10**18 for p in files)
  assert sorted(os.listdir(paths["videos_dir"])) == videos + ["params.json"]  # no temporaries


def test_a_video_failing_midway_leaves_no_file(tmp_path):
  path = str(tmp_path / "v.mp4")
  with pytest.raises(RuntimeError):
    with synthetic._Mp4Writer(path, 5.0, 48, 48) as writer:
      writer.write(np.zeros((3, 48, 48, 3), np.uint8))
      raise RuntimeError("render failed")
  assert os.listdir(tmp_path) == []


def test_plans_place_one_or_two_whole_non_adjacent_events_after_the_first_segment():
  seen = set()
  for s in range(300):
    rng = np.random.default_rng(s)
    num_frames = int(rng.integers(20, 75))
    segments = synthetic._plan_long(rng, num_frames, 10, with_anomaly=True)
    assert len(segments) == -(-num_frames // 10)
    hits = [k for k, e in enumerate(segments) if e in synthetic.ANOMALOUS]
    assert 1 <= len(hits) <= synthetic.MAX_LONG_EVENTS and hits[0] >= 1, segments
    assert all(b - a >= 2 for a, b in zip(hits, hits[1:])), segments
    assert (hits[-1] + 1) * 10 <= num_frames, segments  # a cut last segment stays normal
    seen.update(hits)
  assert seen >= {1, 2, 3, 4, 5}  # events land everywhere they may
  assert not any(e in synthetic.ANOMALOUS for e in synthetic._plan_long(
      np.random.default_rng(0), 50, 10, with_anomaly=False))


@pytest.mark.parametrize("seconds, match", [((3, 3), "fewer than the two segments"),
                                            ((2.1, 2.15), "no whole number of frames"),
                                            ((5, 4), "min_seconds <= max_seconds")])
def test_long_videos_refuse_durations_that_cannot_hold_them(tmp_path, seconds, match):
  with pytest.raises(ValueError, match=match):
    synthetic.make_long_videos(str(tmp_path), 1, *seconds, size=48, fps=5.0, segment_frames=8)
  assert not (tmp_path / "long").exists()


def test_cli_writes_long_videos_and_says_so(tmp_path, capsys):
  base = ["--out", str(tmp_path), "--num_videos", "2", "--size", "48", "--num_frames", "8",
          "--fps", "5"]
  assert synthetic.main(base + ["--num_long_videos", "1", "--long_seconds", "4,4"]) == 0
  out = capsys.readouterr().out
  assert "1 long videos in" in out and "annotations_ucf.txt" in out
  with open(tmp_path / "long" / "annotations_ucf.txt") as f:
    assert f.read().startswith("long_0000.mp4  Anomaly  ")
  with open(tmp_path / "long" / "long_videos.json") as f:
    assert json.load(f)[0]["num_frames"] == 20


def test_cli_without_long_videos_writes_none_and_a_bad_range_writes_nothing(tmp_path, capsys):
  base = ["--out", str(tmp_path / "a"), "--num_videos", "1", "--size", "48", "--num_frames", "8"]
  assert synthetic.main(base) == 0
  assert "long videos" not in capsys.readouterr().out
  assert not (tmp_path / "a" / "long").exists()
  for bad in ("20", "1,2"):  # not MIN,MAX; too short for two segments
    with pytest.raises(SystemExit) as e:
      synthetic.main(["--out", str(tmp_path / "b"), "--num_long_videos", "1",
                      "--long_seconds", bad])
    assert e.value.code == 2
  assert not (tmp_path / "b").exists()
