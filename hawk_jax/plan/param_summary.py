"""Parameter summary from shapes alone (`jax.eval_shape`; nothing is allocated).

  python -m hawk_jax.plan.param_summary --config configs/stage2_finetune.py:size=hawk7b

prints one row per module group (parameters, trainable or frozen, dtype) and ends with
`total=<int> trainable=<int>`.
"""
from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from ml_collections import config_flags

from hawk_jax.stage_config import hawk_model_config
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.hawk import Hawk, is_trainable

_CONFIG = config_flags.DEFINE_config_file("config", None, "stage config file[:args]")


def abstract_params(config: HawkConfig, batch: int = 1, num_frames: int = 2, seq_len: int = 8):
  """The parameter tree of `Hawk(config)` as ShapeDtypeStructs (unboxed, logical names kept
  in the returned boxed tree's metadata)."""
  model = Hawk(config)
  s = config.vision.image_size
  n_vis = config.num_visual_tokens
  frames = jax.ShapeDtypeStruct((batch, num_frames, s, s, 3), jnp.uint8)
  ids = jax.ShapeDtypeStruct((batch, seq_len + n_vis), jnp.int32)

  def init(rng):
    vm = jnp.zeros(ids.shape, jnp.int32).at[:, 1:1 + n_vis].set(1)
    return model.init(rng, jnp.zeros(frames.shape, jnp.uint8), jnp.zeros(frames.shape, jnp.uint8),
                      jnp.zeros(ids.shape, jnp.int32), jnp.ones(ids.shape, jnp.int32), vm)
  return jax.eval_shape(init, jax.random.key(0))["params"]


def summarize(config: HawkConfig, depth: int = 2):
  """Rows (group, n_params, trainable, dtype) grouped by the first `depth` path names."""
  params = abstract_params(config)
  flat = jax.tree_util.tree_flatten_with_path(
      params, is_leaf=lambda x: hasattr(x, "value") and hasattr(x, "names"))[0]
  groups = collections.OrderedDict()
  for path, leaf in flat:
    names = tuple(str(getattr(k, "key", k)) for k in path)
    leaf = getattr(leaf, "value", leaf)
    key = (names[:depth], is_trainable(names, config), str(leaf.dtype))
    groups[key] = groups.get(key, 0) + int(np.prod(leaf.shape))
  return [("/".join(n), count, tr, dt) for (n, tr, dt), count in groups.items()]


def format_table(rows) -> str:
  lines = [f"{'module':<40} {'params':>15} {'trainable':>9} {'dtype':>9}"]
  lines.append("-" * len(lines[0]))
  for name, n, tr, dt in rows:
    lines.append(f"{name:<40} {n:>15,} {'yes' if tr else 'no':>9} {dt:>9}")
  total = sum(r[1] for r in rows)
  trainable = sum(r[1] for r in rows if r[2])
  lines.append("-" * len(lines[0]))
  lines.append(f"total={total} trainable={trainable}")
  return "\n".join(lines)


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config configs/stage2_finetune.py:size=hawk7b")
  print(format_table(summarize(hawk_model_config(_CONFIG.value))))


if __name__ == "__main__":
  app.run(main)
