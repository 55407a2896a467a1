"""Train one stage.

  python -m hawk_jax.train --config configs/stage2_finetune.py:size=tiny --workdir DIR \
      [--config.data.dir=DATA] [--config.init.from_stage=STAGE1_WORKDIR] [--config.x=...]

Rerunning the same command resumes from the workdir's last checkpoint. On multi-host (TPU pod
or multi-node GPU, or launch/local_pod.sh) pass --distributed to join the other processes first.
SIGTERM saves a checkpoint at the next step and exits with status 143; rerun to resume.
Exit status 2: a config or workdir that cannot be used (one line says which and why); 3: the
run diverged (train.max_consecutive_skips non-finite steps in a row; the last good checkpoint
is kept).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from absl import flags

from hawk_jax import compile_cache, console, distributed
from hawk_jax.stage_config import ConfigError, add_config_arguments, parse_args_with_config
from hawk_jax.train.loop import Diverged, Preempted, train_stage
from hawk_jax.workdir import WorkdirError

# After a SIGTERM the run saves a checkpoint and exits with 143 (128 + SIGTERM, what a process
# ended by that signal reports): the checkpoint is complete, but the stage is not finished, so
# a script that chains stages (`train stage 1 && train stage 2`) must stop here.
PREEMPTED_EXIT = 143
DIVERGED_EXIT = 3


def _parser() -> argparse.ArgumentParser:
  p = console.parser("python -m hawk_jax.train", __doc__)
  add_config_arguments(p)
  p.add_argument("--workdir", help="where checkpoints, logs and metrics go (required to train)")
  p.add_argument("--print_config", action="store_true",
                 help="print the resolved config (file, argument and overrides) as JSON and "
                      "exit")
  p.add_argument("--distributed", action="store_true",
                 help="join the other processes of a pod first (hawk_jax/distributed.py)")
  p.add_argument("--stop_after", type=int, default=None,
                 help="stop after N steps of this invocation")
  return p


def _num(x: float | None) -> str:
  return "n/a" if x is None else f"{x:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  args, cfg = parse_args_with_config(parser, argv)
  if args.print_config:
    print(cfg.to_json_best_effort(indent=2))
    return 0
  if not args.workdir:
    parser.error("--workdir is required to train")
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags
  console.setup_logging(args.log_level)
  if args.distributed:
    distributed.initialize()
    if not distributed.is_main_process() and args.log_level in ("DEBUG", "INFO"):
      console.setup_logging("WARNING")  # one log for the pod: process 0's
  compile_cache.enable()
  try:
    r = train_stage(cfg, args.workdir, stop_after=args.stop_after)
  except Preempted as e:
    print(e, flush=True)
    return PREEMPTED_EXIT
  except Diverged as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return DIVERGED_EXIT
  except (WorkdirError, ConfigError) as e:  # a workdir or config that cannot be used: one
    print(f"error: {e}", file=sys.stderr, flush=True)  # line, no traceback
    return 2
  print(f"stage {cfg.stage}: steps={r.steps} loss {_num(r.first_loss)} -> {_num(r.last_loss)} "
        f"(mean of the first/last 5 logged steps) eval_loss={_num(r.eval_loss)}"
        f"{f' skipped_updates={r.skipped_updates}' if r.skipped_updates else ''} "
        f"workdir={r.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
