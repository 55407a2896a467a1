"""Frame-level localization (hawk_jax/eval/localization.py, `python -m hawk_jax.evaluate --task
localization`): the metrics equal scikit-learn's (the field's reference implementation) on
random scores with ties, the command line gives sklearn's numbers on random videos annotated in
both the UCF-Crime and XD-Violence formats, every bad input is one `error:` line naming the file,
line and video with exit status 2, and hawk_jax.evaluate still forwards the text evaluation to
hawk_jax.eval.cli."""
import json
import logging
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from hawk_jax import evaluate
from hawk_jax.eval import localization as loc
from tests.support import assert_one_error_line

# ---------------------------------------------------------------------------------------------
# The metrics against sklearn.


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_roc_auc_and_average_precision_equal_sklearn(ties):
  for seed in range(60):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    labels = (rng.random(n) < rng.uniform(0.05, 0.9)).astype(np.uint8)
    labels[:2] = 0, 1  # both classes
    rng.shuffle(labels)
    scores = rng.random(n)
    if ties:
      scores = np.round(scores, int(rng.integers(0, 2)))  # 0 decimals: only 0 and 1
    assert loc.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores),
                                                        abs=1e-12), seed
    assert loc.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12), seed


def test_undefined_metrics_are_nan_with_a_warning(caplog):
  with caplog.at_level(logging.WARNING, logger="hawk_jax"):
    assert math.isnan(loc.roc_auc(np.zeros(5, np.uint8), np.arange(5.)))
    assert math.isnan(loc.roc_auc(np.ones(5, np.uint8), np.arange(5.)))
    assert math.isnan(loc.average_precision(np.zeros(5, np.uint8), np.arange(5.)))
  assert len([r for r in caplog.records if "undefined" in r.getMessage()]) == 3
  # Only positives: AP is defined (1), as sklearn says.
  assert loc.average_precision(np.ones(4, np.uint8), np.arange(4.)) == 1.0
  with pytest.raises(ValueError, match="0 or 1"):
    loc.roc_auc(np.array([0, 2]), np.array([0., 1.]))
  with pytest.raises(ValueError, match="finite"):
    loc.roc_auc(np.array([0, 1]), np.array([0., np.nan]))


def test_frame_labels_are_inclusive_and_clipped():
  np.testing.assert_array_equal(loc.frame_labels(8, [(1, 2), (6, 20)]),
                                [0, 1, 1, 0, 0, 0, 1, 1])
  assert loc.frame_labels(3, []).dtype == np.uint8
  np.testing.assert_array_equal(loc.frame_labels(3, [(2, 2)]), [0, 0, 1])
  with pytest.raises(ValueError, match="wrong length"):
    loc.frame_labels(3, [(3, 5)])


def test_video_stems():
  assert loc.video_stem("/data/Arrest001_x264.mp4") == "Arrest001_x264"
  assert loc.video_stem("gs://b/x/Arrest001_x264.MP4") == "Arrest001_x264"
  assert loc.video_stem("Arrest001_x264") == "Arrest001_x264"
  dotted = "A.Beautiful.Mind.2001__#00-25-20_00-26-10_label_B2-0-0"
  assert loc.video_stem(dotted) == dotted
  assert loc.video_stem(f"/xd/{dotted}.mp4") == dotted


# ---------------------------------------------------------------------------------------------
# The command line on random videos, both formats.


def _random_videos(rng, fmt):
  """[(name in the annotations, name in the scores, scores, inclusive intervals, listed)]."""
  videos = []
  for i in range(int(rng.integers(5, 12))):
    n = int(rng.integers(5, 300))
    abnormal = i == 0 or (i > 1 and rng.random() < 0.6)  # video 1 is normal
    intervals = []
    if i == 0:
      intervals = [(1, 2)]  # an abnormal video with normal frames too
    elif abnormal:
      starts = sorted(rng.choice(n, size=int(rng.integers(1, 3 if fmt == "ucf" else 4)),
                                 replace=False))
      intervals = [(int(s), int(s + rng.integers(0, 60))) for s in starts]  # may pass the end
    scores = np.round(rng.random(n) * 0.7 + 0.3 * np.isin(np.arange(n), [
        f for s, e in intervals for f in range(s, e + 1)]), 2)
    if fmt == "ucf":
      name = f"Video{i:03d}_x264"
      videos.append((f"{name}.mp4", f"/data/ucf/{name}.mp4", scores, intervals, True))
    else:
      tag = "label_A" if not intervals else "label_B1-0-0"
      name = f"Some.Film.{2000 + i}__#00-0{i % 10}-00_00-0{i % 10}-30_{tag}"
      listed = bool(intervals) or i % 2 == 1  # normal: a name-only line, or unlisted
      videos.append((name, f"/data/xd/{name}.mp4", scores, intervals, listed))
  return videos


def _write_files(tmp_path, fmt, videos):
  ann = tmp_path / f"{fmt}_annotations.txt"
  if fmt == "ucf":
    loc.write_ucf_annotations(ann, [(name, "Anomaly" if iv else "Normal", iv)
                                    for name, _, _, iv, _ in videos])
  else:  # XD's end frame is excluded: an inclusive (s, e) is written s e+1
    ann.write_text("".join(" ".join([name] + [f"{s} {e + 1}" for s, e in iv]) + "\n"
                           for name, _, _, iv, listed in videos if listed), encoding="utf-8")
  scores = tmp_path / f"{fmt}_scores.jsonl"
  scores.write_text("".join(json.dumps({"video": path, "frame_scores": s.tolist(),
                                        "num_frames": len(s), "fps": 30.0}) + "\n\n"
                            for _, path, s, _, _ in videos), encoding="utf-8")
  return ann, scores


def _run(capsys, argv):
  code = evaluate.main(argv)
  captured = capsys.readouterr()
  return code, captured.out, captured.err


@pytest.mark.parametrize("fmt", loc.FORMATS)
@pytest.mark.parametrize("seed", range(3))
def test_the_command_line_equals_sklearn_on_random_videos(tmp_path, capsys, fmt, seed):
  rng = np.random.default_rng(100 * seed + len(fmt))
  videos = _random_videos(rng, fmt)
  ann, scores = _write_files(tmp_path, fmt, videos)
  labels = []
  for _, _, s, intervals, _ in videos:
    lab = np.zeros(len(s), np.uint8)
    for start, end in intervals:
      lab[start:end + 1] = 1  # inclusive; numpy clips at the end
    labels.append(lab)
  all_labels, all_scores = np.concatenate(labels), np.concatenate([v[2] for v in videos])
  abnormal = [i for i, v in enumerate(videos) if v[3]]
  want = {"auc": roc_auc_score(all_labels, all_scores),
          "ap": average_precision_score(all_labels, all_scores),
          "auc_abnormal": roc_auc_score(np.concatenate([labels[i] for i in abnormal]),
                                        np.concatenate([videos[i][2] for i in abnormal]))}
  normal = np.concatenate([v[2] for v in videos if not v[3]])

  out_dir = tmp_path / "out"
  code, out, err = _run(capsys, ["--task", "localization", "--scores", str(scores),
                                 "--annotations", str(ann), "--format", fmt,
                                 "--out", str(out_dir)])
  assert code == 0, err
  assert out.splitlines()[-1] == (f"auc={want['auc']:.4f} ap={want['ap']:.4f} "
                                  f"auc_abnormal={want['auc_abnormal']:.4f}")
  report = json.loads((out_dir / "localization.json").read_text())
  for key, value in want.items():
    assert report[key] == pytest.approx(value, abs=1e-12), key
  assert report["false_alarm_rate"] == pytest.approx(np.mean(normal >= 0.5))
  assert (report["videos"], report["abnormal_videos"], report["frames"],
          report["anomalous_frames"]) == (len(videos), len(abnormal), len(all_labels),
                                          int(all_labels.sum()))
  rows = {r["video"]: r for r in report["per_video"]}
  for (name, _, s, intervals, _), lab in zip(videos, labels):
    row = rows[loc.video_stem(name)]
    assert (row["frames"], row["anomalous_frames"]) == (len(s), int(lab.sum()))
    assert row["mean_score"] == pytest.approx(s.mean())
    if 0 < lab.sum() < len(lab):
      assert row["auc"] == pytest.approx(roc_auc_score(lab, s), abs=1e-12)
    else:
      assert row["auc"] is None
  # The library reads both formats to the same inclusive intervals.
  listed = {loc.video_stem(name): iv for name, _, _, iv, is_listed in videos if is_listed}
  assert loc.read_annotations(ann, fmt) == listed


def test_a_threshold_and_undefined_metrics(tmp_path, capsys):
  """All videos normal: AUC and AP are undefined (nan, a warning), the false alarms count."""
  ann = tmp_path / "ann.txt"
  loc.write_ucf_annotations(ann, [("a.mp4", "Normal", []), ("b.mp4", "Normal", [])])
  scores = tmp_path / "scores.jsonl"
  scores.write_text('{"video": "a", "frame_scores": [0.1, 0.3, 0.8]}\n'
                    '{"video": "b.mp4", "frame_scores": [0.25, 0.2]}\n', encoding="utf-8")
  code, out, err = _run(capsys, ["--task=localization", "--scores", str(scores),
                                 "--annotations", str(ann), "--format", "ucf",
                                 "--threshold", "0.25", "--out", str(tmp_path / "o")])
  assert code == 0
  assert out.splitlines()[-1] == "auc=nan ap=nan auc_abnormal=nan"
  assert "undefined" in err
  report = json.loads((tmp_path / "o" / "localization.json").read_text())
  assert report["auc"] is None and report["false_alarm_rate"] == pytest.approx(3 / 5)


def test_write_ucf_annotations_refuses_what_the_format_cannot_hold(tmp_path):
  with pytest.raises(ValueError, match="holds two"):
    loc.write_ucf_annotations(tmp_path / "a.txt", [("v.mp4", "Arrest", [(0, 1), (3, 4),
                                                                        (6, 7)])])
  with pytest.raises(ValueError, match="starts after it ends"):
    loc.write_ucf_annotations(tmp_path / "a.txt", [("v.mp4", "Arrest", [(5, 4)])])


# ---------------------------------------------------------------------------------------------
# Bad input: one error line naming the file, the line and the video; exit 2.

UCF = ("Arrest001_x264.mp4  Arrest  3  6  -1  -1\n"
       "Fight002_x264.mp4  Fighting  0  1  8  20\n"
       "Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1\n")
XD = "Fight.Club.1999__#01-00-00_01-00-10_label_B1-0-0 3 7\n"
SCORES = [{"video": "/d/Arrest001_x264.mp4", "frame_scores": [0.1] * 10, "num_frames": 10},
          {"video": "Fight002_x264", "frame_scores": [0.2] * 10},
          {"video": "Normal_Videos_003_x264.mp4", "frame_scores": [0.3] * 8}]
XD_SCORES = [{"video": "Fight.Club.1999__#01-00-00_01-00-10_label_B1-0-0.mp4",
              "frame_scores": [0.5] * 10},
             {"video": "Other__#00-00-00_00-00-10_label_A.mp4", "frame_scores": [0.1] * 5}]


def _lines(records):
  return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


# (name, format, annotations text, scores lines, (file, line) named, video named)
ERRORS = [
    ("ucf field count", "ucf", UCF.replace("8  20", "8"), SCORES, ("ann", 2),
     "Fight002_x264.mp4"),
    ("ucf non-integer", "ucf", UCF.replace("3  6", "3  six"), SCORES, ("ann", 1),
     "Arrest001_x264.mp4"),
    ("ucf start after end", "ucf", UCF.replace("3  6", "6  3"), SCORES, ("ann", 1),
     "Arrest001_x264.mp4"),
    ("ucf -1 with a number", "ucf", UCF.replace("3  6", "3  -1"), SCORES, ("ann", 1),
     "Arrest001_x264.mp4"),
    ("ucf duplicate video", "ucf", UCF + "Arrest001_x264  Arrest  1  2  -1  -1\n", SCORES,
     ("ann", 4), "Arrest001_x264"),
    ("xd odd field count", "xd", XD.replace("3 7", "3 7 9"), XD_SCORES, ("ann", 1),
     "Fight.Club.1999"),
    ("xd non-integer", "xd", XD.replace("3 7", "3 7.5"), XD_SCORES, ("ann", 1),
     "Fight.Club.1999"),
    ("xd empty interval", "xd", XD.replace("3 7", "7 7"), XD_SCORES, ("ann", 1),
     "Fight.Club.1999"),
    ("scores not JSON", "ucf", UCF, [SCORES[0], '{"video": "Fight002_x264", ', SCORES[2]],
     ("scores", 2), None),
    ("scores without video", "ucf", UCF, [SCORES[0], {"frame_scores": [0.1]}, SCORES[2]],
     ("scores", 2), None),
    ("scores without frame_scores", "ucf", UCF,
     [SCORES[0], {"video": "Fight002_x264", "scores": [0.1]}, SCORES[2]], ("scores", 2),
     "Fight002_x264"),
    ("non-finite score", "ucf", UCF,
     [SCORES[0], '{"video": "Fight002_x264", "frame_scores": [0.1, NaN, 0.2]}', SCORES[2]],
     ("scores", 2), "Fight002_x264"),
    ("wrong num_frames", "ucf", UCF, [{**SCORES[0], "num_frames": 11}] + SCORES[1:],
     ("scores", 1), "Arrest001_x264"),
    ("duplicate scores video", "ucf", UCF, SCORES + [{**SCORES[1], "video": "x/Fight002_x264.avi"}],
     ("scores", 4), "Fight002_x264"),
    ("scores video not annotated", "ucf", UCF,
     SCORES + [{"video": "Robbery009_x264.mp4", "frame_scores": [0.1]}], ("scores", 4),
     "Robbery009_x264"),
    ("xd unlisted violent video", "xd", XD,
     XD_SCORES + [{"video": "Heat__#00-00-00_00-01-00_label_B2-0-0", "frame_scores": [0.1]}],
     ("scores", 3), "Heat__#00-00-00_00-01-00_label_B2-0-0"),
    ("annotated video not scored", "ucf", UCF, [SCORES[0], SCORES[2]], ("ann", 2),
     "Fight002_x264"),
    ("interval after the last frame", "ucf", UCF.replace("3  6", "12  14"), SCORES,
     ("scores", 1), "Arrest001_x264"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_input_is_one_error_line(tmp_path, capsys, case):
  _, fmt, ann_text, score_lines, (which, line), video = case
  ann = tmp_path / "annotations.txt"
  ann.write_text(ann_text, encoding="utf-8")
  scores = tmp_path / "scores.jsonl"
  scores.write_text(_lines(score_lines), encoding="utf-8")
  code, out, err = _run(capsys, ["--task", "localization", "--scores", str(scores),
                                 "--annotations", str(ann), "--format", fmt])
  where = f"{ann if which == 'ann' else scores}:{line}:"
  names = [where] + ([video] if video else [])
  assert_one_error_line(code, out, err, *names)


def test_the_late_interval_error_names_the_annotation_line_too(tmp_path, capsys):
  ann = tmp_path / "annotations.txt"
  ann.write_text(UCF.replace("8  20", "10  20"), encoding="utf-8")
  scores = tmp_path / "scores.jsonl"
  scores.write_text(_lines(SCORES), encoding="utf-8")
  code, out, err = _run(capsys, ["--task", "localization", "--scores", str(scores),
                                 "--annotations", str(ann), "--format", "ucf"])
  line = assert_one_error_line(code, out, err, f"{scores}:2:", f"{ann}:2", "Fight002_x264")
  assert "wrong length" in line


def test_a_missing_file_is_one_error_line(tmp_path, capsys):
  scores = tmp_path / "scores.jsonl"
  scores.write_text(_lines(SCORES), encoding="utf-8")
  missing = tmp_path / "nothing.txt"
  code, out, err = _run(capsys, ["--task", "localization", "--scores", str(scores),
                                 "--annotations", str(missing), "--format", "ucf"])
  assert_one_error_line(code, out, err, str(missing))


# ---------------------------------------------------------------------------------------------
# The dispatcher.


def test_help_lists_the_tasks(capsys):
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("usage:") and "--task" in out and "localization" in out


def test_the_generation_task_is_hawk_jax_eval(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--task", "generation", "--help"])
  assert e.value.code == 0
  assert "python -m hawk_jax.eval" in capsys.readouterr().out
  missing = tmp_path / "preds.jsonl"
  for argv in (["--predictions", str(missing), "--out", str(tmp_path / "o"), "--no_judge"],
               ["--task", "generation", "--predictions", str(missing), "--out",
                str(tmp_path / "o"), "--no_judge"]):
    code, out, err = _run(capsys, argv)
    assert_one_error_line(code, out, err, str(missing), "no such predictions file")


def test_the_localization_task_has_its_own_flags(capsys):
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--task", "localization", "--help"])
  assert e.value.code == 0
  assert "--annotations" in capsys.readouterr().out
  with pytest.raises(SystemExit) as e:
    evaluate.main(["--task", "localization", "--format", "ucf"])  # no --scores
  assert e.value.code == 2


@pytest.mark.parametrize("argv", [["--task", "detection"], ["--task=nope", "--out", "x"],
                                  ["--out", "x", "--task"]])
def test_an_unknown_or_missing_task_exits_2(capsys, argv):
  with pytest.raises(SystemExit) as e:
    evaluate.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("usage:") and "error: argument --task" in err
