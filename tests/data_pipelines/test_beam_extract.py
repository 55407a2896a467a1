"""The Beam route against the local one: same records, same bad inputs, on Beam's DirectRunner
in multi-process mode (two worker processes, as a real runner pickles work to other processes).
"""
import contextlib
import io
import json
import os

import numpy as np
import pytest

from data_pipelines import beam_extract, extract, records, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["--num_frames", "4", "--size", "32", "--no_progress"]
BEAM = ["--", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _beam_main(argv):
  """(exit code, stdout) of the Beam CLI."""
  out = io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
    # Beam's worker processes unpickle functions of this checkout by name: let them import it
    # even where the installed package points elsewhere.
    mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH"))
                                            if p))
    code = beam_extract.main(argv)
  return code, out.getvalue()


def _summary_lines(text):
  """The summary without what differs by design: the output folder and the time."""
  return [line for line in text.strip().splitlines()
          if line.startswith(("skipped ", "videos: ", "splits: ", "ok="))]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Five tiny clips and bad inputs; the test split has no good video at all (the Beam route
  once failed there: TFDS's Beam writer refuses a split with no examples)."""
  root = tmp_path_factory.mktemp("beam")
  paths = synthetic.make_synthetic_dataset(str(root / "raw"), num_videos=5, size=32,
                                           num_frames=8, seed=3)
  videos = paths["videos_dir"]
  good = [f"synthetic/clip_{i:04d}.mp4" for i in range(5)]
  os.makedirs(os.path.join(videos, "bad"))
  data = open(os.path.join(videos, good[0]), "rb").read()
  with open(os.path.join(videos, "bad", "truncated.mp4"), "wb") as f:
    f.write(data[:len(data) // 2])
  with open(os.path.join(videos, "bad", "garbage.mp4"), "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(2000))
  qa = [{"q": "What happens?", "a": "Someone walks."}]
  train = [{"video": v, "description": f"clip {i}", "QA": qa} for i, v in enumerate(good)]
  train.insert(2, {"video": "bad/truncated.mp4", "description": "x", "QA": qa})
  train.insert(4, {"video": good[1], "QA": qa})  # an annotation problem: no description
  test = [{"video": "bad/garbage.mp4", "description": "x", "QA": qa},
          {"video": "bad/missing.mp4", "description": "x", "QA": qa}]
  for name, entries in (("train", train), ("test", test)):
    with open(root / f"{name}.json", "w", encoding="utf-8") as f:
      json.dump(entries, f)
  return ["--source", "hawk", "--annotations", str(root / "train.json"), "--test_annotations",
          str(root / "test.json"), "--videos_dir", videos, *SMALL]


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory):
  out = tmp_path_factory.mktemp("routes")
  local = extract.run(extract.parse_args(
      [*inputs, "--out_dir", str(out / "local"), "--workers", "0"]))
  argv = [*inputs, "--out_dir", str(out / "beam"), *BEAM]
  code, text = _beam_main(argv)
  return {"out": out, "local": local, "beam_code": code, "beam_text": text, "beam_argv": argv}


def test_beam_route_names_the_same_bad_inputs(runs):
  assert runs["beam_code"] == 0
  beam_text = runs["beam_text"]
  local_text = extract.format_summary(runs["local"])
  assert _summary_lines(beam_text) == _summary_lines(local_text)
  assert _summary_lines(beam_text)[-3:] == [
      "videos: 5 extracted, 0 reused from cache", "splits: test=0, train=5", "ok=5 skipped=4"]
  logged = {route: (runs["out"] / route / "skipped.jsonl").read_text(encoding="utf-8")
            for route in ("local", "beam")}
  assert logged["beam"] == logged["local"]
  reasons = {s["where"]: s["reason"] for s in map(json.loads, logged["beam"].splitlines())}
  assert set(reasons) == {"train.json[2]", "train.json[4]", "test.json[0]", "test.json[1]"}
  assert reasons["train.json[2]"].startswith("unreadable")      # truncated
  assert reasons["test.json[0]"].startswith("unreadable")       # garbage
  assert reasons["test.json[1]"] == "missing file"


def test_beam_route_writes_the_same_records(runs):
  local, beam = (records.open_split(str(runs["out"] / route), "train")
                 for route in ("local", "beam"))
  assert len(beam) == len(local) == 5
  for i in range(len(local)):
    a, b = local[i], beam[i]
    assert set(a) == set(b) == {"frames_jpeg", "motion_png", "timestamps", "indices", "fps",
                                "num_source_frames", "video", "source", "description",
                                "caption", "qa_json", "motion_mode"}
    for field in a:
      np.testing.assert_array_equal(np.asarray(b[field]), np.asarray(a[field]), err_msg=field)
  for route in ("local", "beam"):
    with pytest.raises(KeyError, match="no split 'test'"):  # all bad: left out by both
      records.open_split(str(runs["out"] / route), "test")


def test_beam_rerun_reuses_shards_and_dataset(runs):
  data_dir = records.find_dataset_dirs(str(runs["out"] / "beam"))[0]
  written = {f: os.path.getmtime(os.path.join(data_dir, f)) for f in os.listdir(data_dir)}
  code, text = _beam_main(runs["beam_argv"])
  assert code == 0
  lines = _summary_lines(text)
  assert lines[-3:] == ["videos: 0 extracted, 5 reused from cache", "splits: test=0, train=5",
                        "ok=5 skipped=4"]
  assert {f: os.path.getmtime(os.path.join(data_dir, f)) for f in os.listdir(data_dir)} == written
