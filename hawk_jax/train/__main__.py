"""Train one stage.

  python -m hawk_jax.train --config configs/stage2_finetune.py:size=tiny --workdir DIR \
      [--config.data.dir=DATA] [--config.init.from_stage=STAGE1_WORKDIR] [--config.x=...]

Rerunning the same command resumes from the workdir's last checkpoint. On multi-host (TPU pod
or multi-node GPU) pass --distributed to call `jax.distributed.initialize()` first.
"""
from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "stage config file[:size=..,variant=..]")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and metrics go")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize()")
_STOP_AFTER = flags.DEFINE_integer("stop_after", None, "stop after N steps of this invocation")


def main(argv):
  del argv
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required")
  import jax
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  from hawk_jax import compile_cache
  compile_cache.enable()
  from hawk_jax.train.loop import train_stage
  r = train_stage(_CONFIG.value, _WORKDIR.value, stop_after=_STOP_AFTER.value)
  print(f"stage {_CONFIG.value.stage}: steps={r.steps} first_loss={r.first_loss} "
        f"last_loss={r.last_loss} eval_loss={r.eval_loss} workdir={r.workdir}")


if __name__ == "__main__":
  app.run(main)
