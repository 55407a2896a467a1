"""Pre-extraction CLI: videos + annotations -> TFDS ArrayRecord datasets (docs/model.md, "Data").

  python -m data_pipelines.extract --source hawk --annotations all_videos_train.json \
      [--test_annotations all_videos_test.json] --videos_dir Videos --out_dir /data/hawk
  python -m data_pipelines.extract --source captions --annotations webvid.csv \
      --videos_dir videos --out_dir /data/captions

Three steps: (1) read and validate the annotations; (2) decode, sample and compute motion for
each distinct video in a process pool (tqdm progress), each result cached as a shard in
`{out_dir}/cache`; (3) write the TFDS dataset
`{out_dir}/{hawk_anomaly|video_captions}/{config}/1.0.0` from the shards. A rerun after an
interruption reuses every finished shard, and reuses the written dataset when it already holds
exactly the good entries. Bad inputs are skipped, named with their reason on stdout and in
`{out_dir}/skipped.jsonl`, and counted; the summary ends with `ok=<int> skipped=<int>`. Videos
with fewer frames than --num_frames are named too (`short ...` lines): kept with repeated
frames (--short_policy repeat), kept with fewer frames (released) or skipped (skip). Before any
video is decoded the job checks that it can write (a probe file in --out_dir and its cache, or
for a gs:// --out_dir in the local staging folder) and that the free space there holds a
rough estimate of what it writes, and stops with exit status 2 naming the folder if not.
--out_dir, --videos_dir and the annotation files may be gs:// (etils.epath): videos are copied
to a local temp file to decode, shards are cached on gs://, and the dataset is written locally
and then uploaded (ArrayRecord writes local files only).
Exit status: 0 when the job finished with at least one good sample, 1 when no sample was
good, 2 for unusable arguments or annotation files.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Sequence

from data_pipelines import annotations as ann_lib
from data_pipelines import builders, clip_cache
from hawk_jax import console

log = logging.getLogger("data_pipelines.extract")


@dataclasses.dataclass
class Summary:
  ok: dict[str, int]                       # split -> examples written
  skipped: list[dict[str, str]]            # one per skipped entry
  dataset_dir: str | None
  computed: int = 0                        # videos extracted in this run
  reused: int = 0                          # videos whose shard already existed
  bytes_per_sample: float = 0.0
  seconds: float = 0.0
  # Entries whose video has fewer real frames than asked (short_videos).
  short: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def num_ok(self) -> int:
    return sum(self.ok.values())


def make_parser(prog: str = "python -m data_pipelines.extract",
                description: str = __doc__) -> argparse.ArgumentParser:
  p = console.parser(prog, description)
  p.add_argument("--source", choices=("hawk", "captions"), required=True,
                 help="annotation format: HAWK JSON (descriptions + QA) or a caption corpus")
  p.add_argument("--annotations", required=True,
                 help="HAWK JSON list; or WebVid CSV / folder of CSVs / JSON lines")
  p.add_argument("--test_annotations", default=None,
                 help="test split file; hawk without it: seeded 90/10 split of --annotations")
  p.add_argument("--videos_dir", required=True,
                 help="folder the annotations' video paths are relative to")
  p.add_argument("--out_dir", required=True,
                 help="where the TFDS dataset, the clip cache and skipped.jsonl go (or gs://)")
  p.add_argument("--num_frames", type=int, default=32, help="frames sampled per video (T)")
  p.add_argument("--size", type=int, default=224, help="frame side in pixels")
  p.add_argument("--motion", default="flow_mask", choices=("flow_mask", "flow_soft",
                                                           "frame_diff"),
                 help="motion mode (README, Data): released flow_mask, paper flow_soft")
  p.add_argument("--sampling", default="uniform", choices=("uniform", "headtail", "jitter"),
                 help="which frames are sampled")
  p.add_argument("--short_policy", default="repeat", choices=("repeat", "released", "skip"),
                 help="a video shorter than --num_frames: repeat frames, keep its frames as "
                      "released, or skip it (each is named in the summary)")
  p.add_argument("--seed", type=int, default=0, help="seed of the random samplings")
  p.add_argument("--split_seed", type=int, default=42, help="seed of the 90/10 split")
  p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                 help="decode processes; 0 decodes in this process")
  p.add_argument("--overwrite", action="store_true",
                 help="rewrite the TFDS dataset even if it is up to date (shards are reused)")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  return make_parser().parse_args(argv)


def _init_worker():
  import cv2
  cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _process(args):
  video_path, options, cache_dir = args
  return video_path, clip_cache.process_video(video_path, options, cache_dir)


def extract_videos(video_paths: list[str], options: clip_cache.ExtractOptions, cache_dir: str,
                   workers: int, progress: bool = True) -> dict[str, dict[str, Any]]:
  """video path -> process_video result, for every path (computed in a process pool)."""
  from tqdm import tqdm
  jobs = [(v, options, cache_dir) for v in video_paths]
  bar = tqdm(total=len(jobs), desc="videos", unit="video", disable=not progress,
             file=sys.stderr)
  results = {}
  if workers <= 0:
    for job in jobs:
      path, result = _process(job)
      results[path] = result
      bar.update()
  else:
    # spawn: forked children of a process that already ran OpenCV/TFDS threads can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                                initializer=_init_worker) as pool:
      futures = [pool.submit(_process, job) for job in jobs]
      for future in concurrent.futures.as_completed(futures):
        path, result = future.result()
        results[path] = result
        bar.update()
  bar.close()
  return results


def _write_dataset(builder_cls, splits, options, out_dir, cache_dir, overwrite: bool,
                   beam_options=None):
  """(builder, up_to_date). beam_options (PipelineOptions): write on Beam (beam_extract.py),
  so both routes share one rule for when a written dataset is reused."""
  import tensorflow_datasets as tfds
  builder = builder_cls(data_dir=out_dir, config=builders.VideoConfig.from_options(options),
                        splits=splits, cache_dir=cache_dir, beam=beam_options is not None)
  up_to_date = builder.is_prepared() and not overwrite and all(
      s in builder.info.splits and builder.info.splits[s].num_examples == len(entries)
      for s, entries in splits.items()) and set(builder.info.splits) == set(splits)
  if not up_to_date and beam_options is None and "://" in os.fspath(out_dir):
    builder = _write_staged(builder_cls, splits, options, out_dir, cache_dir)
  elif not up_to_date:
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if builder.is_prepared()
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    _prepare(builder, tfds.download.DownloadConfig(
        download_mode=mode, try_download_gcs=False, beam_options=beam_options))
  return builder, up_to_date


def _prepare(builder, download_config) -> None:
  """TFDS's download_and_prepare without its console output ("Downloading and preparing
  dataset Unknown size ...": nothing is downloaded; its split and shuffle bars): the summary
  says what was written. At --log_level DEBUG the text goes to the log."""
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    builder.download_and_prepare(download_config=download_config)
  if printed.getvalue().strip():
    log.debug("TFDS: %s", printed.getvalue().strip())


def _write_staged(builder_cls, splits, options, out_dir, cache_dir):
  """Writes the dataset into a local staging folder and uploads it into `out_dir` (gs://), as
  ArrayRecord's writer opens local files only (it fails with "open() failed: No such file or
  directory" on a gs:// path). A dataset written before is removed first, and the shards are
  uploaded before the metadata files TFDS looks for (dataset_info.json last), so a reader never
  sees a dataset whose shards are not all there. Needs local disk for one copy of the dataset.
  Returns the builder of the uploaded dataset."""
  import tensorflow_datasets as tfds
  from etils import epath
  config = builders.VideoConfig.from_options(options)
  with tempfile.TemporaryDirectory(prefix="hawk_extract_") as stage:
    local = builder_cls(data_dir=stage, config=config, splits=splits, cache_dir=cache_dir)
    _prepare(local, tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
        try_download_gcs=False))
    src = os.fspath(local.data_path)
    dst = epath.Path(out_dir) / os.path.relpath(src, stage)
    if dst.exists():
      dst.rmtree()
    dst.mkdir(parents=True, exist_ok=True)
    names = sorted(os.listdir(src), key=lambda n: (".array_record-" not in n,
                                                   n == "dataset_info.json", n))
    for name in names:
      epath.Path(os.path.join(src, name)).copy(dst / name, overwrite=True)
    skipped = local.skipped
  remote = builder_cls(data_dir=out_dir, config=config, splits=splits, cache_dir=cache_dir)
  remote.skipped = skipped
  return remote


def options_from_args(args: argparse.Namespace) -> clip_cache.ExtractOptions:
  return clip_cache.ExtractOptions(
      num_frames=args.num_frames, size=args.size, motion_mode=args.motion,
      sampling=args.sampling, seed=args.seed, short_policy=args.short_policy)


def read_inputs(args: argparse.Namespace):
  """(split -> entries, skipped list) after checking the folders and reading annotations."""
  from etils import epath
  if not epath.Path(args.videos_dir).is_dir():
    raise ann_lib.AnnotationError(f"{args.videos_dir}: videos folder not found")
  splits, problems = builders.read_splits(args.source, args.annotations, args.videos_dir,
                                          args.test_annotations, split_seed=args.split_seed)
  return splits, [p.to_json(split) for split, p in problems]


def partition(splits, statuses, skipped):
  """Good entries per split (empty splits dropped) and names of the empty splits; entries
  whose video was skipped are appended to `skipped`."""
  good = {}
  for split, entries in splits.items():
    good[split] = []
    for e in entries:
      status = statuses[e.video_path]
      if status["status"] in ("cached", "done"):
        good[split].append(e)
      else:
        skipped.append(ann_lib.Problem(e.where, e.video, status["reason"]).to_json(split))
  empty = [s for s, entries in good.items() if not entries]
  return {s: entries for s, entries in good.items() if entries}, empty


def short_videos(splits, statuses, options: clip_cache.ExtractOptions) -> list[dict[str, Any]]:
  """One dict per entry whose video has 2 <= real frames < num_frames (fewer than 2 is a bad
  video, named as skipped): split, where, video, frames (real), asked, and what was done —
  "repeated", "released" (kept with its fewer frames) or "skipped" (short_policy skip)."""
  short = []
  for split, entries in splits.items():
    for e in entries:
      status = statuses[e.video_path]
      frames = status.get("num_source_frames")
      if frames is None or not 2 <= frames < options.num_frames:
        continue
      action = ("skipped" if status["status"] == "skipped" else
                "released" if options.short_policy == "released" else "repeated")
      short.append({"split": split, "where": e.where, "video": e.video, "frames": frames,
                    "asked": options.num_frames, "action": action})
  return short


# Rough size of one sampled frame in a record or a cache shard (its JPEG plus its PNG motion
# weight): about 0.4 byte per pixel (32 frames at 224 px make ~0.6 MB, data_pipelines/
# tower_cache.py) plus the two images' headers. Only good enough to catch a disk that clearly
# cannot take the job.
_BYTES_PER_PIXEL, _BYTES_PER_FRAME = 0.4, 1000


def estimate_bytes_per_sample(options: clip_cache.ExtractOptions) -> float:
  return options.num_frames * (options.size ** 2 * _BYTES_PER_PIXEL + _BYTES_PER_FRAME)


def _size(n: float) -> str:
  unit, scale = next((u, s) for u, s in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1))
                     if n >= s or s == 1)
  return f"{n / scale:.1f} {unit}"


def check_output(out_dir: str, num_videos: int, options: clip_cache.ExtractOptions) -> None:
  """Fails before any video is decoded when the job cannot write its output: a probe file in
  out_dir and its cache folder (for a gs:// out_dir, in the local folder the dataset is staged
  in, tempfile.gettempdir(); gs:// itself reports its own errors), then the free space there
  against a rough estimate: a shard per video not cached yet plus the dataset (for gs://, the
  staged dataset only). Raises ValueError naming the folder."""
  out_dir = os.fspath(out_dir)
  remote = "://" in out_dir
  folders = [tempfile.gettempdir()] if remote else [out_dir, os.path.join(out_dir, "cache")]
  for folder in folders:
    try:
      os.makedirs(folder, exist_ok=True)
      fd, probe = tempfile.mkstemp(prefix=".write_probe-", dir=folder)
      os.close(fd)
      os.remove(probe)
    except OSError as e:
      raise ValueError(f"{folder}: cannot write there ({e.strerror or e}); make it writable or "
                       f"pick another --out_dir") from e
  per_sample = estimate_bytes_per_sample(options)
  if remote:
    needed, what = per_sample * num_videos, "the dataset staged before its upload"
  else:
    cached = sum(n.endswith(".npz") for n in os.listdir(folders[1]))
    needed = per_sample * (max(num_videos - cached, 0) + num_videos)
    what = f"a cache shard per video not cached yet ({cached} are) plus the dataset"
  free = shutil.disk_usage(folders[0]).free
  if needed > free:
    raise ValueError(f"{folders[0]}: not enough free space: about {_size(needed)} needed "
                     f"({num_videos} videos x ~{_size(per_sample)} per sample at --num_frames "
                     f"{options.num_frames} --size {options.size}; {what}), {_size(free)} free")


def finish(summary: Summary, builder, good, empty, out_dir) -> Summary:
  """Fills the counts and sizes from the written dataset and writes skipped.jsonl."""
  from etils import epath
  if builder is not None:
    summary.skipped += builder.skipped  # only if a shard went bad between steps 2 and 3
    summary.ok = {s: builder.info.splits[s].num_examples for s in good}
    summary.dataset_dir = os.fspath(builder.data_path)
    data_bytes = sum(f.stat().length for f in epath.Path(builder.data_path).iterdir()
                     if ".array_record-" in f.name)
    summary.bytes_per_sample = data_bytes / max(summary.num_ok, 1)
  for s in empty:
    summary.ok[s] = 0
  (epath.Path(out_dir) / "skipped.jsonl").write_text(
      "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in summary.skipped))
  return summary


def run(args: argparse.Namespace) -> Summary:
  from etils import epath
  start = time.time()
  options = options_from_args(args)
  splits, skipped = read_inputs(args)
  videos = sorted({e.video_path for entries in splits.values() for e in entries})
  check_output(args.out_dir, len(videos), options)
  out_dir = epath.Path(args.out_dir)
  cache_dir = out_dir / "cache"
  cache_dir.mkdir(parents=True, exist_ok=True)

  statuses = extract_videos(videos, options, os.fspath(cache_dir), args.workers,
                            progress=not args.no_progress)
  good, empty = partition(splits, statuses, skipped)
  summary = Summary(ok={}, skipped=skipped, dataset_dir=None,
                    computed=sum(r["status"] == "done" for r in statuses.values()),
                    reused=sum(r["status"] == "cached" for r in statuses.values()),
                    short=short_videos(splits, statuses, options))
  builder = None
  if good:
    builder, _ = _write_dataset(builders.BUILDERS[args.source], good, options,
                                os.fspath(out_dir), os.fspath(cache_dir), args.overwrite)
  finish(summary, builder, good, empty, out_dir)
  summary.seconds = time.time() - start
  return summary


def format_summary(summary: Summary) -> str:
  lines = []
  for s in summary.skipped:
    video = f" ({s['video']})" if s["video"] else ""
    lines.append(f"skipped [{s['split']}] {s['where']}{video}: {s['reason']}")
  for s in summary.short:
    done = {"repeated": "kept with repeated frames",
            "released": f"kept with its {s['frames']} frames (--short_policy released)",
            "skipped": "skipped (--short_policy skip)"}[s["action"]]
    lines.append(f"short [{s['split']}] {s['where']} ({s['video']}): {s['frames']} real frames, "
                 f"{s['asked']} asked: {done}")
  lines.append(f"videos: {summary.computed} extracted, {summary.reused} reused from cache")
  if summary.dataset_dir:
    lines.append(f"dataset: {summary.dataset_dir}")
    lines.append(f"record size: {summary.bytes_per_sample / 1e6:.3f} MB per sample")
  lines.append("splits: " + ", ".join(f"{s}={n}" for s, n in sorted(summary.ok.items())))
  lines.append(f"time: {summary.seconds:.1f} s")
  lines.append(f"ok={summary.num_ok} skipped={len(summary.skipped)}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  console.setup_logging(args.log_level)
  try:
    summary = run(args)
  except (ann_lib.AnnotationError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_summary(summary), flush=True)
  return 0 if summary.num_ok > 0 else 1


if __name__ == "__main__":
  sys.exit(main())
