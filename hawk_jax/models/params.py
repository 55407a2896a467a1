"""The parameter tree of `Hawk(config)`: its abstract shapes (nothing allocated), its shardings on
a mesh, random values, and how another tree differs from it.

Every part of the project that needs the tree without building the model -- initialisation,
workdir reading, conversion, the planner, the parameter summary -- gets it from here.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hawk_jax.models.hawk import Hawk
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.sharding import logical_to_sharding

GroupPath = tuple[str, ...]  # e.g. ("appearance", "vit"), ("llm",)


def dummy_inputs(config: HawkConfig, batch: int = 1, num_frames: int = 2, seq_len: int = 8):
  """Zero inputs of `Hawk.__call__` (frames, motion, input_ids, attention_mask, visual_mask)
  of the right kinds: enough to trace `init`. The parameters do not depend on their sizes."""
  s = config.vision.image_size
  n = config.num_visual_tokens
  frames = jnp.zeros((batch, num_frames, s, s, 3), jnp.uint8)
  ids = jnp.zeros((batch, seq_len + n), jnp.int32)
  vm = ids.at[:, 1:1 + n].set(1)
  return frames, frames, ids, jnp.ones_like(ids), vm


def abstract_params(config: HawkConfig, boxed: bool = False):
  """The parameter tree as ShapeDtypeStructs (`jax.eval_shape` of the init; a fresh copy of the
  dicts each call). `boxed` keeps the flax `Partitioned` boxes that carry each leaf's logical
  axis names."""
  tree = jax.tree.map(lambda x: x, _abstract_boxed(config))
  return tree if boxed else nn.unbox(tree)


@functools.lru_cache(maxsize=16)
def _abstract_boxed(config: HawkConfig):
  model = Hawk(config)
  inputs = dummy_inputs(config)
  return jax.eval_shape(lambda r: model.init(r, *inputs), jax.random.key(0))["params"]


def param_shardings(config: HawkConfig, mesh, rules):
  """(unboxed abstract params, their NamedShardings on `mesh` under the logical-axis `rules`)."""
  boxed = abstract_params(config, boxed=True)
  specs = nn.get_partition_spec(boxed)
  return nn.unbox(boxed), logical_to_sharding(specs, mesh, rules)


def random_params(config: HawkConfig, seed: int, shardings=None,
                  groups: Sequence[GroupPath] | None = None):
  """Flax's init of `Hawk(config)` from `seed`, jitted: the values a training run starts from.

  With `shardings` every leaf is created on the mesh (nothing on the host). With `groups` only
  those subtrees come back, as {path: subtree} (XLA drops the rest of the init)."""
  model = Hawk(config)
  inputs = dummy_inputs(config)

  def init(rng):
    params = nn.unbox(model.init(rng, *inputs)["params"])
    if groups is None:
      return params
    return {"/".join(path): subtree(params, path) for path in groups}
  out = jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
  return out if groups is None else {path: out["/".join(path)] for path in groups}


def host_random_params(config: HawkConfig, seed: int = 0, std: float = 0.02):
  """Random parameters drawn with numpy on the host: normal(0, std) weights, norm scales 1.
  For benchmarks and tests of large or many models: nothing is compiled (XLA's threefry init
  of a full model takes long to compile)."""
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    if getattr(path[-1], "key", "") == "scale":
      return np.ones(s.shape, s.dtype)
    return (rng.standard_normal(s.shape, np.float32) * std).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(leaf, abstract_params(config))


def subtree(tree: Mapping, path: Sequence[str]):
  for p in path:
    tree = tree[p]
  return tree


def has_subtree(tree, path: Sequence[str]) -> bool:
  for p in path:
    if not isinstance(tree, Mapping) or p not in tree:
      return False
    tree = tree[p]
  return True


def flatten_paths(tree: Mapping, sep: str = "/") -> dict[str, object]:
  """{"a/b/c": leaf} of a nested dict."""
  out = {}

  def rec(t, pre):
    if isinstance(t, Mapping):
      for k, v in t.items():
        rec(v, f"{pre}{sep}{k}" if pre else str(k))
    else:
      out[pre] = t
  rec(tree, "")
  return out


def shape_problems(got: Mapping, want: Mapping, extra_ok: bool = False) -> list[str]:
  """How the tree `got` (arrays or ShapeDtypeStructs) differs from `want` in leaves and shapes:
  "missing PATH (shape)", "unexpected PATH (shape)" (unless `extra_ok`), "shape of PATH: ...".
  Empty when they agree."""
  g, w = flatten_paths(got), flatten_paths(want)
  problems = [f"missing {k} {tuple(w[k].shape)}" for k in sorted(set(w) - set(g))]
  if not extra_ok:
    problems += [f"unexpected {k} {tuple(np.shape(g[k]))}" for k in sorted(set(g) - set(w))]
  for k in sorted(set(g) & set(w)):
    if tuple(np.shape(g[k])) != tuple(w[k].shape):
      problems.append(f"shape of {k}: got {tuple(np.shape(g[k]))}, model wants "
                      f"{tuple(w[k].shape)}")
  return problems


def count(tree) -> int:
  """Number of parameters in a tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
