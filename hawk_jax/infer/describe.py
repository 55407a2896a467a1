"""Describe the anomaly in a video (or answer a question about it) with a trained HAWK.

  python -m hawk_jax.infer.describe --checkpoint runs/stage2 clip.mp4
  python -m hawk_jax.infer.describe --checkpoint runs/stage2 clip.mp4 --question "Who falls?" \
      --strategy sample --temperature 0.7 --top_p 0.9 --seed 1
  python -m hawk_jax.infer.describe --checkpoint runs/stage2 a.mp4 b.mp4 --strategy beam \
      --num_beams 4

One video: the answer is streamed to stdout token by token (beam search prints it when done).
Several videos: they are answered as one batch and printed as `VIDEO<TAB>answer` lines. The
prompt is the stage-2 test prompt (frame timestamps, system prompt " "); without --question it
asks the first stage-2 description question. Unset generation flags take the run config's
`generate` section. Progress and timings go to stderr.

Bad input (a --checkpoint that is not a workdir, a --step it lacks, a missing, empty or
undecodable video) is one `error: PATH: what is wrong` line on stderr and exit status 2; the
videos are decoded before the weights are read, so that comes at once.

--layout places the weights (hawk_jax/infer/serving_layout.py; default auto). With
--distributed every process of a pod runs this same command on the same videos (the model is
sharded over all of them); process 0 prints, and answers come whole rather than streamed.
"""
from __future__ import annotations

import io
import sys
import time
from typing import Sequence

import numpy as np

from hawk_jax import console, distributed
from hawk_jax.infer import cli_flags
from hawk_jax.infer.engine import DEFAULT_QUESTION
from hawk_jax.text import prompts


def _parse_args(argv):
  parser = console.parser("python -m hawk_jax.infer.describe", __doc__, log_level="WARNING")
  parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video file(s)")
  parser.add_argument("--question", default=None,
                      help="question to answer (default: describe the anomaly)")
  parser.add_argument("--system", default=None,
                      help="system prompt (default: the training template's \" \")")
  cli_flags.add_model_args(parser)
  cli_flags.add_generation_args(parser)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  console.setup_logging(args.log_level)
  cli_flags.start(args)  # --distributed: before anything touches a device
  t0 = time.perf_counter()
  try:
    # Bad input fails in a moment, before the weights are read: the workdir and its step,
    # the generation flags, then every video (WorkdirError, ValueError, VideoError).
    cfg = cli_flags.check_checkpoint(args)
    cli_flags.generation_options(cfg, args)
    videos = cli_flags.read_videos(cfg, args.videos)
    engine, options = cli_flags.load_engine(args)
  except cli_flags.USER_ERRORS as e:
    return cli_flags.fail(e)
  # Every process computes (SPMD); process 0 alone prints.
  main_process = distributed.is_main_process()
  out = sys.stdout if main_process else io.StringIO()
  err = sys.stderr if main_process else io.StringIO()
  question = args.question or DEFAULT_QUESTION
  system = prompts.TRAIN_SYSTEM_PROMPT if args.system is None else args.system
  print(f"[loaded {args.checkpoint} and {len(videos)} video(s) in "
        f"{time.perf_counter() - t0:.1f}s; {engine.layout.describe()}; {options.strategy}, "
        f"up to {options.max_new_tokens} tokens]", file=err)
  t1 = time.perf_counter()
  visual = engine.encode(np.stack([v.frames for v in videos]),
                         np.stack([v.motion for v in videos]))
  batch = [engine.test_prompt(question, v.timestamps, system=system) for v in videos]
  if len(videos) == 1:
    for delta in engine.stream(visual, batch[0], options):
      out.write(delta)
      out.flush()
    print(file=out)
  else:
    for path, answer in zip(args.videos, engine.generate(visual, batch, options)):
      print(f"{path}\t{answer.text}", file=out)
  out.flush()
  print(f"[generated in {time.perf_counter() - t1:.1f}s]", file=err)
  return 0


if __name__ == "__main__":
  sys.exit(main())
