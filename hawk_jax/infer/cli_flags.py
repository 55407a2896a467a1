"""Command-line flags shared by describe, chat and `evaluate --checkpoint`.

Kept free of JAX imports so that `python -m hawk_jax.eval --help` stays instant.
"""
from __future__ import annotations

import argparse

STRATEGY_CHOICES = ("greedy", "sample", "beam")


def add_model_args(parser: argparse.ArgumentParser, *, checkpoint_required: bool = True) -> None:
  parser.add_argument("--checkpoint", required=checkpoint_required, default=None,
                      help="a trained stage's workdir (config.json, frozen/, checkpoints/)")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step to load (default: the latest finished one)")
  parser.add_argument("--dtype", default="auto",
                      choices=("auto", "config", "float32", "bfloat16"),
                      help="weights/compute dtype; auto = float32 on CPU (fast batch-1 "
                           "decoding there), the run's dtypes on accelerators")
  parser.add_argument("--tokenizer", default=None,
                      help="LLaMA tokenizer.model (default: the run config's tokenizer_path)")


def add_generation_args(parser: argparse.ArgumentParser,
                        strategies=STRATEGY_CHOICES) -> None:
  """Flags default to None: unset ones take the run config's `generate` section."""
  parser.add_argument("--max_new_tokens", type=int, default=None)
  parser.add_argument("--strategy", choices=strategies, default=None,
                      help="token choice (default: the config's generate.strategy)")
  parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
  parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass")
  parser.add_argument("--num_beams", type=int, default=None, help="beams for --strategy beam")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def generation_overrides(args: argparse.Namespace) -> dict:
  return {k: getattr(args, k) for k in ("max_new_tokens", "strategy", "temperature", "top_p",
                                         "num_beams", "seed")}


def load_engine(args: argparse.Namespace):
  """An Engine for the --checkpoint/--step/--dtype/--tokenizer flags."""
  from hawk_jax.infer.engine import Engine
  return Engine.from_workdir(args.checkpoint, args.step, dtype=args.dtype,
                             tokenizer_path=args.tokenizer)
