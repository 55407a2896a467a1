"""Command-line flags shared by describe, chat and `evaluate --checkpoint`."""
from __future__ import annotations

import argparse
import logging

from hawk_jax import distributed
from hawk_jax.infer.engine import STRATEGIES, Engine, GenerationOptions
from hawk_jax.infer.serving_layout import parse_layout
from hawk_jax.workdir import DTYPE_CHOICES


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
  parser.add_argument("--max_new_tokens", type=int, default=None)
  parser.add_argument("--strategy", choices=strategies, default=None,
                      help="token choice (default: the config's generate.strategy)")
  parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
  parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass")
  parser.add_argument("--num_beams", type=int, default=None, help="beams for --strategy beam")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def load_engine(args: argparse.Namespace) -> tuple[Engine, GenerationOptions]:
  """The Engine of the --checkpoint/--step/--dtype/--tokenizer/--layout flags, and the
  generation options of the generation flags (unset ones from the run config's `generate`
  section)."""
  engine = Engine.from_workdir(args.checkpoint, args.step, dtype=args.dtype,
                               tokenizer_path=args.tokenizer,
                               layout=getattr(args, "layout", "auto"))
  overrides = {k: getattr(args, k) for k in ("max_new_tokens", "strategy", "temperature",
                                             "top_p", "num_beams", "seed")}
  return engine, engine.default_options(**overrides)
