"""HuggingFace BLIP-2 towers <-> Flax: `Blip2VisionModel` <-> EvaViT (its `post_layernorm` is our
`ln_vision`) and `Blip2QFormerModel` <-> QFormer.

  model, params = vision_from_hf(folder)    # a Blip2VisionModel (or full Blip2) save_pretrained
  vision_to_hf(model, params, folder)       # a folder Blip2VisionModel.from_pretrained loads
  model, params = qformer_from_hf(folder)
  qformer_to_hf(model, params, folder)

Folders are read as config.json + safetensors (hawk_jax/tensor_files.py); every converted tree
is checked against the model's `jax.eval_shape` tree, errors naming the PyTorch key.
The state-dict helpers here (`vision_params_from_state`, `qformer_params_from_state`,
`vision_state_from_params`, `qformer_state_from_params`) also serve the LAVIS/HAWK converters.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from hawk_jax import tensor_files
from hawk_jax.convert.blip2_tables import (  # noqa: F401 (re-export)
  fuse_qkv_bias,
  qformer_rules,
  qformer_text_only_pattern,
  unfuse_qkv_bias,
  vision_layer_pattern,
  vision_rules,
)
from hawk_jax.convert.table import ConversionError, Rule, flax_to_torch, torch_to_flax
from hawk_jax.models.common import dtype_of
from hawk_jax.models.eva_vit import EvaViT
from hawk_jax.models.model_config import QFormerConfig, VisionConfig
from hawk_jax.models.params import flatten_paths as flatten
from hawk_jax.models.qformer import QFormer

log = logging.getLogger(__name__)

_VISION_MODEL_TYPE = "blip_2_vision_model"
_QFORMER_MODEL_TYPE = "blip_2_qformer"
_BLIP2_MODEL_TYPE = "blip-2"


# ----------------------------------------------------------------------------- shapes and checks

def vision_param_shapes(config: VisionConfig):
  """EvaViT's parameter tree as ShapeDtypeStructs (nothing is allocated)."""
  pixels = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
  tree = jax.eval_shape(lambda x: EvaViT(config).init(jax.random.key(0), x), pixels)
  return nn.meta.unbox(tree)["params"]


def qformer_param_shapes(config: QFormerConfig):
  """QFormer's parameter tree as ShapeDtypeStructs (nothing is allocated)."""
  queries = jax.ShapeDtypeStruct((1, config.num_query_tokens, config.hidden_size), jnp.float32)
  encoder = jax.ShapeDtypeStruct((1, 1, config.encoder_hidden_size), jnp.float32)
  tree = jax.eval_shape(lambda q, e: QFormer(config).init(jax.random.key(0), q, e),
                        queries, encoder)
  return nn.meta.unbox(tree)["params"]


def _flax_key(rule: Rule, scan: bool) -> str:
  return rule.flax_path.replace("_{i}", "") if scan else rule.flax_path


def _torch_shapes(rules: list[Rule], expected: Mapping, scan: bool) -> dict[str, tuple]:
  """The shape each rule's torch tensor must have, from the model's tree (one layer's worth of
  zeros through the inverse transform: at most one tensor in memory at a time)."""
  flat = flatten(expected)
  out = {}
  for r in rules:
    stacked = r.per_layer and scan
    path = _flax_key(r, True) if stacked else r.flax_path.format(i=0)
    if path in flat:
      shape = flat[path].shape[1:] if stacked else flat[path].shape
      out[r.torch_key] = tuple(np.shape(r.transform.inv(np.zeros(shape, np.float32))))
  return out


def check_source_shapes(state: Mapping, rules: list[Rule], expected: Mapping, num_layers: int,
                        scan: bool, source: str) -> None:
  """Every tensor the table reads has the shape the model needs; errors name the torch key."""
  want = _torch_shapes(rules, expected, scan)
  problems = []
  for r in rules:
    keys = [r.torch_key.format(i=i) for i in range(num_layers)] if r.per_layer else [r.torch_key]
    for key in keys:
      if key in state and r.torch_key in want and tuple(np.shape(state[key])) != want[r.torch_key]:
        problems.append(f"{key} has shape {tuple(np.shape(state[key]))}, the model wants "
                        f"{want[r.torch_key]}")
  if problems:
    raise ConversionError(f"{source}: {len(problems)} tensor(s) of the wrong shape: "
                          + "; ".join(problems[:10]))


def check_against_model(params: Mapping, expected: Mapping, rules: list[Rule], num_layers: int,
                        scan: bool, source: str) -> None:
  """Compare converted params with the model's eval_shape tree; errors name the torch key."""
  got, want = flatten(params), flatten(expected)
  by_path: dict[str, str] = {}
  for r in rules:
    if r.per_layer and not scan:
      by_path.update({r.flax_path.format(i=i): r.torch_key.format(i=i) for i in range(num_layers)})
    else:
      by_path[_flax_key(r, scan)] = r.torch_key
  problems = []
  for path in sorted(set(want) - set(got)):
    problems.append(f"the model's {path} {tuple(want[path].shape)} has no source tensor")
  for path in sorted(set(got) - set(want)):
    problems.append(f"{by_path.get(path, path)} -> {path} is not a parameter of the model")
  for path in sorted(set(got) & set(want)):
    g, w = tuple(np.shape(got[path])), tuple(want[path].shape)
    if g != w:
      key = by_path.get(path, path)
      if scan and "{i}" in key:
        key = f"{key} (stacked over layers)"
      problems.append(f"{key}: converts to {path} of shape {g}, the model wants {w}")
  if problems:
    raise ConversionError(f"{source}: {len(problems)} problem(s): " + "; ".join(problems[:10]))


def _convert(state, rules, expected, num_layers, scan, dtype, source):
  check_source_shapes(state, rules, expected, num_layers, scan, source)
  try:
    params, used = torch_to_flax(state, rules, num_layers=num_layers, scan=scan, dtype=dtype)
  except ConversionError as e:
    raise ConversionError(f"{source}: {e}") from None
  check_against_model(params, expected, rules, num_layers, scan, source)
  return params, used


def _unbox_params(params):
  params = nn.meta.unbox(params)
  if isinstance(params, Mapping) and set(params) == {"params"}:
    params = params["params"]
  return params


# ----------------------------------------------------------------------------- vision state dicts

def vision_params_from_state(state: Mapping[str, np.ndarray], config: VisionConfig,
                             naming: str = "hf", prefix: str | None = None,
                             ln_vision_key: str | None = None,
                             source: str = "state dict") -> tuple[dict, set[str]]:
  """A flat torch state dict -> (EvaViT params, keys not used). See `vision_rules` for the
  prefix arguments; with ln_vision_key "" the tree has no `ln_vision` (the caller adds it).
  Blocks beyond config.num_layers (EVA's 40th) are simply not read."""
  if naming == "hf":
    state = unfuse_qkv_bias(state, source)
  rules = vision_rules(config, naming, prefix, ln_vision_key)
  expected = vision_param_shapes(config)
  if ln_vision_key == "":  # the caller supplies ln_vision from elsewhere
    expected = {k: v for k, v in expected.items() if k != "ln_vision"}
  params, used = _convert(state, rules, expected, config.num_layers,
                          config.scan_layers, dtype_of(config.param_dtype), source)
  unused = {re.sub(r"\[[qv]\]$", "", k) for k in set(state) - used}
  return params, unused


def vision_state_from_params(params, config: VisionConfig, naming: str = "hf",
                             prefix: str | None = None,
                             ln_vision_key: str | None = None) -> dict[str, np.ndarray]:
  """EvaViT params -> a flat torch-named dict of numpy arrays (HF: fused qkv.bias, zero k)."""
  rules = vision_rules(config, naming, prefix, ln_vision_key)
  state = flax_to_torch(_unbox_params(params), rules, config.num_layers, config.scan_layers)
  return fuse_qkv_bias(state) if naming == "hf" else state


def dropped_vision_layers(keys, config: VisionConfig, naming: str,
                          prefix: str | None = None) -> set[str]:
  """Keys of blocks at index >= config.num_layers (EVA ViT-g's 40th block is not used)."""
  pattern = vision_layer_pattern(naming, prefix)
  out = set()
  for k in keys:
    m = pattern.match(k)
    if m and int(m.group(1)) >= config.num_layers:
      out.add(k)
  return out


# ----------------------------------------------------------------------------- Q-Former state dicts

def qformer_params_from_state(state: Mapping[str, np.ndarray], config: QFormerConfig,
                              naming: str = "hf", prefix: str = "",
                              source: str = "state dict") -> tuple[dict, set[str]]:
  """A flat torch state dict -> (QFormer params, keys not used)."""
  rules = qformer_rules(config, naming, prefix)
  params, used = _convert(state, rules, qformer_param_shapes(config), 0, False,
                          dtype_of(config.param_dtype), source)
  return params, set(state) - used


def qformer_state_from_params(params, config: QFormerConfig, naming: str = "hf",
                              prefix: str = "") -> dict[str, np.ndarray]:
  return flax_to_torch(_unbox_params(params), qformer_rules(config, naming, prefix))


# ----------------------------------------------------------------------------- HF configs

def _square(value, name, source):
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise ValueError(f"{source}: {name} {value} is not square; EvaViT supports square only")
    value = value[0]
  return int(value)


def vision_config_from_hf(hf: Mapping, source: str = "config", **overrides) -> VisionConfig:
  """A Blip2VisionConfig dict -> VisionConfig. HF applies `layer_norm_eps` in post_layernorm as
  well, so ln_vision_eps takes it too. `overrides` set other fields (dtype, scan_layers, ...)."""
  act = hf.get("hidden_act", "gelu")
  if act != "gelu":
    raise ValueError(f"{source}: hidden_act {act!r}; EvaViT implements exact GELU ('gelu') only")
  if not hf.get("qkv_bias", True):
    raise ValueError(f"{source}: qkv_bias is false; EvaViT always has q and v biases")
  eps = float(hf.get("layer_norm_eps", 1e-6))
  fields = dict(image_size=_square(hf.get("image_size", 224), "image_size", source),
                patch_size=_square(hf.get("patch_size", 14), "patch_size", source),
                hidden_size=int(hf.get("hidden_size", 1408)),
                num_layers=int(hf.get("num_hidden_layers", 39)),
                num_heads=int(hf.get("num_attention_heads", 16)),
                mlp_dim=int(hf.get("intermediate_size", 6144)),
                layer_norm_eps=eps, ln_vision_eps=eps)
  fields.update(overrides)
  return VisionConfig.from_dict(fields)


def vision_config_to_hf(config: VisionConfig) -> dict:
  if config.ln_vision_eps != config.layer_norm_eps:
    log.warning("Blip2VisionModel has one eps (layer_norm_eps=%g) for its blocks and "
                "post_layernorm; ln_vision_eps=%g is not kept, so outputs shift slightly",
                config.layer_norm_eps, config.ln_vision_eps)
  return dict(hidden_size=config.hidden_size, intermediate_size=config.mlp_dim,
              num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
              image_size=config.image_size, patch_size=config.patch_size, hidden_act="gelu",
              layer_norm_eps=config.layer_norm_eps, qkv_bias=True)


def qformer_config_from_hf(hf: Mapping, source: str = "config", num_query_tokens: int = 32,
                           **overrides) -> QFormerConfig:
  """A Blip2QFormerConfig dict -> QFormerConfig (`num_query_tokens` lives in Blip2Config)."""
  act = hf.get("hidden_act", "gelu")
  if act != "gelu":
    raise ValueError(f"{source}: hidden_act {act!r}; QFormer implements exact GELU ('gelu') only")
  hidden_drop = float(hf.get("hidden_dropout_prob", 0.1))
  probs_drop = float(hf.get("attention_probs_dropout_prob", 0.1))
  if hidden_drop != probs_drop:
    log.warning("%s: hidden_dropout_prob %g != attention_probs_dropout_prob %g; QFormer has one "
                "rate and uses %g", source, hidden_drop, probs_drop, hidden_drop)
  fields = dict(hidden_size=int(hf.get("hidden_size", 768)),
                num_layers=int(hf.get("num_hidden_layers", 12)),
                num_heads=int(hf.get("num_attention_heads", 12)),
                intermediate_size=int(hf.get("intermediate_size", 3072)),
                layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
                cross_attention_freq=int(hf.get("cross_attention_frequency", 2)),
                encoder_hidden_size=int(hf.get("encoder_hidden_size", 1408)),
                num_query_tokens=int(num_query_tokens), dropout=hidden_drop)
  fields.update(overrides)
  return QFormerConfig.from_dict(fields)


def qformer_config_to_hf(config: QFormerConfig) -> dict:
  return dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
              num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
              hidden_act="gelu", hidden_dropout_prob=config.dropout,
              attention_probs_dropout_prob=config.dropout, layer_norm_eps=config.layer_norm_eps,
              cross_attention_frequency=config.cross_attention_freq,
              encoder_hidden_size=config.encoder_hidden_size, use_qformer_text_input=False)


def _read_hf_folder(folder: str, tower: str):
  """-> (tower config dict, key prefix, top-level config, state). Accepts the tower's own folder
  or a full Blip2 folder (then the tower's sub-config and `vision_model.`/`qformer.` keys)."""
  config_path = epath.Path(folder) / "config.json"  # local or gs://
  if not config_path.exists():
    raise FileNotFoundError(f"{folder}: no config.json (save with save_pretrained)")
  top = tensor_files.read_json(config_path)
  model_type = top.get("model_type")
  own_type = _VISION_MODEL_TYPE if tower == "vision" else _QFORMER_MODEL_TYPE
  if model_type == own_type:
    hf, prefix = top, ""
  elif model_type == _BLIP2_MODEL_TYPE:
    sub = "vision_config" if tower == "vision" else "qformer_config"
    hf, prefix = top.get(sub) or {}, "vision_model." if tower == "vision" else "qformer."
  else:
    raise ValueError(f"{config_path}: model_type {model_type!r}; expected {own_type!r} or "
                     f"{_BLIP2_MODEL_TYPE!r}")
  return hf, prefix, top, tensor_files.load_safetensors_folder(folder)


def _save_hf_folder(folder: str, hf_config, state: Mapping[str, np.ndarray]) -> None:
  import torch
  from safetensors.torch import save_file

  def to_torch(a):
    a = np.ascontiguousarray(a)
    if a.dtype == jnp.bfloat16:
      return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)

  with tensor_files.local_path_for(folder) as local:  # gs://: written locally, then copied
    os.makedirs(local, exist_ok=True)
    hf_config.save_pretrained(local)
    save_file({k: to_torch(v) for k, v in state.items()},
              os.path.join(local, "model.safetensors"), metadata={"format": "pt"})


# ----------------------------------------------------------------------------- public API

def vision_from_hf(folder: str, **overrides) -> tuple[EvaViT, dict]:
  """A saved Blip2VisionModel (or Blip2 model) folder -> (EvaViT, params). `overrides` set
  VisionConfig fields the HF config does not have (dtype, param_dtype, scan_layers, remat_policy).
  `model.apply({"params": params}, pixels_nhwc)` equals HF's last_hidden_state."""
  hf, prefix, _, state = _read_hf_folder(folder, "vision")
  config = vision_config_from_hf(hf, source=folder, **overrides)
  params, unused = vision_params_from_state(state, config, "hf", prefix, source=folder)
  if prefix:
    unused = {k for k in unused if k.startswith(prefix)}
  if unused:
    raise ConversionError(f"{folder}: {len(unused)} tensor(s) the model has no place for, e.g. "
                          f"{sorted(unused)[:5]}")
  return EvaViT(config), params


def vision_to_hf(model: EvaViT, params, folder: str) -> None:
  """Write `folder` (config.json + model.safetensors) for Blip2VisionModel.from_pretrained."""
  from transformers import Blip2VisionConfig
  config = model.config
  state = vision_state_from_params(params, config, "hf")
  _save_hf_folder(folder, Blip2VisionConfig(**vision_config_to_hf(config)), state)


def qformer_from_hf(folder: str, num_query_tokens: int | None = None,
                    **overrides) -> tuple[QFormer, dict]:
  """A saved Blip2QFormerModel (or Blip2 model) folder -> (QFormer, params). The text-only FFN
  (`intermediate`/`output`, present when use_qformer_text_input) is ignored.
  `model.apply({"params": params}, query_embeds, encoder_hidden_states)` equals HF's
  last_hidden_state."""
  hf, prefix, top, state = _read_hf_folder(folder, "qformer")
  if num_query_tokens is None:
    num_query_tokens = int(top.get("num_query_tokens", 32))
  config = qformer_config_from_hf(hf, source=folder, num_query_tokens=num_query_tokens,
                                  **overrides)
  params, unused = qformer_params_from_state(state, config, "hf", prefix, source=folder)
  text_only = qformer_text_only_pattern("hf", prefix)
  unused = {k for k in unused if k.startswith(prefix) and not text_only.match(k)}
  if unused:
    raise ConversionError(f"{folder}: {len(unused)} tensor(s) the model has no place for, e.g. "
                          f"{sorted(unused)[:5]}")
  return QFormer(config), params


def qformer_to_hf(model: QFormer, params, folder: str) -> None:
  """Write `folder` (config.json + model.safetensors) for Blip2QFormerModel.from_pretrained."""
  from transformers import Blip2QFormerConfig
  config = model.config
  state = qformer_state_from_params(params, config, "hf")
  _save_hf_folder(folder, Blip2QFormerConfig(**qformer_config_to_hf(config)), state)


__all__ = [
    "vision_from_hf", "vision_to_hf", "qformer_from_hf", "qformer_to_hf",
    "vision_params_from_state", "vision_state_from_params", "qformer_params_from_state",
    "qformer_state_from_params", "vision_config_from_hf", "qformer_config_from_hf",
    "vision_param_shapes", "qformer_param_shapes", "dropped_vision_layers", "vision_rules",
    "qformer_rules",
]
