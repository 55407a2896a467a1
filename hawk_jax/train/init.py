"""Model initialisation in the big_vision order: shapes first (eval_shape), then shardings,
then random init of everything on the mesh, then the converted pretrained towers over it, then
the previous stage's trainable parameters. Every parameter group's source is recorded, and a
missing or mis-shaped tensor is an error that names it.

Pretrained towers arrive already converted: `python -m hawk_jax.convert from-torch` turns
HF/LAVIS/released-HAWK files into a workdir (frozen/ + a trainable checkpoint), and
`config.init.from_stage` names that workdir or a previous stage's. Orbax restores straight onto
the mesh with the target shardings, so a 7B tower never passes through one host's memory.
"""
from __future__ import annotations

import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hawk_jax import checkpoint
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.hawk import Hawk, split_params
from hawk_jax.sharding import logical_to_sharding

log = logging.getLogger("hawk_jax.init")


def dummy_inputs(config: HawkConfig, batch: int = 1, num_frames: int = 2, seq_len: int = 8):
  s = config.vision.image_size
  n = config.num_visual_tokens
  frames = jnp.zeros((batch, num_frames, s, s, 3), jnp.uint8)
  ids = jnp.zeros((batch, seq_len + n), jnp.int32)
  vm = ids.at[:, 1:1 + n].set(1)
  return frames, frames, ids, jnp.ones_like(ids), vm


def abstract_boxed(model: Hawk):
  """Boxed (logically partitioned) abstract params: shapes, dtypes and logical names."""
  inputs = dummy_inputs(model.config)
  return jax.eval_shape(lambda r: model.init(r, *inputs), jax.random.key(0))["params"]


def param_shardings(model: Hawk, mesh, rules):
  boxed = abstract_boxed(model)
  specs = nn.get_partition_spec(boxed)
  return nn.unbox(boxed), logical_to_sharding(specs, mesh, rules)


def random_init(model: Hawk, seed: int, shardings):
  """Every parameter initialised on the mesh (jit with out_shardings; nothing on the host)."""
  inputs = dummy_inputs(model.config)

  def init(rng):
    return nn.unbox(model.init(rng, *inputs)["params"])
  return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def initialize(model: Hawk, cfg, mesh, rules
               ) -> tuple[dict, dict, dict[str, str], str | None]:
  """Returns (params, shardings, sources, frozen_from): params on the mesh; sources maps each
  top group (e.g. "appearance/vit") to where it came from; frozen_from is the workdir
  (`init.from_stage`) whose frozen towers all frozen groups were loaded from unchanged, or None
  (then a workdir must save its own copy of them, it cannot refer to another's)."""
  config = model.config
  frozen_from = None
  abstract, shardings = param_shardings(model, mesh, rules)
  params = random_init(model, cfg.seed, shardings)
  sources: dict[str, str] = {}
  for top in ("appearance", "motion"):
    for group in abstract[top]:
      sources[f"{top}/{group}"] = f"random init (seed {cfg.seed})"
  sources["llm"] = f"random init (seed {cfg.seed})"

  prev = cfg.init.get("from_stage", "")
  if prev:
    # Frozen towers: exactly those the previous stage trained with, or those that
    # `python -m hawk_jax.convert from-torch` converted from pretrained files.
    # `prev` may hold only a reference to another workdir's towers (train.frozen="reference");
    # a dangling reference raises rather than leaving the towers random.
    prev_frozen = checkpoint.frozen_dir(prev)
    if checkpoint.has_params(prev_frozen):
      _, frozen_shard = split_params(shardings, config)
      _, frozen_abs = split_params(abstract, config)
      frozen = checkpoint.load_params(prev_frozen,
                                      checkpoint.abstract_like(frozen_abs, frozen_shard))
      params = _merge_over(params, frozen)
      base = prev if prev.startswith("gs://") else os.path.abspath(prev)
      where = "" if prev_frozen == f"{base.rstrip('/')}/frozen" else f" (in {prev_frozen})"
      for k in _groups(frozen):
        sources[k] = f"frozen towers of {prev}{where}"
      frozen_from = prev
    else:
      log.warning("%s has no frozen/ parameters: the frozen towers stay randomly initialised",
                  prev)
    train_shard = split_params(shardings, config)[0]
    train_abs = split_params(abstract, config)[0]
    if checkpoint.TrainCheckpoints(f"{prev}/checkpoints", async_save=False).latest_step() is None:
      log.info("%s has no trainable checkpoint: the trainable parameters start fresh", prev)
    else:
      trainable, step = checkpoint.restore_trainable(
          prev, checkpoint.abstract_like(train_abs, train_shard))
      params = _merge_over(params, trainable)
      for k in _groups(trainable):
        sources[k] = f"stage checkpoint {prev} step {step}"
  return params, shardings, sources, frozen_from


def _groups(tree) -> list[str]:
  out = []
  for top, sub in tree.items():
    if top == "llm" or not isinstance(sub, dict):
      out.append(top)
    else:
      out.extend(f"{top}/{g}" for g in sub)
  return out


def _merge_over(base: dict, over: dict) -> dict:
  out = dict(base)
  for k, v in over.items():
    if isinstance(v, dict) and isinstance(out.get(k), dict):
      out[k] = _merge_over(out[k], v)
    else:
      if k not in out:
        raise KeyError(f"restored parameter {k!r} is not in the model")
      out[k] = v
  return out


def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
