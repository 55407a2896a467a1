"""Mesh construction and the logical-axis -> mesh-axis rules (MaxText style).

Parameters and activations carry logical names (see hawk_jax/models); this table, held in the
config as `config.logical_axis_rules`, maps them to the mesh axes `data`, `fsdp`, `tensor`.
Parameter names: batch, embed, mlp, heads, kv_heads, head_dim, vocab, layers, norm, ...;
activation names are prefixed `activation_` so the two can be placed differently.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, object], ...] = (
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("activation_head_dim", None),
    ("activation_frames", None),
    ("activation_queries", None),
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
    ("queries", None),
    ("frames", None),
    ("patch", None),
    ("channels", None),
    ("positions", None),
    ("tight", None),
    ("kv_embed", None),
)


def rules_as_list(rules) -> list[tuple[str, object]]:
  """Accept the rules as a tuple of pairs or as ml_collections lists (tuples become lists)."""
  out = []
  for name, axes in rules:
    if isinstance(axes, list):
      axes = tuple(axes)
    out.append((name, axes))
  return out


def make_mesh(shape: Sequence[int], axes: Sequence[str] = MESH_AXES, devices=None) -> Mesh:
  """A mesh with Auto axes (so with_sharding_constraint works). `-1` in `shape` takes the rest."""
  devices = list(devices if devices is not None else jax.devices())
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1")
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    shape[shape.index(-1)] = len(devices) // known
  if -1 not in shape and int(np.prod(shape)) < len(devices):
    devices = devices[:int(np.prod(shape))]  # e.g. (1, 1, 1): one device of several
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh shape {shape} needs {int(np.prod(shape))} devices, have {len(devices)}")
  return jax.make_mesh(tuple(shape), tuple(axes), axis_types=(AxisType.Auto,) * len(axes),
                       devices=devices)


def logical_to_sharding(logical_tree, mesh: Mesh, rules):
  """Tree of logical PartitionSpecs (from nn.get_partition_spec) -> tree of NamedShardings."""
  specs = nn.logical_to_mesh(logical_tree, rules_as_list(rules))
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Leading-axis sharding of an input batch over the batch mesh axes."""
  spec = nn.logical_to_mesh_axes(("activation_batch",) + (None,) * (ndim - 1),
                                 rules_as_list(rules))
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_on_mesh(batch: dict, mesh: Mesh, rules=DEFAULT_RULES) -> dict:
  """Host-local numpy batch -> global jax.Arrays with the batch axis sharded over the batch
  mesh axes (`batch_sharding`); every host passes its own shard."""
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind not in "biuf":
      raise TypeError(f"batch field {name!r} has dtype {value.dtype}; only numeric arrays go "
                      f"on the mesh")
    out[name] = jax.make_array_from_process_local_data(
        batch_sharding(mesh, value.ndim, rules), value)
  return out
