"""Pre-extraction on Apache Beam (the TFDS Beam route), for corpora too big for one machine.

  python -m data_pipelines.beam_extract --source captions --annotations gs://b/webvid.csv \
      --videos_dir gs://b/videos --out_dir gs://b/hawk_data --runner DataflowRunner \
      -- --project=P --region=R --temp_location=gs://b/tmp --setup_file=./setup.py

Same arguments as data_pipelines.extract (--workers and --no_progress are unused: Beam decides
the parallelism), plus --runner; anything after `--` goes verbatim into
`PipelineOptions([...])` (e.g. `--direct_num_workers=2 --direct_running_mode=multi_processing`
for the DirectRunner). Workers import this package, so it must be importable there
(`--setup_file` on Dataflow; PYTHONPATH or an install for the DirectRunner's processes).

The same three steps as the local CLI, so both routes write the same records and name the same
bad inputs: (1) the driver reads the annotations; (2) a first pipeline runs
`clip_cache.process_video` for every distinct video on the workers, filling the per-video
shard cache in `{out_dir}/cache` (a rerun reuses what finished), and each worker's status line
comes back to the driver through text files; (3) the driver keeps the entries whose video is
good, exactly as extract.py does, and the TFDS builder writes them in a second pipeline
(`_generate_examples` returns a PTransform; its workers only read the shards). Two pipelines
rather than one because only the driver can drop an empty split: TFDS's Beam writer refuses a
split with no examples (all of its videos bad), which extract.py simply leaves out. The summary
ends with `ok=<int> skipped=<int>`. Needs `pip install hawk-jax[beam]` (apache-beam).
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, Sequence

from data_pipelines import annotations as ann_lib
from data_pipelines import builders, clip_cache, extract
from hawk_jax import console


def _process(video_path: str, options: clip_cache.ExtractOptions, cache_dir: str) -> str:
  """Beam worker: one video's shard made sure of; its process_video status as a JSON line."""
  import cv2
  cv2.setNumThreads(1)  # as extract.py's pool: one worker per core, no OpenCV threads on top
  result = clip_cache.process_video(video_path, options, cache_dir)
  return json.dumps({"video_path": video_path, **result}, ensure_ascii=False)


def extract_videos(video_paths: list[str], options: clip_cache.ExtractOptions, cache_dir: str,
                   beam_options) -> dict[str, dict[str, Any]]:
  """video path -> process_video result for every path, computed on Beam workers (step 2)."""
  import apache_beam as beam
  from etils import epath
  if not video_paths:
    return {}
  # A folder per run: WriteToText's shard count varies between runs, and stale shards of an
  # earlier run must not be read back.
  status_dir = epath.Path(cache_dir) / f"beam_status-{uuid.uuid4().hex}"
  with beam.Pipeline(options=beam_options) as p:
    _ = (p
         | "videos" >> beam.Create(video_paths)
         | "spread" >> beam.Reshuffle()  # Create's single bundle would keep one worker busy
         | "extract" >> beam.Map(_process, options, cache_dir)
         | "statuses" >> beam.io.WriteToText(os.fspath(status_dir / "status"),
                                             file_name_suffix=".jsonl"))
  results = {}
  for f in sorted(status_dir.glob("status*")):
    for line in f.read_text(encoding="utf-8").splitlines():
      if line.strip():
        result = json.loads(line)
        results[result.pop("video_path")] = result
  status_dir.rmtree()
  for path in video_paths:
    if path not in results:  # never expected: Beam writes every element's output
      status = clip_cache.cached_status(path, options, cache_dir)
      if status["status"] == "unknown":
        status = {"status": "skipped", "key": status["key"],
                  "reason": "no status from the Beam workers (see their logs)"}
      results[path] = status
  return results


def run(args, pipeline_args: list[str]) -> extract.Summary:
  from apache_beam.options.pipeline_options import PipelineOptions
  from etils import epath
  start = time.time()
  beam_options = PipelineOptions([f"--runner={args.runner}", *pipeline_args])
  options = extract.options_from_args(args)
  splits, skipped = extract.read_inputs(args)
  videos = sorted({e.video_path for entries in splits.values() for e in entries})
  extract.check_output(args.out_dir, len(videos), options)
  out_dir = epath.Path(args.out_dir)
  cache_dir = out_dir / "cache"
  cache_dir.mkdir(parents=True, exist_ok=True)

  statuses = extract_videos(videos, options, os.fspath(cache_dir), beam_options)
  good, empty = extract.partition(splits, statuses, skipped)
  summary = extract.Summary(ok={}, skipped=skipped, dataset_dir=None,
                            computed=sum(r["status"] == "done" for r in statuses.values()),
                            reused=sum(r["status"] == "cached" for r in statuses.values()),
                            short=extract.short_videos(splits, statuses, options))
  builder = None
  if good:
    builder, _ = extract._write_dataset(builders.BUILDERS[args.source], good, options,
                                        os.fspath(out_dir), os.fspath(cache_dir),
                                        args.overwrite, beam_options=beam_options)
  extract.finish(summary, builder, good, empty, out_dir)
  mismatched = {s: (summary.ok.get(s, 0), len(e)) for s, e in good.items()
                if summary.ok.get(s, 0) != len(e)}
  if mismatched:
    # Only when a shard went bad between the two pipelines: the Beam workers of step 3 skip
    # such a video (counted in their "hawk_extract" metrics) but cannot hand its name back.
    print(f"warning: written split sizes {mismatched} (written, good) differ from the good "
          f"entries of step 2; see the workers' logs, or rerun", file=sys.stderr)
  summary.seconds = time.time() - start
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  pipeline_args = []
  if "--" in argv:
    cut = argv.index("--")
    argv, pipeline_args = argv[:cut], argv[cut + 1:]
  parser = extract.make_parser("python -m data_pipelines.beam_extract", __doc__)
  parser.add_argument("--runner", default="DirectRunner", help="Beam runner")
  args = parser.parse_args(argv)
  console.setup_logging(args.log_level)
  console.require("apache_beam", "beam", "the Beam route")
  try:
    summary = run(args, pipeline_args)
  except (ann_lib.AnnotationError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(extract.format_summary(summary), flush=True)
  return 0 if summary.num_ok > 0 else 1


if __name__ == "__main__":
  sys.exit(main())
