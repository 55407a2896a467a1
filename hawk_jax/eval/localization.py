"""Frame-level anomaly localization: does a model's per-frame anomaly score single out the frames
a dataset's annotators marked? This is the number the video-anomaly field reports for UCF-Crime
and XD-Violence (ROC-AUC and AP over every test frame), which HAWK's text metrics (BLEU, the
judge: hawk_jax/eval/cli.py) do not give; it is computed here from the dataset's own annotation
file so that our numbers sit beside the published ones.

  python -m hawk_jax.evaluate --task localization --scores timeline.jsonl \
      --annotations Temporal_Anomaly_Annotation.txt --format ucf [--out DIR] [--threshold 0.5]
  python -m hawk_jax.evaluate --task localization --scores timeline.jsonl \
      --annotations annotations.txt --format xd

SCORES (JSON lines; blank lines skipped) holds one object per video: `video` (a path or a name)
and `frame_scores` (one float per source frame of the video), as `python -m hawk_jax.timeline`
writes them; a `num_frames` field, when there, must equal len(frame_scores). Other fields are
ignored. A scores video matches an annotated one by stem: the base name without a video-like
extension (`/data/Arrest001_x264.mp4`, `Arrest001_x264.mp4` and `Arrest001_x264` are one video;
a dotted XD name such as `A.Beautiful.Mind.2001__#00-25-20_00-26-10_label_B2-0-0` keeps its
dots, since only a short alphanumeric suffix like `.mp4` counts as an extension).

Annotation formats (whitespace-separated, one video a line, blank lines skipped):
  ucf  UCF-Crime's Temporal_Anomaly_Annotation.txt: `name class s1 e1 s2 e2`, -1 -1 for an
       absent event (`Arrest001_x264.mp4  Arrest  1185  1485  -1  -1`). A video with at least
       one event is abnormal (`Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1` is normal).
  xd   XD-Violence's annotations.txt: `name s1 e1 [s2 e2 ...]`, any number of pairs. The file
       lists the violent videos only: a line with a name alone is a normal video, and a scores
       video that the file does not list is normal when its name contains `label_A` (XD's
       naming of its non-violent videos); any other unlisted video is an error.

Frame convention, after reading how the field turns these files into frame labels:
  ucf  There is no consensus. The dataset's README says only that the file holds the test set's
       ground truth; the authors' MATLAB evaluation (WaqasSultani/AnomalyDetectionCVPR2018,
       Evaluate_Anomaly_Detector.m) sets GT(max(s,1):min(e,n)) = 1, i.e. reads the numbers as
       1-based frames, both ends included; RTFM's list/make_gt_ucf.py (tianyu0207/RTFM, whose
       gt-ucf.npy much later work reuses) marks 0-based frames s..e, both ends included;
       VadCLIP's list/make_gt_ucf.py marks gt[s:e] (0-based, end excluded). We follow RTFM:
       0-based source frames s..e, both ends anomalous. The readings differ by one frame at an
       interval's end, which moves a frame-level AUC in its fourth decimal at most.
  xd   The dataset authors' own list/make_gt.py (Roc-Ng/XDVioDet) marks gt_vec[s:e] = 1 for each
       pair: 0-based, end excluded. We follow it: frames s..e-1 are violent, so a pair needs
       s < e. `read_annotations` returns inclusive pairs for both formats ((s, e-1) for xd).
An interval that runs past the video's last frame is clipped to it (as the MATLAB evaluation
does); one that starts after the last frame is an error (the scores are of the wrong length, or
of another video).

Metrics (numpy only; scikit-learn is the tests' reference, never imported here):
  auc               ROC-AUC over the frames of all videos concatenated (the field's standard);
                    ties count half (Mann-Whitney), as sklearn.metrics.roc_auc_score.
  ap                average precision over the same frames, as sklearn's
                    average_precision_score: sum over distinct thresholds of (R_n - R_n-1) P_n.
  auc_abnormal      ROC-AUC over the frames of the abnormal videos only (as VAD-LLaMA reports).
  false_alarm_rate  the fraction of normal videos' frames scored >= --threshold.
A metric that is undefined (one class only: no anomalous frame, no normal one, no abnormal or
normal video) is NaN with a logged warning, printed `nan` (null in localization.json).

Output: a short table on stdout whose last line is `auc=... ap=... auc_abnormal=...`; with --out
also DIR/localization.json (every metric, the counts, and per video: frames, anomalous frames,
mean score, and its own ROC-AUC where the video has both classes). DIR may be gs://.

Bad input -- a malformed annotation line, a duplicate video, a scores line that is not JSON or
lacks `video`/`frame_scores`, a non-finite score, a length that disagrees with `num_frames`, a
video on one side only -- is one `error: FILE:LINE: VIDEO: why` line on stderr, exit status 2.
"""
from __future__ import annotations

import json
import logging
import math
import posixpath
import re
import sys
from typing import Iterable, Mapping, Sequence

import numpy as np
from etils import epath

from hawk_jax import console

log = logging.getLogger(__name__)

PROG = "python -m hawk_jax.evaluate --task localization"
FORMATS = ("ucf", "xd")
# XD-Violence names its non-violent videos `..._label_A`; its annotation file omits them.
XD_NORMAL_MARK = "label_A"
FRAME_CONVENTION = {
    "ucf": "0-based source frames s..e, both ends included (RTFM's make_gt_ucf.py)",
    "xd": "0-based source frames s..e-1, end excluded (XD-Violence's make_gt.py)",
}
# What counts as a file extension when matching names: a short alphanumeric suffix (.mp4, .avi,
# .mkv), not the tail of a dotted title.
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}")
_UCF_ABSENT = -1


class LocalizationError(ValueError):
  """Bad localization input; the message names the file, line and video."""


def video_stem(name: str) -> str:
  """The name a video is matched by: its base name less a video-like extension."""
  base = posixpath.basename(str(name).replace("\\", "/").rstrip("/"))
  root, ext = posixpath.splitext(base)
  return root if root and _EXTENSION.fullmatch(ext) else base


# ---------------------------------------------------------------------------------------------
# Annotation files.


def _text_lines(path, what: str) -> list[tuple[int, str]]:
  """(line number, text) of each non-blank line of a UTF-8 file (local or gs://)."""
  p = epath.Path(path)
  if not p.is_file():
    raise FileNotFoundError(f"{path}: no such {what} file")
  out = []
  for line_no, raw in enumerate(p.read_bytes().splitlines(), 1):
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise LocalizationError(f"{path}:{line_no}: not UTF-8 text (byte {e.start})") from None
    if line.strip():
      out.append((line_no, line))
  return out


def _frame_number(text: str, where: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise LocalizationError(f"{where}: {text!r} is not an integer frame number") from None


def _ucf_intervals(fields: list[str], where: str) -> list[tuple[int, int]]:
  if len(fields) != 6:
    raise LocalizationError(f"{where}: {len(fields)} fields; a UCF-Crime line has 6: "
                            "name class s1 e1 s2 e2 (-1 -1 for an absent event)")
  numbers = [_frame_number(f, where) for f in fields[2:]]
  intervals = []
  for start, end in zip(numbers[::2], numbers[1::2]):
    if start == _UCF_ABSENT and end == _UCF_ABSENT:
      continue
    if _UCF_ABSENT in (start, end):
      raise LocalizationError(f"{where}: interval {start} {end}: -1 (no event) must come as "
                              "-1 -1")
    intervals.append(_checked_interval(start, end, where))
  return intervals


def _xd_intervals(fields: list[str], where: str) -> list[tuple[int, int]]:
  numbers = [_frame_number(f, where) for f in fields[1:]]
  if len(numbers) % 2:
    raise LocalizationError(f"{where}: {len(numbers)} frame numbers; an XD-Violence line is "
                            "a name and start end pairs")
  intervals = []
  for start, end in zip(numbers[::2], numbers[1::2]):
    if start >= end:  # XD's end is excluded (its make_gt.py marks gt[s:e])
      raise LocalizationError(f"{where}: interval {start} {end} is empty or reversed (XD's "
                              "end frame is excluded: start < end)")
    intervals.append(_checked_interval(start, end - 1, where))
  return intervals


def _checked_interval(start: int, end: int, where: str) -> tuple[int, int]:
  if start < 0 or end < 0:
    raise LocalizationError(f"{where}: interval {start} {end} has a negative frame number")
  if start > end:
    raise LocalizationError(f"{where}: interval {start} {end} starts after it ends")
  return start, end


def _read_annotation_lines(path, fmt: str) -> dict[str, tuple[list[tuple[int, int]], int]]:
  """{stem: (inclusive intervals, line number)} of an annotation file."""
  if fmt not in FORMATS:
    raise ValueError(f"annotation format {fmt!r}: expected one of {FORMATS}")
  parse = _ucf_intervals if fmt == "ucf" else _xd_intervals
  out: dict[str, tuple[list[tuple[int, int]], int]] = {}
  for line_no, line in _text_lines(path, f"{fmt} annotations"):
    fields = line.split()
    stem = video_stem(fields[0])
    where = f"{path}:{line_no}: {fields[0]}"
    intervals = parse(fields, where)
    if stem in out:
      raise LocalizationError(f"{where}: duplicate video (also on line {out[stem][1]})")
    out[stem] = (intervals, line_no)
  return out


def read_annotations(path, fmt: str) -> dict[str, list[tuple[int, int]]]:
  """{video stem: [(start, end), ...]} of a UCF-Crime (`fmt="ucf"`) or XD-Violence ("xd")
  annotation file, local or gs://: 0-based frames, both ends included, in either format (an XD
  pair s e becomes (s, e - 1); see the module docstring). A normal video maps to []. XD's
  unlisted `label_A` videos are not in the result. A malformed line or a duplicate video is a
  LocalizationError naming FILE:LINE and the video."""
  return {stem: intervals for stem, (intervals, _) in _read_annotation_lines(path, fmt).items()}


def write_ucf_annotations(path, rows: Iterable[tuple[str, str, Sequence[tuple[int, int]]]]
                          ) -> None:
  """Writes a UCF-Crime Temporal_Anomaly_Annotation.txt (local or gs://) from rows of
  (video name, class, intervals): inclusive 0-based (start, end) pairs, at most two (the
  format's limit), [] for a normal video. `read_annotations(path, "ucf")` reads them back."""
  lines = []
  for name, label, intervals in rows:
    for text, what in ((name, "video name"), (label, "class")):
      if not text or len(str(text).split()) != 1:
        raise ValueError(f"{what} {text!r}: must be one non-empty word")
    intervals = [tuple(int(v) for v in interval) for interval in intervals]
    if len(intervals) > 2:
      raise ValueError(f"{name}: {len(intervals)} intervals; the UCF-Crime format holds two")
    for start, end in intervals:
      _checked_interval(start, end, str(name))
    numbers = [v for interval in intervals for v in interval]
    numbers += [_UCF_ABSENT] * (4 - len(numbers))
    lines.append("  ".join([str(name), str(label)] + [str(v) for v in numbers]))
  epath.Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Scores.


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_scores(path) -> list[dict]:
  """The videos of a SCORES.jsonl file (local or gs://), in file order: dicts of `video` (as
  written), `stem`, `frame_scores` (float64 array), `num_frames` (int or None) and `line`. A bad
  line (not JSON, no `video` or `frame_scores`, a non-finite score, a length that disagrees with
  `num_frames`) or a duplicate video is a LocalizationError naming FILE:LINE and the video."""
  records: list[dict] = []
  seen: dict[str, int] = {}
  for line_no, line in _text_lines(path, "scores"):
    where = f"{path}:{line_no}"
    try:
      obj = json.loads(line)
    except ValueError as e:
      raise LocalizationError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
      raise LocalizationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    video = obj.get("video")
    if not isinstance(video, str) or not video.strip():
      raise LocalizationError(f"{where}: no 'video' (a path or name)")
    where = f"{where}: {video}"
    values = obj.get("frame_scores")
    if values is None:
      raise LocalizationError(f"{where}: no 'frame_scores' (one score per frame)")
    if not isinstance(values, list) or not all(_number(v) for v in values):
      raise LocalizationError(f"{where}: 'frame_scores' must be a list of numbers, one per "
                              "frame")
    if not values:
      raise LocalizationError(f"{where}: 'frame_scores' is empty")
    scores = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
      raise LocalizationError(f"{where}: frame {bad[0]} has the non-finite score "
                              f"{values[bad[0]]} ({bad.size} non-finite in all)")
    num_frames = obj.get("num_frames")
    if num_frames is not None:
      if not isinstance(num_frames, int) or isinstance(num_frames, bool):
        raise LocalizationError(f"{where}: 'num_frames' {num_frames!r} is not an integer")
      if num_frames != len(scores):
        raise LocalizationError(f"{where}: {len(scores)} frame scores for num_frames="
                                f"{num_frames}: the scores are of the wrong length")
    stem = video_stem(video)
    if stem in seen:
      raise LocalizationError(f"{where}: duplicate video {stem} (also on line {seen[stem]})")
    seen[stem] = line_no
    records.append({"video": video, "stem": stem, "frame_scores": scores,
                    "num_frames": num_frames, "line": line_no})
  if not records:
    raise LocalizationError(f"{path}: no scores (the file is empty or blank)")
  return records


# ---------------------------------------------------------------------------------------------
# Labels and metrics.


def frame_labels(num_frames: int, intervals: Iterable[tuple[int, int]]) -> np.ndarray:
  """uint8 labels of a `num_frames`-frame video: 1 on frames start..end (0-based, both ends
  included) of each interval, an end past the last frame clipped to it. An interval starting
  after the last frame is a ValueError (the scores are of the wrong length or video)."""
  if num_frames <= 0:
    raise ValueError(f"a video of {num_frames} frames")
  labels = np.zeros(num_frames, np.uint8)
  for start, end in intervals:
    start, end = int(start), int(end)
    if start < 0 or start > end:
      raise ValueError(f"interval {start}-{end}: expected 0 <= start <= end")
    if start >= num_frames:
      raise ValueError(f"interval {start}-{end} starts after the last frame ({num_frames - 1}) "
                       f"of a {num_frames}-frame video: the scores are of the wrong length or "
                       "of another video")
    labels[start:min(end, num_frames - 1) + 1] = 1
  return labels


def _per_score_counts(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  """(positives, negatives) at each distinct score, scores ascending."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim != 1 or labels.shape != scores.shape:
    raise ValueError(f"labels {labels.shape} and scores {scores.shape}: expected two 1-D "
                     "arrays of one length")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores must be finite")
  positive = labels.astype(bool)
  if not np.array_equal(positive, labels):
    raise ValueError("labels must be 0 or 1")
  values, inverse = np.unique(scores, return_inverse=True)
  inverse = inverse.reshape(-1)
  total = np.bincount(inverse, minlength=len(values))
  pos = np.bincount(inverse[positive], minlength=len(values))
  return pos.astype(np.float64), (total - pos).astype(np.float64)


def _auc(labels, scores) -> float | None:
  pos, neg = _per_score_counts(labels, scores)
  n_pos, n_neg = pos.sum(), neg.sum()
  if not n_pos or not n_neg:
    return None
  # Mann-Whitney: each positive beats the negatives scored below it, and ties with half of
  # those scored the same.
  neg_below = np.cumsum(neg) - neg
  return float(np.sum(pos * (neg_below + 0.5 * neg)) / (n_pos * n_neg))


def _ap(labels, scores) -> float | None:
  pos, neg = _per_score_counts(labels, scores)
  n_pos = pos.sum()
  if not n_pos:
    return None
  # Thresholds from the highest score down: recall rises by pos/n_pos at each, weighted by the
  # precision there (ties form one threshold).
  pos, neg = pos[::-1], neg[::-1]
  true_pos = np.cumsum(pos)
  precision = true_pos / (true_pos + np.cumsum(neg))
  return float(np.sum(pos / n_pos * precision))


def _or_nan(value: float | None, what: str, why: str) -> float:
  if value is None:
    log.warning("%s is undefined (%s): NaN", what, why)
    return math.nan
  return value


def roc_auc(labels, scores) -> float:
  """Area under the ROC curve of `scores` for the 0/1 `labels` (1-D arrays of one length),
  ties counting half: sklearn.metrics.roc_auc_score's value. NaN, with a logged warning, when
  only one class is present."""
  return _or_nan(_auc(labels, scores), "ROC-AUC", "only one class among the labels")


def average_precision(labels, scores) -> float:
  """Average precision of `scores` for the 0/1 `labels`, step-wise over the distinct scores as
  thresholds: sum of (R_n - R_n-1) P_n, sklearn.metrics.average_precision_score's value. NaN,
  with a logged warning, when no label is 1."""
  return _or_nan(_ap(labels, scores), "average precision", "no positive label")


def localization_metrics(scores: Mapping[str, np.ndarray],
                         annotations: Mapping[str, Sequence[tuple[int, int]]],
                         threshold: float = 0.5) -> dict:
  """The frame-level metrics of per-frame `scores` ({video: 1-D array}) against `annotations`
  ({video: inclusive 0-based intervals, [] for a normal video}; as `read_annotations` returns):
  auc, ap, auc_abnormal, false_alarm_rate (normal videos' frames scored >= `threshold`), the
  counts videos, abnormal_videos, frames, anomalous_frames, and per_video rows (video, frames,
  anomalous_frames, mean_score, auc or None). Both mappings must hold the same videos; a video on
  one side only, or an interval starting after its video's last frame, is a ValueError naming
  the video. Undefined metrics are NaN with a logged warning."""
  only_scored = [v for v in scores if v not in annotations]
  only_annotated = [v for v in annotations if v not in scores]
  if only_scored:
    raise ValueError(f"{only_scored[0]}: scored but not annotated ({len(only_scored)} such "
                     "video(s))")
  if only_annotated:
    raise ValueError(f"{only_annotated[0]}: annotated but not scored ({len(only_annotated)} "
                     "such video(s))")
  if not scores:
    raise ValueError("no video to score")
  rows, all_labels, all_scores = [], [], []
  abnormal_labels, abnormal_scores, normal_scores = [], [], []
  for video, values in scores.items():
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not values.size or not np.all(np.isfinite(values)):
      raise ValueError(f"{video}: expected a non-empty 1-D array of finite frame scores")
    intervals = list(annotations[video])
    try:
      labels = frame_labels(len(values), intervals)
    except ValueError as e:
      raise ValueError(f"{video}: {e}") from None
    rows.append({"video": video, "frames": int(len(values)),
                 "anomalous_frames": int(labels.sum()), "mean_score": float(values.mean()),
                 "auc": _auc(labels, values)})
    all_labels.append(labels)
    all_scores.append(values)
    if intervals:
      abnormal_labels.append(labels)
      abnormal_scores.append(values)
    else:
      normal_scores.append(values)
  labels, values = np.concatenate(all_labels), np.concatenate(all_scores)
  anomalous = int(labels.sum())
  auc = _or_nan(_auc(labels, values), "auc (ROC-AUC over all frames)",
                "no anomalous frame" if not anomalous else "no normal frame")
  ap = _or_nan(_ap(labels, values), "ap (average precision over all frames)",
               "no anomalous frame")
  if abnormal_labels:
    auc_abnormal = _or_nan(_auc(np.concatenate(abnormal_labels), np.concatenate(abnormal_scores)),
                           "auc_abnormal (ROC-AUC over the abnormal videos' frames)",
                           "their frames are all anomalous")
  else:
    auc_abnormal = _or_nan(None, "auc_abnormal", "no abnormal video")
  if normal_scores:
    normal = np.concatenate(normal_scores)
    false_alarm_rate = float(np.mean(normal >= threshold))
  else:
    false_alarm_rate = _or_nan(None, "false_alarm_rate", "no normal video")
  return {"auc": auc, "ap": ap, "auc_abnormal": auc_abnormal,
          "false_alarm_rate": false_alarm_rate, "threshold": float(threshold),
          "videos": len(rows), "abnormal_videos": len(abnormal_labels),
          "frames": int(len(labels)), "anomalous_frames": anomalous, "per_video": rows}


# ---------------------------------------------------------------------------------------------
# Command line.


def _match(records: list[dict], annotated: dict, args) -> tuple[dict, dict]:
  """({stem: scores}, {stem: intervals}) of the scores and annotation files, every cross-file
  problem named by FILE:LINE and video."""
  scores, annotations = {}, {}
  for r in records:
    where = f"{args.scores}:{r['line']}: {r['video']}"
    if r["stem"] in annotated:
      intervals, ann_line = annotated[r["stem"]]
    elif args.format == "xd" and XD_NORMAL_MARK in r["stem"]:
      intervals, ann_line = [], None  # XD lists violent videos only; label_A is normal
    else:
      hint = (f" (XD lists violent videos only, and the name has no {XD_NORMAL_MARK})"
              if args.format == "xd" else "")
      raise LocalizationError(f"{where}: video {r['stem']} is not in {args.annotations}{hint}")
    n = len(r["frame_scores"])
    late = [s for s, _ in intervals if s >= n]
    if late:
      raise LocalizationError(
          f"{where}: an annotated interval ({args.annotations}:{ann_line}) starts at frame "
          f"{late[0]}, after the video's last frame ({n - 1}): the scores are of the wrong "
          "length or of another video")
    scores[r["stem"]] = r["frame_scores"]
    annotations[r["stem"]] = intervals
  missing = [(line, stem) for stem, (_, line) in annotated.items() if stem not in scores]
  if missing:
    line, stem = min(missing)
    more = f" ({len(missing) - 1} more annotated video(s) unscored)" if len(missing) > 1 else ""
    raise LocalizationError(f"{args.annotations}:{line}: {stem}: annotated but has no scores "
                            f"in {args.scores}{more}")
  return scores, annotations


def _json_value(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_value(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_json_value(v) for v in value]
  return value


def summary_table(metrics: Mapping, fmt: str) -> str:
  """The readable table printed above the final `auc=... ap=... auc_abnormal=...` line."""
  m = metrics
  normal_videos = m["videos"] - m["abnormal_videos"]
  rows = [
      ("ROC-AUC, all frames", m["auc"]),
      ("AP, all frames", m["ap"]),
      ("ROC-AUC, abnormal videos' frames", m["auc_abnormal"]),
      (f"false alarms, normal frames >= {m['threshold']:g}", m["false_alarm_rate"]),
  ]
  width = max(len(name) for name, _ in rows)
  lines = [f"frame-level localization ({fmt}): {m['videos']} videos ({m['abnormal_videos']} "
           f"abnormal, {normal_videos} normal), {m['frames']} frames ({m['anomalous_frames']} "
           "anomalous)"]
  lines += [f"  {name:<{width}}  {value:.4f}" for name, value in rows]
  return "\n".join(lines)


def final_line(metrics: Mapping) -> str:
  return (f"auc={metrics['auc']:.4f} ap={metrics['ap']:.4f} "
          f"auc_abnormal={metrics['auc_abnormal']:.4f}")


def _parse_args(argv):
  parser = console.parser(PROG, __doc__, log_level="WARNING")
  parser.add_argument("--scores", required=True,
                      help="JSON lines, one object per video: video, frame_scores (one per "
                           "source frame), optional num_frames (python -m hawk_jax.timeline)")
  parser.add_argument("--annotations", required=True,
                      help="the dataset's temporal annotation file (see --format)")
  parser.add_argument("--format", required=True, choices=FORMATS,
                      help="ucf: Temporal_Anomaly_Annotation.txt (name class s1 e1 s2 e2); "
                           "xd: XD-Violence annotations.txt (name s1 e1 [s2 e2 ...])")
  parser.add_argument("--out", default=None,
                      help="directory (local or gs://) for localization.json")
  parser.add_argument("--threshold", type=float, default=0.5,
                      help="score at or above which a normal video's frame is a false alarm")
  args = parser.parse_args(argv)
  if not math.isfinite(args.threshold):
    parser.error(f"--threshold {args.threshold}: expected a finite number")
  return args


def _fail(error: BaseException) -> int:
  print(f"error: {' '.join(str(error).split()) or type(error).__name__}", file=sys.stderr)
  return 2


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  console.setup_logging(args.log_level)
  try:
    annotated = _read_annotation_lines(args.annotations, args.format)
    records = read_scores(args.scores)
    scores, annotations = _match(records, annotated, args)
    metrics = localization_metrics(scores, annotations, args.threshold)
  except (OSError, ValueError) as e:
    return _fail(e)
  if args.out:
    out = epath.Path(args.out)
    report = {"task": "localization", "format": args.format, "scores": str(args.scores),
              "annotations": str(args.annotations),
              "frame_convention": FRAME_CONVENTION[args.format], **metrics}
    try:
      out.mkdir(parents=True, exist_ok=True)
      (out / "localization.json").write_text(
          json.dumps(_json_value(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as e:
      return _fail(e)
    print(f"wrote {out / 'localization.json'}", file=sys.stderr)
  print(summary_table(metrics, args.format))
  print(final_line(metrics))
  return 0


if __name__ == "__main__":
  sys.exit(main())
