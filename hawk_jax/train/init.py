"""Model initialisation in the big_vision order: shapes first (eval_shape), then shardings,
then random init of everything on the mesh, then the pretrained towers over it, then the
previous stage's trainable parameters. Every parameter group's source is recorded, and a
missing or mis-shaped tensor is an error that names it.
"""
from __future__ import annotations

import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hawk_jax import checkpoint
from hawk_jax.convert.table import check_shapes, flatten
from hawk_jax.models.configs import HawkConfig
from hawk_jax.models.hawk import Hawk, split_params, trainable_mask
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


def _place(tree, shardings_subtree, what: str):
  return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), tree, shardings_subtree)


def _set_subtree(params: dict, path: tuple[str, ...], value):
  d = params
  for p in path[:-1]:
    d = d[p]
  d[path[-1]] = value


def _get_subtree(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def load_pretrained(params: dict, abstract: dict, shardings: dict, cfg, config: HawkConfig,
                    sources: dict[str, str]) -> dict:
  """Overwrite groups of `params` from the pretrained files named in `cfg.init`."""
  init = cfg.init
  params = jax.tree.map(lambda x: x, params)  # shallow copy of the containers

  def put(path, tree, origin):
    want = _get_subtree(abstract, path)
    check_shapes(tree, want, what=f"{'/'.join(path)} from {origin}")
    dtype_tree = jax.tree.map(lambda t, w: np.asarray(t).astype(w.dtype), tree, want)
    _set_subtree(params, path, _place(dtype_tree, _get_subtree(shardings, path), origin))
    sources["/".join(path)] = origin

  motion_qformer = init.get("motion_qformer_pretrained", True)
  if init.get("llm_hf"):
    from hawk_jax.convert.llama_hf import llama_params_from_hf
    put(("llm",), llama_params_from_hf(init.llm_hf, config.llm), f"HF LLaMA {init.llm_hf}")
  if init.get("vision_hf"):
    from hawk_jax.convert.blip2_hf import vision_params_from_hf
    vit = vision_params_from_hf(init.vision_hf, config.vision)
    for branch in ("appearance", "motion"):
      put((branch, "vit"), vit, f"HF Blip2VisionModel {init.vision_hf}")
  if init.get("qformer_hf"):
    from hawk_jax.convert.blip2_hf import qformer_params_from_hf
    qf = qformer_params_from_hf(init.qformer_hf, config.qformer)
    for branch in ("appearance", "motion") if motion_qformer else ("appearance",):
      put((branch, "qformer"), qf, f"HF Blip2QFormerModel {init.qformer_hf}")
  if init.get("eva_vit_lavis"):
    from hawk_jax.convert.lavis import vision_from_lavis
    vit = vision_from_lavis(init.eva_vit_lavis, config.vision)
    for branch in ("appearance", "motion"):
      # eva_vit_g.pth has no ln_vision: keep what is there (BLIP-2's file brings it).
      vit_no_ln = {k: v for k, v in vit.items() if k != "ln_vision"}
      for k, v in vit_no_ln.items():
        put((branch, "vit", k), v, f"LAVIS {init.eva_vit_lavis}")
  if init.get("blip2_lavis"):
    from hawk_jax.convert.lavis import blip2_from_lavis
    b = blip2_from_lavis(init.blip2_lavis, config.vision, config.qformer)
    for branch in ("appearance", "motion") if motion_qformer else ("appearance",):
      put((branch, "qformer"), b["qformer"], f"LAVIS {init.blip2_lavis}")
      put((branch, "query_tokens"), b["query_tokens"], f"LAVIS {init.blip2_lavis}")
      if "ln_vision" in b:
        put((branch, "vit", "ln_vision"), b["ln_vision"], f"LAVIS {init.blip2_lavis}")
  if init.get("hawk_torch"):
    from hawk_jax.convert.hawk_torch import hawk_params_from_torch
    for path, tree in hawk_params_from_torch(init.hawk_torch, config).items():
      put(path, tree, f"HAWK {init.hawk_torch}")
  return params


def initialize(model: Hawk, cfg, mesh, rules) -> tuple[dict, dict, dict[str, str]]:
  """Returns (params, shardings, sources): params on the mesh; sources maps each top group
  (e.g. "appearance/vit") to where it came from."""
  config = model.config
  abstract, shardings = param_shardings(model, mesh, rules)
  params = random_init(model, cfg.seed, shardings)
  sources: dict[str, str] = {}
  for top in ("appearance", "motion"):
    for group in abstract[top]:
      sources[f"{top}/{group}"] = f"random init (seed {cfg.seed})"
  sources["llm"] = f"random init (seed {cfg.seed})"

  prev = cfg.init.get("from_stage", "")
  if prev and checkpoint.has_params(f"{prev}/frozen") and not _any_pretrained(cfg):
    # A previous stage trained on random (or already converted) towers: use exactly those.
    _, frozen_shard = split_params(shardings, config)
    _, frozen_abs = split_params(abstract, config)
    frozen = checkpoint.load_params(f"{prev}/frozen",
                                    checkpoint.abstract_like(frozen_abs, frozen_shard))
    params = _merge_over(params, frozen)
    for k in _groups(frozen):
      sources[k] = f"frozen towers of {prev}"
  params = load_pretrained(params, abstract, shardings, cfg, config, sources)
  if prev:
    train_shard = split_params(shardings, config)[0]
    train_abs = split_params(abstract, config)[0]
    trainable, step = checkpoint.restore_trainable(
        prev, checkpoint.abstract_like(train_abs, train_shard))
    params = _merge_over(params, trainable)
    for k in _groups(trainable):
      sources[k] = f"stage checkpoint {prev} step {step}"
  return params, shardings, sources


def _any_pretrained(cfg) -> bool:
  keys = ("llm_hf", "vision_hf", "qformer_hf", "eva_vit_lavis", "blip2_lavis", "hawk_torch")
  return any(cfg.init.get(k) for k in keys)


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
