"""Pre-extraction names what it did to short videos, refuses an output folder it cannot write
or fill before decoding anything, and a rerun of the synthetic generator keeps its clips (so the
extraction cache is reused)."""
import collections
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from data_pipelines import clip_cache, extract, synthetic


def _video(path, num_frames, size=32):
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
  rng = np.random.default_rng(num_frames)
  for _ in range(num_frames):
    writer.write(rng.integers(0, 256, (size, size, 3)).astype(np.uint8))
  writer.release()


@pytest.fixture
def captions(tmp_path):
  """A caption corpus of a 2-frame video and a 6-frame one."""
  videos = tmp_path / "videos"
  videos.mkdir()
  _video(videos / "short.mp4", 2)
  _video(videos / "long.mp4", 6)
  ann = tmp_path / "caps.jsonl"
  ann.write_text('{"video": "short.mp4", "caption": "a dog runs"}\n'
                 '{"video": "long.mp4", "caption": "a man walks"}\n')
  return str(ann), str(videos)


def _args(ann, videos, out_dir, *more):
  return ["--source", "captions", "--annotations", ann, "--videos_dir", videos, "--out_dir",
          str(out_dir), "--num_frames", "4", "--size", "32", "--workers", "0", "--no_progress",
          *more]


def _nothing_decoded(monkeypatch):
  def refuse(*args):
    raise AssertionError(f"a video was decoded: {args[0]}")
  monkeypatch.setattr(clip_cache, "process_video", refuse)


@pytest.mark.parametrize("policy, done", [
    ("repeat", "kept with repeated frames"),
    ("skip", "skipped (--short_policy skip)")])
def test_summary_names_short_videos_also_from_the_cache(captions, tmp_path, policy, done):
  ann, videos = captions
  args = extract.parse_args(_args(ann, videos, tmp_path / "out", "--short_policy", policy))
  good = 1 if policy == "skip" else 2
  for rerun in (False, True):
    summary = extract.run(args)
    text = extract.format_summary(summary)
    assert (summary.computed, summary.reused) == ((0, good) if rerun else (good, 0))
    short = [line for line in text.splitlines() if line.startswith("short ")]
    assert short == [f"short [train] caps.jsonl:1 (short.mp4): 2 real frames, 4 asked: "
                     f"{done}"], text
    assert text.splitlines()[-1] == f"ok={good} skipped={2 - good}"
  logged = [json.loads(line) for line in open(tmp_path / "out" / "skipped.jsonl")]
  if policy == "skip":
    assert [s["video"] for s in logged] == ["short.mp4"]
    assert "too few frames: 2 source frames < 4" in logged[0]["reason"]
  else:
    assert logged == []


def test_unwritable_out_dir_fails_before_decoding(captions, tmp_path, monkeypatch, capsys):
  ann, videos = captions
  if os.geteuid() == 0:
    # root writes into read-only folders (chmod does not bite), but not below a file
    (tmp_path / "a_file").write_text("")
    out_dir, restore = tmp_path / "a_file" / "out", None
  else:
    out_dir = tmp_path / "read_only"
    out_dir.mkdir()
    out_dir.chmod(0o500)
    restore = out_dir
  _nothing_decoded(monkeypatch)
  try:
    assert extract.main(_args(ann, videos, out_dir)) == 2
  finally:
    if restore is not None:
      restore.chmod(0o700)
  assert f"error: {out_dir}: cannot write there" in capsys.readouterr().err


def test_full_disk_fails_before_decoding(captions, tmp_path, monkeypatch, capsys):
  ann, videos = captions
  out_dir = tmp_path / "out"
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(shutil, "disk_usage",
                      lambda path: usage(10**9, 10**9 - 20_000, 20_000))
  _nothing_decoded(monkeypatch)
  assert extract.main(_args(ann, videos, out_dir)) == 2
  err = capsys.readouterr().err
  # 2 videos x 4 frames x (32 * 32 * 0.4 + 1000) bytes, once as cache shards, once as records
  assert f"error: {out_dir}: not enough free space: about 22.6 KB needed (2 videos x ~5.6 KB " \
         f"per sample at --num_frames 4 --size 32" in err and ", 20.0 KB free" in err, err
  assert not (out_dir / "skipped.jsonl").exists()


def test_synthetic_rerun_keeps_clips_and_extraction_reuses_them(tmp_path, capsys):
  raw = str(tmp_path / "raw")
  make = dict(num_videos=3, size=32, num_frames=8)
  paths = synthetic.make_synthetic_dataset(raw, **make)
  clips = sorted(os.path.join(paths["videos_dir"], "synthetic", n)
                 for n in os.listdir(os.path.join(paths["videos_dir"], "synthetic"))
                 if n.endswith(".mp4"))
  assert len(clips) == 3
  for clip in clips:  # an old mtime: a rewrite, however quick, shows
    os.utime(clip, ns=(10**18, 10**18))

  def state():
    return [(os.stat(c).st_mtime_ns, open(c, "rb").read()) for c in clips]

  before = state()
  argv = ["--source", "captions", "--annotations", paths["captions"], "--videos_dir",
          paths["videos_dir"], "--out_dir", str(tmp_path / "data"), "--num_frames", "4",
          "--size", "32", "--workers", "0", "--no_progress"]
  assert extract.main(argv) == 0
  assert "videos: 3 extracted, 0 reused" in capsys.readouterr().out
  annotations = open(paths["train"]).read()
  assert synthetic.make_synthetic_dataset(raw, **make) == paths
  assert state() == before and open(paths["train"]).read() == annotations
  assert extract.main(argv) == 0
  assert "videos: 0 extracted, 3 reused" in capsys.readouterr().out

  # A clip missing, and a temporary file a killed run left: only that clip is written again.
  os.remove(clips[1])
  stale = clips[1][:-4] + ".tmp-999.mp4"
  open(stale, "wb").write(b"half a clip")
  synthetic.make_synthetic_dataset(raw, **make)
  assert os.path.getsize(clips[1]) > 1000 and not os.path.exists(stale)
  after = state()
  assert [after[0], after[2]] == [before[0], before[2]]
  # Other clip settings: every clip is made again.
  synthetic.make_synthetic_dataset(raw, **{**make, "size": 40})
  assert all(cv2.VideoCapture(c).get(cv2.CAP_PROP_FRAME_WIDTH) == 40 for c in clips)
