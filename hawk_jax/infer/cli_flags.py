"""Command-line flags shared by describe, chat and `evaluate --checkpoint`, and how those
command lines meet bad input.

Bad input -- a --checkpoint that is not a workdir, a --step it lacks or that is damaged, a
missing, empty or undecodable video, a flag value out of range -- is reported as one line
`error: <path>: <what is wrong>` on stderr with exit status 2, never a traceback. The errors
are raised where they are found (hawk_jax.workdir.WorkdirError, data_pipelines.video.VideoError,
both ValueErrors; OSError for files) and caught only at the command line (`USER_ERRORS`,
`fail`). The cheap checks come first (`check_checkpoint`, `generation_options`, `read_videos`:
config.json, the step folders and the videos), so a typo fails in a moment rather than after the
minutes a large model takes to load.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

import ml_collections

from hawk_jax import distributed
from hawk_jax.infer.engine import STRATEGIES, Engine, GenerationOptions, Video, VideoSettings
from hawk_jax.infer.serving_layout import parse_layout
from hawk_jax.workdir import DTYPE_CHOICES, read_config, select_step

# What a command line reports as bad input (one line, exit 2): ValueError covers WorkdirError,
# VideoError and bad flag values; OSError a file that cannot be opened, read or written.
USER_ERRORS = (OSError, ValueError)
GENERATION_FLAGS = ("max_new_tokens", "strategy", "temperature", "top_p", "num_beams", "seed")


def one_line(error: BaseException | str) -> str:
  """The message of `error` on one line (a multi-line message's lines joined by spaces)."""
  return " ".join(str(error).split()) or type(error).__name__


def fail(error: BaseException) -> int:
  """Prints `error` as one `error: ...` line on stderr; returns the exit status 2."""
  print(f"error: {one_line(error)}", file=sys.stderr)
  return 2


def _layout(text: str) -> str:
  try:
    parse_layout(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
  return text


def add_model_args(parser: argparse.ArgumentParser, *, checkpoint_required: bool = True) -> None:
  parser.add_argument("--checkpoint", required=checkpoint_required, default=None,
                      help="a trained stage's workdir (config.json, frozen/, checkpoints/)")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step to load (default: the latest finished one)")
  parser.add_argument("--dtype", default="auto",
                      choices=DTYPE_CHOICES,
                      help="weights/compute dtype; auto = float32 on CPU (fast batch-1 "
                           "decoding there), the run's dtypes on accelerators")
  parser.add_argument("--tokenizer", default=None,
                      help="LLaMA tokenizer.model (default: the run config's tokenizer_path)")
  parser.add_argument("--layout", type=_layout, default="auto",
                      help="where the weights live (hawk_jax/infer/serving_layout.py): auto "
                           "(one device; else replicated on every device when they fit in "
                           "half of one, else tensor-parallel), single (one device), "
                           "replicated, tensor (the smallest tensor axis that fits) or "
                           "tensor:N; the mesh spans every process under --distributed")
  parser.add_argument("--distributed", action="store_true",
                      help="join the other processes of a pod first (hawk_jax/distributed.py); "
                           "every process runs the same command")


def start(args: argparse.Namespace) -> None:
  """Joins the pod when --distributed is given (before anything touches a device); then only
  process 0 logs at INFO."""
  if getattr(args, "distributed", False):
    distributed.initialize()
    if not distributed.is_main_process():
      logging.getLogger().setLevel(logging.WARNING)


def add_generation_args(parser: argparse.ArgumentParser,
                        strategies=STRATEGIES) -> None:
  """Flags default to None: unset ones take the run config's `generate` section."""
  parser.add_argument("--max_new_tokens", type=int, default=None,
                      help="tokens to generate at most (default: the config's "
                           "generate.max_new_tokens)")
  parser.add_argument("--strategy", choices=strategies, default=None,
                      help="token choice (default: the config's generate.strategy)")
  parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
  parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass")
  parser.add_argument("--num_beams", type=int, default=None, help="beams for --strategy beam")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def check_checkpoint(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """The run config of --checkpoint, once the workdir and its --step (default: the latest
  finished step) are known to be there; raises WorkdirError naming the path otherwise. Reads
  config.json and lists checkpoints/ only: no weight is read."""
  cfg = read_config(args.checkpoint)
  select_step(args.checkpoint, args.step)
  return cfg


def generation_options(cfg: ml_collections.ConfigDict,
                       args: argparse.Namespace) -> GenerationOptions:
  """The generation options of the flags (unset ones from the run config's `generate`
  section); a ValueError names a bad value."""
  overrides = {k: getattr(args, k) for k in GENERATION_FLAGS}
  return GenerationOptions.from_config(cfg.get("generate") or {}, **overrides)


def read_videos(cfg: ml_collections.ConfigDict, paths: Sequence[str]) -> list[Video]:
  """The videos decoded as the run's engine decodes them (VideoSettings of `cfg`), before the
  weights are read; VideoError names the first bad one.

  FFmpeg's own log lines (`moov atom not found` for a corrupt file, and the warnings some
  streams print on every frame) are silenced unless OPENCV_FFMPEG_LOGLEVEL is set, so bad
  input reads as the one VideoError line; OPENCV_FFMPEG_LOGLEVEL=32 shows them again."""
  # Read by OpenCV when it first opens a file with FFmpeg; -8 is AV_LOG_QUIET.
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
  settings = VideoSettings.from_config(cfg)
  return [settings.load(path) for path in paths]


def load_engine(args: argparse.Namespace) -> tuple[Engine, GenerationOptions]:
  """The Engine of the --checkpoint/--step/--dtype/--tokenizer/--layout flags, and the
  generation options of the generation flags (unset ones from the run config's `generate`
  section)."""
  engine = Engine.from_workdir(args.checkpoint, args.step, dtype=args.dtype,
                               tokenizer_path=args.tokenizer,
                               layout=getattr(args, "layout", "auto"))
  return engine, generation_options(engine.cfg, args)
