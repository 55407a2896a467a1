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
import logging
import sys
from typing import Sequence

from absl import flags

from hawk_jax import compile_cache, distributed
from hawk_jax.stage_config import ConfigError, add_config_arguments, parse_args_with_config
from hawk_jax.train.loop import Diverged, Preempted, train_stage
from hawk_jax.workdir import WorkdirError

# After a SIGTERM the run saves a checkpoint and exits with 143 (128 + SIGTERM, what a process
# ended by that signal reports): the checkpoint is complete, but the stage is not finished, so
# a script that chains stages (`train stage 1 && train stage 2`) must stop here.
PREEMPTED_EXIT = 143
DIVERGED_EXIT = 3


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m hawk_jax.train", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  add_config_arguments(p)
  p.add_argument("--workdir", required=True, help="where checkpoints, logs and metrics go")
  p.add_argument("--distributed", action="store_true",
                 help="join the other processes of a pod first (hawk_jax/distributed.py)")
  p.add_argument("--stop_after", type=int, default=None,
                 help="stop after N steps of this invocation")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args, cfg = parse_args_with_config(_parser(), argv)
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags
  # force: a library imported above may have put a WARNING-level handler on the root logger.
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                      force=True)
  # Orbax logs every file of every save at INFO through absl; warnings still show.
  logging.getLogger("absl").setLevel(logging.WARNING)
  if args.distributed:
    distributed.initialize()
    if not distributed.is_main_process():  # one log for the pod: process 0's
      logging.getLogger().setLevel(logging.WARNING)
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
  print(f"stage {cfg.stage}: steps={r.steps} first_loss={r.first_loss} "
        f"last_loss={r.last_loss} eval_loss={r.eval_loss} workdir={r.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
