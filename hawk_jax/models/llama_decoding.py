"""The decoding twin of a LLaMA: the same model laid out for fast token-by-token decoding.

`for_decoding(model, params)` gives an unrolled model (per-layer modules, no remat: a scanned
model slices every layer's weights out of the stacked arrays inside the decode loop, which on
CPU copies them each step) whose projection kernels are stored [out, in], with q/k/v and
gate/up fused into one kernel each (`Llama(decode_layout=True)`): fewer, larger matrix-vector
products, which stream the weights faster. Same outputs; convert once, outside jit.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from hawk_jax.models.llama import Llama


def unstack_layers(params, num_layers: int):
  """Scanned params (`layers` stacked on axis 0) -> per-layer `layers_{i}` params."""
  if "layers" not in params:
    return params
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(num_layers):
    out[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], params["layers"])
  return out


def stack_layers(params, num_layers: int):
  """Per-layer `layers_{i}` params -> scanned params (`layers` stacked on axis 0)."""
  if "layers_0" not in params:
    return params
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  out["layers"] = jax.tree.map(lambda *a: jnp.stack(a), *[params[f"layers_{i}"]
                                                          for i in range(num_layers)])
  return out


def unrolled(model: Llama) -> Llama:
  """The same model with per-layer modules (`layers_{i}`) and no remat (same kernel layout)."""
  cfg = model.config
  if not cfg.scan_layers and cfg.remat_policy == "none":
    return model
  return Llama(dataclasses.replace(cfg, scan_layers=False, remat_policy="none"),
               decode_layout=model.decode_layout)


def decoding_model(model: Llama) -> Llama:
  """The decoding twin of a model: unrolled, no remat, kernels in the decode layout."""
  twin = unrolled(model)
  return twin if twin.decode_layout else Llama(twin.config, decode_layout=True)


# Projection kernels and how many of their leading axes are inputs.
_KERNEL_INPUT_AXES = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2, "gate_proj": 1,
                      "up_proj": 1, "down_proj": 1, "lm_head": 1}


# Projections the decode layout reads as one product: (fused name, parts in order, the dict
# holding them).
_DECODE_FUSED = (("gate_up_proj", ("gate_proj", "up_proj"), "mlp"),
                 ("qkv_proj", ("q_proj", "k_proj", "v_proj"), "self_attn"))


def to_decode_layout(params):
  """Projection kernels [*in, *out] -> [*out, *in] (the decode layout), with q/k/v and
  gate/up concatenated along their first output axis into `qkv_proj` and `gate_up_proj`
  (biases too); other leaves as they are."""
  def move(path, leaf):
    names = [str(getattr(k, "key", k)) for k in path]
    n_in = _KERNEL_INPUT_AXES.get(names[-2]) if len(names) > 1 else None
    if names[-1] != "kernel" or n_in is None:
      return leaf
    return jnp.transpose(leaf, tuple(range(n_in, leaf.ndim)) + tuple(range(n_in)))

  def fuse(tree):
    if not isinstance(tree, Mapping):
      return tree
    tree = {key: fuse(value) for key, value in tree.items()}
    for fused, parts, holder in _DECODE_FUSED:
      block = tree.get(holder)
      if isinstance(block, Mapping) and all(p in block for p in parts):
        block = dict(block)
        pieces = [block.pop(p) for p in parts]
        block[fused] = {name: jnp.concatenate([piece[name] for piece in pieces], axis=0)
                        for name in pieces[0]}
        tree[holder] = block
    return tree
  return fuse(jax.tree_util.tree_map_with_path(move, params))


def for_decoding(model: Llama, params):
  """The decoding twin of a model and its params (the module docstring). Call it once outside
  jit and decode with the twin (a twin passes through unchanged); inside jit the conversion is
  one copy of the weights per call."""
  if model.decode_layout and not model.config.scan_layers:
    return model, params
  params = unstack_layers(params, model.config.num_layers)
  if not model.decode_layout:
    params = to_decode_layout(params)
  return decoding_model(model), params
