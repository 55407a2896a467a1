"""Command-line flags shared by describe, chat and `evaluate --checkpoint`."""
from __future__ import annotations

import argparse

from hawk_jax.infer.engine import STRATEGIES, Engine, GenerationOptions
from hawk_jax.workdir import DTYPE_CHOICES


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
  """The Engine of the --checkpoint/--step/--dtype/--tokenizer flags, and the generation
  options of the generation flags (unset ones from the run config's `generate` section)."""
  engine = Engine.from_workdir(args.checkpoint, args.step, dtype=args.dtype,
                               tokenizer_path=args.tokenizer)
  overrides = {k: getattr(args, k) for k in ("max_new_tokens", "strategy", "temperature",
                                             "top_p", "num_beams", "seed")}
  return engine, engine.default_options(**overrides)
