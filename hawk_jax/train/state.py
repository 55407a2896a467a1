"""The train step of a stage config, set up for a mesh: model, optimizer, the shardings of the
train state {step, trainable, opt_state, skips}, of the frozen towers and of the batch, the abstract
arguments, and the jitted step. The training loop runs it, the planner compiles it ahead of
time and the benchmark times it -- all three build it here, so they run the same program.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding

from hawk_jax.models.hawk import Hawk, split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import param_shardings
from hawk_jax.sharding import batch_sharding, make_mesh, replicated, rules_as_list
from hawk_jax.stage_config import ConfigError
from hawk_jax.train.data import batch_spec
from hawk_jax.train.optim import make_optimizer
from hawk_jax.train.step import make_train_step


@dataclasses.dataclass
class TrainSetup:
  """One stage config's train step on a mesh. `state`, `frozen` and `batch` are the step's
  arguments as ShapeDtypeStructs carrying their shardings (nothing allocated)."""
  cfg: ml_collections.ConfigDict
  config: HawkConfig
  model: Hawk
  mesh: Mesh
  rules: list
  tx: optax.GradientTransformation
  schedule: Callable
  param_shardings: dict     # every parameter (trainable and frozen)
  state_shardings: dict     # {step, trainable, opt_state, skips}
  frozen_shardings: dict
  batch_shardings: dict
  state: dict
  frozen: dict
  batch: dict
  jit_step: Any             # jit((state, frozen, batch) -> (state, metrics)); state donated

  @property
  def num_devices(self) -> int:
    return int(self.mesh.devices.size)

  @property
  def global_batch(self) -> int:
    return int(self.cfg.train.batch_size)

  @property
  def batch_shards(self) -> int:
    """Devices the batch is split over (the mesh axes `activation_batch` maps to)."""
    spec = self.batch_shardings["input_ids"].spec
    return _axes_size(self.mesh, spec[0] if len(spec) else None)

  def init_state(self, trainable) -> dict:
    """The train state at step 0 for `trainable` parameters already on the mesh."""
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings["opt_state"])(
        trainable)
    return {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "opt_state": opt_state,
            "skips": skip_counters()}

  def trace(self):
    """The step traced on the abstract arguments, inside the mesh: without a mesh in context
    Flax's logical activation constraints are no-ops, and XLA is free to replicate whole
    towers (it replicated the ViT over the batch)."""
    with jax.set_mesh(self.mesh):
      return self.jit_step.trace(self.state, self.frozen, self.batch)


def train_setup(cfg: ml_collections.ConfigDict, mesh: Mesh | None = None,
                devices=None) -> TrainSetup:
  """The train step of `cfg` on `mesh` (default: `cfg.mesh_shape` over `devices`, default
  all). Raises ValueError when the batch does not split over the mesh's batch axes."""
  config = HawkConfig.from_stage_config(cfg)
  model = Hawk(config)
  rules = rules_as_list(cfg.logical_axis_rules)
  mesh = mesh if mesh is not None else make_mesh(cfg.mesh_shape, devices=devices)
  abstract, shardings = param_shardings(config, mesh, rules)
  trainable, frozen = split_params(abstract, config)
  train_shard, frozen_shard = split_params(shardings, config)
  tx, schedule = make_optimizer(cfg.optim, cfg.train.num_steps)
  state_shard = {"step": replicated(mesh), "trainable": train_shard,
                 "opt_state": _opt_state_shardings(tx, trainable, train_shard, mesh),
                 "skips": {"total": replicated(mesh), "streak": replicated(mesh)}}
  spec = batch_spec(cfg)
  batch_shard = {k: batch_sharding(mesh, len(s.shape), rules) for k, s in spec.items()}
  _check_batch(cfg, mesh, batch_shard["input_ids"])
  step_fn = make_train_step(model, tx, schedule, cfg.loss.to_dict(), cfg.seed,
                            cfg.optim.grad_accum_steps, tuple(rules))
  jit_step = jax.jit(step_fn, in_shardings=(state_shard, frozen_shard, batch_shard),
                     out_shardings=(state_shard, replicated(mesh)), donate_argnums=(0,))
  state = {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=state_shard["step"]),
           "trainable": _with_sharding(trainable, train_shard),
           "opt_state": _with_sharding(jax.eval_shape(tx.init, trainable),
                                       state_shard["opt_state"]),
           "skips": _with_sharding(jax.eval_shape(skip_counters), state_shard["skips"])}
  batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_shard[k])
           for k, s in spec.items()}
  return TrainSetup(cfg, config, model, mesh, rules, tx, schedule, shardings, state_shard,
                    frozen_shard, batch_shard, state, _with_sharding(frozen, frozen_shard),
                    batch, jit_step)


def skip_counters(total: int = 0, streak: int = 0) -> dict:
  """The step's count of skipped (non-finite) updates, all and consecutive (train/step.py)."""
  return {"total": jnp.asarray(total, jnp.int32), "streak": jnp.asarray(streak, jnp.int32)}


def _opt_state_shardings(tx, trainable, train_shard, mesh):
  """Optimizer-state leaves that mirror a parameter take its sharding (Adam moments); the rest
  (counts) are replicated. `trainable` may be abstract."""
  abstract = jax.eval_shape(tx.init, trainable)
  return optax.tree_map_params(tx, lambda _, s: s, abstract, train_shard,
                               transform_non_params=lambda _: replicated(mesh))


def _axes_size(mesh: Mesh, entry) -> int:
  if entry is None:
    return 1
  names = (entry,) if isinstance(entry, str) else tuple(entry)
  return int(math.prod(mesh.shape[n] for n in names))


def _with_sharding(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def _check_batch(cfg, mesh: Mesh, sharding: NamedSharding) -> None:
  b = int(cfg.train.batch_size)
  accum = int(cfg.optim.grad_accum_steps)
  shards = _axes_size(mesh, sharding.spec[0] if len(sharding.spec) else None)
  if b % accum:
    raise ConfigError(f"--config.train.batch_size={b} is not a multiple of "
                      f"optim.grad_accum_steps={accum}; use a multiple of {accum}")
  if (b // accum) % shards:
    raise ConfigError(
        f"--config.train.batch_size={b} / grad_accum_steps={accum} = {b // accum} rows per "
        f"micro-batch do not split over the {shards} devices of the batch mesh axes "
        f"(mesh {dict(mesh.shape)}); use a multiple of {shards * accum}")
