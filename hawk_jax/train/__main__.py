"""Train one stage.

  python -m hawk_jax.train --config configs/stage2_finetune.py:size=tiny --workdir DIR \
      [--config.data.dir=DATA] [--config.init.from_stage=STAGE1_WORKDIR] [--config.x=...]

Rerunning the same command resumes from the workdir's last checkpoint. On multi-host (TPU pod
or multi-node GPU) pass --distributed to call `jax.distributed.initialize()` first.
"""
from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "stage config file[:size=..,variant=..]")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and metrics go")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize()")
_STOP_AFTER = flags.DEFINE_integer("stop_after", None, "stop after N steps of this invocation")


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


def main(argv):
  del argv
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required")
  import jax
  if _DISTRIBUTED.value:
    jax.distributed.initialize(**distributed_args())
  from hawk_jax import compile_cache
  compile_cache.enable()
  from hawk_jax.train.loop import train_stage
  r = train_stage(_CONFIG.value, _WORKDIR.value, stop_after=_STOP_AFTER.value)
  print(f"stage {_CONFIG.value.stage}: steps={r.steps} first_loss={r.first_loss} "
        f"last_loss={r.last_loss} eval_loss={r.eval_loss} workdir={r.workdir}")


if __name__ == "__main__":
  app.run(main)
