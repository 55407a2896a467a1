"""LAVIS BLIP-2 checkpoints -> Flax: `eva_vit_g.pth` (EVA ViT-g) and
`blip2_pretrained_*.pth` (ln_vision, image Q-Former, query tokens).

  vit = vision_from_lavis("eva_vit_g.pth", vision_config)
  out = blip2_from_lavis("blip2_pretrained_flant5xxl.pth", vision_config, qformer_config,
                         eva_vit="eva_vit_g.pth")
  out["vision"], out["qformer"], out["query_tokens"]

What the files hold (LAVIS, and HAWK's `Blip2Base` which loads them the same way):
- `eva_vit_g.pth`: a flat state dict with no prefix (`cls_token`, `pos_embed`,
  `patch_embed.proj.*`, `blocks.N.{norm1, attn.{qkv.weight, q_bias, v_bias, proj}, norm2,
  mlp.fc1, mlp.fc2}`) and 40 blocks; BLIP-2 builds 39 and loads with strict=False, so block 39
  is dropped here too. It has no `ln_vision`: BLIP-2 trained that.
- `blip2_pretrained_*.pth`: `{"model": {...}}` with `ln_vision.*`, `Qformer.bert.*` (the full
  BERT, text parts included, which HAWK drops), `query_tokens` and BLIP-2's own heads; it has no
  `visual_encoder.*` (the frozen ViT is not saved), hence `eva_vit=`.
- HAWK's model also holds motion twins of the frozen towers, named as in MOTION_TWINS; the
  released HAWK loads the BLIP-2 file into the appearance names only (the motion image
  Q-Former, ln_vision_motion and query_tokens_motion stay random there).
Files are read with torch.load(weights_only=True) via hawk_jax/tensor_files.py.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping

import numpy as np

from hawk_jax import tensor_files
from hawk_jax.convert.blip2_hf import (
  dropped_vision_layers,
  qformer_params_from_state,
  vision_param_shapes,
  vision_params_from_state,
)
from hawk_jax.convert.blip2_tables import qformer_text_only_pattern
from hawk_jax.convert.table import ConversionError, check_shapes
from hawk_jax.models.common import dtype_of
from hawk_jax.models.model_config import QFormerConfig, VisionConfig

log = logging.getLogger(__name__)

# Appearance-branch name -> the motion branch's twin in HAWK's `VideoLLAMA` (hawk/models/
# video_llama.py: visual_encoder_motion, ln_vision_motion, Qformer_motion, query_tokens_motion).
MOTION_TWINS = {
    "visual_encoder.": "visual_encoder_motion.",
    "ln_vision": "ln_vision_motion",
    "Qformer.": "Qformer_motion.",
    "query_tokens": "query_tokens_motion",
}


def _as_numpy(value):
  if hasattr(value, "detach"):  # a torch tensor handed in directly
    import torch
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def load_lavis_state(path_or_state, what: str = "checkpoint") -> tuple[dict, str]:
  """A path or a (possibly `{"model": ...}`-wrapped) state dict -> (flat numpy dict, name)."""
  if isinstance(path_or_state, (str, os.PathLike)):
    source = os.fspath(path_or_state)
    state = tensor_files.load_state_dict(source)
  elif isinstance(path_or_state, Mapping):
    source, state = f"{what} (in-memory state dict)", path_or_state
  else:
    raise TypeError(f"{what}: expected a file path or a state dict, got "
                    f"{type(path_or_state).__name__}")
  if "model" in state and isinstance(state["model"], Mapping):
    state = state["model"]
  bad = [k for k, v in state.items() if isinstance(v, Mapping)]
  if bad:
    raise ConversionError(f"{source}: expected a flat state dict of tensors; {bad[:3]} hold "
                          f"nested dicts")
  return {k: _as_numpy(v) for k, v in state.items()}, source


def _identity_ln_vision(config: VisionConfig) -> dict:
  dt = dtype_of(config.param_dtype)
  return {"scale": np.ones((config.hidden_size,), dt), "bias": np.zeros((config.hidden_size,), dt)}


def _report_unused(source: str, unused: set[str]) -> None:
  if unused:
    log.info("%s: %d tensor(s) not used by this conversion, e.g. %s", source, len(unused),
             sorted(unused)[:5])


def _vision_from_state(state: dict, source: str, config: VisionConfig,
                       prefix: str | None) -> tuple[dict, set[str]]:
  """The ViT blocks and embeddings (no ln_vision) -> (params, unused keys)."""
  if prefix is None:
    if "cls_token" in state:
      prefix = ""
    elif "visual_encoder.cls_token" in state:
      prefix = "visual_encoder."
    else:
      raise ConversionError(f"{source}: no EVA ViT here: neither `cls_token` (eva_vit_g.pth) nor "
                            f"`visual_encoder.cls_token` (a full BLIP-2/HAWK state dict)")
  params, unused = vision_params_from_state(state, config, "lavis", prefix, "", source)
  dropped = dropped_vision_layers(unused, config, "lavis", prefix)
  if dropped:
    blocks = sorted({int(k[len(prefix) + len("blocks."):].split(".")[0]) for k in dropped})
    log.info("%s: blocks %s are not used (the model has %d; BLIP-2 drops EVA's last block)",
             source, blocks, config.num_layers)
  return params, unused - dropped


def _read_ln_vision(state: dict, source: str, config: VisionConfig, key: str) -> dict:
  ln = {}
  for flax_name, suffix in (("scale", "weight"), ("bias", "bias")):
    torch_key = f"{key}.{suffix}"
    if torch_key not in state:
      raise ConversionError(f"{source}: missing {torch_key}")
    value = state[torch_key]
    if value.shape != (config.hidden_size,):
      raise ConversionError(f"{source}: {torch_key} has shape {value.shape}, the model wants "
                            f"({config.hidden_size},)")
    ln[flax_name] = value.astype(dtype_of(config.param_dtype))
  return ln


def _with_ln_vision(vision: dict, ln: dict, config: VisionConfig, source: str) -> dict:
  vision = dict(vision, ln_vision=ln)
  check_shapes(vision, vision_param_shapes(config), what=f"{source} -> EvaViT params")
  return vision


def vision_from_lavis(path_or_state, config: VisionConfig, prefix: str | None = None,
                      ln_vision_key: str = "ln_vision") -> dict:
  """EVA ViT params (EvaViT's tree, ln_vision included) from LAVIS names.

  Args:
    path_or_state: `eva_vit_g.pth`, or a full LAVIS/HAWK state dict (file or mapping).
    config: the target VisionConfig; blocks at index >= config.num_layers are not read.
    prefix: before the ViT keys; None detects "" (eva_vit_g.pth) or "visual_encoder.". Use
      "visual_encoder_motion." for HAWK's motion twin.
    ln_vision_key: where ln_vision lives ("ln_vision_motion" for the motion twin). When absent
      (eva_vit_g.pth) ln_vision is the identity and a warning says so.
  """
  state, source = load_lavis_state(path_or_state, "EVA ViT checkpoint")
  params, unused = _vision_from_state(state, source, config, prefix)
  if f"{ln_vision_key}.weight" in state:
    ln = _read_ln_vision(state, source, config, ln_vision_key)
    unused -= {f"{ln_vision_key}.weight", f"{ln_vision_key}.bias"}
  else:
    log.warning("%s: no %s.* here (eva_vit_g.pth carries none: it comes with the BLIP-2 "
                "checkpoint); ln_vision is left as the identity", source, ln_vision_key)
    ln = _identity_ln_vision(config)
  _report_unused(source, unused)
  return _with_ln_vision(params, ln, config, source)


def blip2_from_lavis(path_or_state, vision_config: VisionConfig | None,
                     qformer_config: QFormerConfig, eva_vit=None,
                     qformer_prefix: str = "Qformer.", query_tokens_key: str = "query_tokens",
                     ln_vision_key: str = "ln_vision") -> dict:
  """A LAVIS BLIP-2 checkpoint -> {"vision": EvaViT params (with ln_vision),
  "qformer": QFormer params, "query_tokens": [1, Q, H]}.

  The ViT comes from the checkpoint's `visual_encoder.*` when present, else from `eva_vit`
  (path or state dict of eva_vit_g.pth); its ln_vision always from the checkpoint. With
  vision_config None only "qformer" and "query_tokens" are returned.
  """
  state, source = load_lavis_state(path_or_state, "BLIP-2 checkpoint")
  out: dict = {}
  qformer, unused = qformer_params_from_state(state, qformer_config, "lavis", qformer_prefix,
                                              source)
  out["qformer"] = qformer
  if query_tokens_key not in state:
    raise ConversionError(f"{source}: missing {query_tokens_key}")
  tokens = state[query_tokens_key]
  want = (1, qformer_config.num_query_tokens, qformer_config.hidden_size)
  if tuple(tokens.shape) != want:
    raise ConversionError(f"{source}: {query_tokens_key} has shape {tuple(tokens.shape)}, the "
                          f"config wants {want}")
  out["query_tokens"] = tokens.astype(dtype_of(qformer_config.param_dtype))
  unused.discard(query_tokens_key)

  if vision_config is not None:
    ln = _read_ln_vision(state, source, vision_config, ln_vision_key)
    unused -= {f"{ln_vision_key}.weight", f"{ln_vision_key}.bias"}
    if "visual_encoder.cls_token" in state:
      vision, unused_vit = _vision_from_state(state, source, vision_config, "visual_encoder.")
      unused &= unused_vit
    elif eva_vit is None:
      raise ConversionError(
          f"{source}: missing visual_encoder.* (BLIP-2 checkpoints do not carry the frozen "
          f"EVA ViT); pass eva_vit= the path or state dict of eva_vit_g.pth")
    else:
      eva_state, eva_source = load_lavis_state(eva_vit, "EVA ViT checkpoint")
      vision, eva_unused = _vision_from_state(eva_state, eva_source, vision_config, None)
      _report_unused(eva_source, eva_unused)
    out["vision"] = _with_ln_vision(vision, ln, vision_config, source)

  text_only = qformer_text_only_pattern("lavis", qformer_prefix)
  _report_unused(source, {k for k in unused if not text_only.match(k)})
  return out
