"""Train one stage.

  python -m hawk_jax.train --config configs/stage2_finetune.py:size=tiny --workdir DIR \
      [--config.data.dir=DATA] [--config.init.from_stage=STAGE1_WORKDIR] [--config.x=...]

Rerunning the same command resumes from the workdir's last checkpoint. On multi-host (TPU pod
or multi-node GPU) pass --distributed to call `jax.distributed.initialize()` first.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

import jax
from absl import flags

from hawk_jax import compile_cache
from hawk_jax.stage_config import add_config_arguments, parse_args_with_config
from hawk_jax.train.loop import train_stage


def distributed_args(env=None) -> dict:
  """Process count and index from JAX_NUM_PROCESSES / JAX_PROCESS_ID when a launcher sets them
  (launch/gpu.sh over ssh); JAX reads JAX_COORDINATOR_ADDRESS itself and detects Cloud TPU,
  SLURM, Open MPI and Kubernetes on its own when they are absent."""
  env = os.environ if env is None else env
  out = {}
  if env.get("JAX_NUM_PROCESSES"):
    out["num_processes"] = int(env["JAX_NUM_PROCESSES"])
  if env.get("JAX_PROCESS_ID"):
    out["process_id"] = int(env["JAX_PROCESS_ID"])
  return out


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m hawk_jax.train", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  add_config_arguments(p)
  p.add_argument("--workdir", required=True, help="where checkpoints, logs and metrics go")
  p.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() first (multi-host)")
  p.add_argument("--stop_after", type=int, default=None,
                 help="stop after N steps of this invocation")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args, cfg = parse_args_with_config(_parser(), argv)
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags
  # force: a library imported above may have put a WARNING-level handler on the root logger.
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                      force=True)
  if args.distributed:
    jax.distributed.initialize(**distributed_args())
  compile_cache.enable()
  r = train_stage(cfg, args.workdir, stop_after=args.stop_after)
  print(f"stage {cfg.stage}: steps={r.steps} first_loss={r.first_loss} "
        f"last_loss={r.last_loss} eval_loss={r.eval_loss} workdir={r.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
