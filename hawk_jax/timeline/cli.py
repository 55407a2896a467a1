"""Anomaly timelines of long videos, and live scoring of streams.

  python -m hawk_jax.timeline --checkpoint runs/stage2 VIDEO [VIDEO ...] --out DIR \
      [--window_s 4] [--stride_s 1] [--batch_size 8] [--describe] [--threshold 0.5]
  python -m hawk_jax.timeline --checkpoint runs/stage2 --stream SOURCE [--describe]

Files: each video is decoded once; every window of --window_s seconds (one every --stride_s)
is scored by the model as P(yes) / (P(yes) + P(no)) for the question "Is there any anomaly in
this video? Answer yes or no." (hawk_jax/timeline/scoring.py), in batches; window scores become
one score per source frame (the mean over the windows containing the frame) and anomalous
intervals (frames scoring >= --threshold). With one video, DIR gets timeline.json and
timeline.png; with several, DIR/<video name>/ gets them. DIR/timelines.jsonl always holds every
timeline, one per line: the --scores input of
`python -m hawk_jax.evaluate --task localization`. --describe also describes every window
scoring >= --describe_threshold. --annotations (UCF or XD format, --format) draws the
annotated anomalies into the pictures.

Streams: --stream takes a file that may still be being written, an RTSP/HTTP URL or a camera
index; windows are scored as their frames arrive and each prints one JSON line with its latency
(hawk_jax/timeline/stream.py); the last stderr line says whether scoring kept up with real
time. The stream ends when no frame has come for --idle_s seconds.

Bad input (a --checkpoint that is not a workdir, a missing or undecodable video, a bad flag
value) is one `error: ...` line and exit status 2.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Sequence

from etils import epath

from hawk_jax import console, distributed
from hawk_jax.eval import localization
from hawk_jax.infer import cli_flags
from hawk_jax.timeline import run as run_lib
from hawk_jax.timeline import stream as stream_lib
from hawk_jax.timeline.frames import FileSource
from hawk_jax.timeline.plot import draw_timeline
from hawk_jax.timeline.scoring import ANOMALY_QUESTION, AnomalyScorer

log = logging.getLogger("hawk_jax.timeline")


def _parse_args(argv):
  p = console.parser("python -m hawk_jax.timeline", __doc__, log_level="WARNING")
  p.add_argument("videos", nargs="*", help="video files (local or gs://)")
  p.add_argument("--stream", default=None,
                 help="score a live source instead: a growing file, a URL or a camera index")
  p.add_argument("--out", default=None, help="output folder (files; required without --stream)")
  cli_flags.add_model_args(p)
  p.add_argument("--window_s", type=float, default=4.0, help="window length in seconds")
  p.add_argument("--stride_s", type=float, default=1.0, help="seconds between window starts")
  p.add_argument("--batch_size", type=int, default=None,
                 help="windows per model call (default 8 for files, 1 for --stream)")
  p.add_argument("--threshold", type=float, default=0.5,
                 help="frame score at or above which a frame is anomalous (intervals)")
  p.add_argument("--min_gap_s", type=float, default=0.0,
                 help="merge intervals separated by less than this")
  p.add_argument("--min_len_s", type=float, default=0.0, help="drop shorter intervals")
  p.add_argument("--question", default=ANOMALY_QUESTION,
                 help="the yes/no question whose answer distribution is the score")
  p.add_argument("--describe", action="store_true",
                 help="also describe the windows scoring >= --describe_threshold")
  p.add_argument("--describe_threshold", type=float, default=0.5,
                 help="score from which --describe describes a window")
  p.add_argument("--annotations", default=None,
                 help="UCF/XD temporal annotations: draw the annotated anomalies (files)")
  p.add_argument("--format", choices=("ucf", "xd"), default="ucf",
                 help="format of --annotations")
  p.add_argument("--fps", type=float, default=None,
                 help="--stream: frame rate when the source does not report one")
  p.add_argument("--idle_s", type=float, default=5.0,
                 help="--stream: the stream has ended after this long without a new frame")
  cli_flags.add_generation_args(p)
  args = p.parse_args(argv)
  if args.stream is None and not args.videos:
    p.error("give VIDEO files or --stream SOURCE")
  if args.stream is not None and args.videos:
    p.error("give VIDEO files or --stream SOURCE, not both")
  if args.stream is None and args.out is None:
    p.error("--out is required for video files")
  if args.stream is not None and args.distributed:
    p.error("--stream runs in one process (no --distributed)")
  return args


def _check(args) -> None:
  """Cheap checks before any weight is read (ValueError names what is wrong)."""
  for name in ("window_s", "stride_s"):
    if not getattr(args, name) > 0:
      raise ValueError(f"--{name} must be positive, got {getattr(args, name)}")
  if args.batch_size is not None and args.batch_size < 1:
    raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
  for name in ("threshold", "describe_threshold"):
    if not 0.0 <= getattr(args, name) <= 1.0:
      raise ValueError(f"--{name} must be in [0, 1], got {getattr(args, name)}")
  if args.min_gap_s < 0 or args.min_len_s < 0:
    raise ValueError("--min_gap_s and --min_len_s must be >= 0")


def _names(paths: Sequence[str]) -> list[str]:
  """Output folder names: the file stems, made unique with _2, _3 ..."""
  seen: dict[str, int] = {}
  out = []
  for path in paths:
    stem = os.path.splitext(epath.Path(path).name)[0] or "video"
    seen[stem] = seen.get(stem, 0) + 1
    out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
  return out


def _truth(args) -> dict:
  if not args.annotations:
    return {}
  return localization.read_annotations(args.annotations, args.format)


def _options(args) -> run_lib.TimelineOptions:
  return run_lib.TimelineOptions(
      window_s=args.window_s, stride_s=args.stride_s, threshold=args.threshold,
      min_gap_s=args.min_gap_s, min_len_s=args.min_len_s, describe=args.describe,
      describe_threshold=args.describe_threshold)


def _interval_text(timeline: dict) -> str:
  ivs = timeline["intervals"]
  if not ivs:
    return "no interval above the threshold"
  shown = ", ".join(f"{iv['start_s']:.1f}-{iv['end_s']:.1f} s (peak {iv['peak']:.2f})"
                    for iv in ivs[:4])
  return f"{len(ivs)} interval(s): {shown}" + (" ..." if len(ivs) > 4 else "")


def _run_files(args, engine, generation, options) -> int:
  from tqdm import tqdm

  truth = _truth(args)
  scorer = AnomalyScorer(engine, args.question, args.batch_size or 8)
  out = epath.Path(args.out)
  names = _names(args.videos)
  main_process = distributed.is_main_process()
  lines = []
  for path, name in zip(args.videos, names):
    folder = out if len(args.videos) == 1 else out / name
    bar = tqdm(desc=name, unit="window", leave=False, disable=None if main_process else True)

    def on_plan(n, bar=bar):
      bar.total = n
      bar.refresh()

    timeline, thumbs = run_lib.video_timeline(scorer, path, options, generation,
                                              on_window=lambda _w, bar=bar: bar.update(),
                                              on_plan=on_plan)
    bar.close()
    lines.append(json.dumps(timeline))
    if not main_process:
      continue
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "timeline.json").write_text(json.dumps(timeline, indent=1) + "\n")
    stem = os.path.splitext(epath.Path(path).name)[0]
    fps = timeline["fps"]
    spans = [(s / fps, (e + 1) / fps) for s, e in truth.get(stem, [])]
    draw_timeline(timeline, thumbs, str(folder / "timeline.png"), truth=spans)
    best = max(timeline["windows"], key=lambda w: w["score"])
    print(f"{path}: {len(timeline['windows'])} windows over {timeline['duration_s']:.1f} s, "
          f"top score {best['score']:.3f} at {best['start_s']:.1f}-{best['end_s']:.1f} s; "
          f"{_interval_text(timeline)} -> {folder / 'timeline.json'}, timeline.png")
  if main_process:
    (out / "timelines.jsonl").write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} timeline(s) in {out / 'timelines.jsonl'}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  console.setup_logging(args.log_level)
  cli_flags.start(args)
  try:
    _check(args)
    cfg = cli_flags.check_checkpoint(args)
    generation = cli_flags.generation_options(cfg, args)
    options = _options(args)
    if args.stream is None:
      for path in args.videos:  # every video readable before the weights are read
        FileSource(path).close()
    else:
      source = stream_lib.open_source(args.stream, idle_s=args.idle_s, fps=args.fps)
    engine, _ = cli_flags.load_engine(args)
    if args.stream is None:
      return _run_files(args, engine, generation, options)
    scorer = AnomalyScorer(engine, args.question, args.batch_size or 1)
    try:
      summary = stream_lib.run_stream(scorer, source, options, generation)
    finally:
      source.close()
    print(stream_lib.summary_line(summary, lag_tolerance_s=max(1.0, args.stride_s)),
          file=sys.stderr)
    return 0
  except cli_flags.USER_ERRORS as e:
    return cli_flags.fail(e)
