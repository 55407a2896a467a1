"""Pre-extraction on Apache Beam (the TFDS Beam route), for corpora too big for one machine.

  python -m data_pipelines.beam_extract --source captions --annotations gs://b/webvid.csv \
      --videos_dir gs://b/videos --out_dir gs://b/hawk_data --runner DataflowRunner \
      -- --project=P --region=R --temp_location=gs://b/tmp

Same arguments as data_pipelines.extract (--workers is unused: Beam decides), plus --runner;
anything after `--` goes verbatim into `PipelineOptions([...])`. The builder's
`_generate_examples` returns `beam.Create(entries) | beam.FlatMap(...)`, so every video is
decoded, sampled and its motion computed on a Beam worker, through the same per-video shard
cache as the local CLI (so a rerun reuses what finished, and failures are recorded as
`.skip.json` shards). After the pipeline the driver reads the cache to name every skipped
entry and prints the same summary, ending with `ok=<int> skipped=<int>`.
Needs `pip install hawk-jax[beam]` (apache-beam; it does not share one environment with this
project's pinned protobuf/pyarrow without downgrades, see docs/model.md, "These machines").
"""
from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from data_pipelines import annotations as ann_lib
from data_pipelines import builders, clip_cache, extract


def run(args, pipeline_args: list[str]) -> extract.Summary:
  import tensorflow_datasets as tfds
  from apache_beam.options.pipeline_options import PipelineOptions
  from etils import epath
  start = time.time()
  options = extract.options_from_args(args)
  splits, skipped = extract.read_inputs(args)
  out_dir = epath.Path(args.out_dir)
  cache_dir = out_dir / "cache"
  cache_dir.mkdir(parents=True, exist_ok=True)

  builder = builders.BUILDERS[args.source](
      data_dir=os.fspath(out_dir), config=builders.VideoConfig.from_options(options),
      splits={s: e for s, e in splits.items() if e}, cache_dir=os.fspath(cache_dir), beam=True)
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if args.overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=mode, try_download_gcs=False,
      beam_options=PipelineOptions([f"--runner={args.runner}", *pipeline_args])))

  statuses = {}
  for entries in splits.values():
    for e in entries:
      if e.video_path not in statuses:
        status = clip_cache.cached_status(e.video_path, options, os.fspath(cache_dir))
        if status["status"] == "unknown":
          status = {"status": "skipped", "key": status["key"],
                    "reason": "failed on a Beam worker (see the worker logs)"}
        statuses[e.video_path] = status
  good, empty = extract.partition(splits, statuses, skipped)
  summary = extract.Summary(ok={}, skipped=skipped, dataset_dir=None,
                            reused=sum(s["status"] == "cached" for s in statuses.values()))
  extract.finish(summary, builder, good, empty, out_dir)
  mismatched = {s: (summary.ok.get(s, 0), len(e)) for s, e in good.items()
                if summary.ok.get(s, 0) != len(e)}
  if mismatched:
    # The dataset was reused from an earlier run over other inputs: say so, do not guess.
    print(f"warning: written split sizes {mismatched} (written, good) differ from this run's "
          f"good entries; rerun with --overwrite", file=sys.stderr)
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
  try:
    summary = run(args, pipeline_args)
  except (ann_lib.AnnotationError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(extract.format_summary(summary), flush=True)
  return 0 if summary.num_ok > 0 else 1


if __name__ == "__main__":
  sys.exit(main())
