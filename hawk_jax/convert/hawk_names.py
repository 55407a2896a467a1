"""HAWK's original PyTorch parameter names <-> the Flax `Hawk` tree (docs/model.md,
"Checkpoints and conversion").

One table (`hawk_groups`) names every tensor of the original `VideoLLAMA` (hawk/models/
video_llama.py) and the Flax path it becomes. It is built from the tower tables, with prefixes:

  original key                                  Flax path (source table)
  visual_encoder.{cls_token, pos_embed, patch_embed.proj, blocks.N.*}
                                                appearance/vit/...  (vision_rules, "lavis")
  ln_vision.{weight, bias}                      appearance/vit/ln_vision  (same table)
  Qformer.bert.{embeddings.LayerNorm, encoder.layer.N.*}
                                                appearance/qformer/...  (qformer_rules, "lavis")
  query_tokens [1, 32, 768]                     appearance/query_tokens
  video_frame_position_embedding.weight [32, 768]
                                                appearance/frame_position_embedding/embedding
  video_Qformer.bert.*                          appearance/video_qformer/...  (qformer_rules)
  video_query_tokens [1, 32, 768]               appearance/video_query_tokens
  llama_proj_0.{weight [4096, 768], bias}       appearance/proj/proj_0/dense/{kernel, bias}
  llama_proj_last.{encoder_0, decoder_2, encoder_1}.{weight, bias}
                                                appearance/proj/{encoder_0, ...}/dense/...
  the `_motion` twins (visual_encoder_motion., ln_vision_motion, Qformer_motion.,
  query_tokens_motion, video_frame_position_embedding_motion, video_Qformer_motion.,
  video_query_tokens_motion, llama_proj_motion_0, llama_proj_motion_last)
                                                motion/...
  llama_model.{model.*, lm_head.weight}         llm/...  (llama_hf.llama_rules)

A *group* is one entry of that table with one Flax subtree (e.g. ("motion", "video_qformer"),
("llm",)); imports are all-or-nothing per group, so a file brings whole groups.

What a released HAWK file holds (`pretrained.pth` after stage 1, `finetuned.pth` after stage 2,
both `{"model": {...}}`): only the 129 tensors the released code trains — both branches'
video Q-Formers, video query tokens, frame position embeddings and projections, plus
`query_tokens_motion` (trained by accident) — and 36 buffers (`*.bert.embeddings.position_ids`,
`llama_model.model.layers.N.self_attn.rotary_emb.inv_freq`) that are ignored here. Everything
else comes from elsewhere (see `python -m hawk_jax.convert from-torch`):
  - both EVA ViTs: EVA-CLIP ViT-g (`eva_vit_g.pth`, LAVIS) or HF `Blip2VisionModel`;
  - `ln_vision`, the image Q-Former and `query_tokens`: BLIP-2 (`blip2_pretrained_flant5xxl.pth`
    or HF); the released code loads BLIP-2 into the appearance names only, so its
    `ln_vision_motion` is an identity LayerNorm (torch's default init) and its motion image
    Q-Former (`Qformer_motion`) is RANDOM and frozen, and never saved: released weights cannot
    reproduce it, and a converted model gets a different random motion image Q-Former;
  - the LLM: LLaMA-2-7B-chat (HF folder).

All files are read with safetensors or `torch.load(weights_only=True)` (hawk_jax/tensor_files.py);
a file needing arbitrary unpickling is refused.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import flax.linen as nn
import jax
import numpy as np

from hawk_jax.convert.blip2_tables import qformer_rules, vision_rules
from hawk_jax.convert.lavis import load_lavis_state
from hawk_jax.convert.llama_hf import llama_rules
from hawk_jax.convert.table import (
  LINEAR,
  ConversionError,
  Rule,
  check_shapes,
  flax_to_torch,
  torch_to_flax,
)
from hawk_jax.models.hawk import TRAINABLE_GROUPS
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import abstract_params, has_subtree, subtree


@dataclasses.dataclass(frozen=True)
class BranchNames:
  """The original attribute names of one branch (`vit` and the Q-Formers are key prefixes)."""
  vit: str
  ln_vision: str
  qformer: str
  query_tokens: str
  frame_position_embedding: str
  video_qformer: str
  video_query_tokens: str
  proj_0: str
  proj_last: str


BRANCH_NAMES = {
    "appearance": BranchNames(
        vit="visual_encoder.", ln_vision="ln_vision", qformer="Qformer.",
        query_tokens="query_tokens", frame_position_embedding="video_frame_position_embedding",
        video_qformer="video_Qformer.", video_query_tokens="video_query_tokens",
        proj_0="llama_proj_0", proj_last="llama_proj_last"),
    "motion": BranchNames(
        vit="visual_encoder_motion.", ln_vision="ln_vision_motion", qformer="Qformer_motion.",
        query_tokens="query_tokens_motion",
        frame_position_embedding="video_frame_position_embedding_motion",
        video_qformer="video_Qformer_motion.", video_query_tokens="video_query_tokens_motion",
        proj_0="llama_proj_motion_0", proj_last="llama_proj_motion_last"),
}
LLM_PREFIX = "llama_model."
PROJ_HEADS = ("encoder_0", "decoder_2", "encoder_1")

# The groups whose tensors the released code saves under "model" (129 tensors): what it trains,
# plus `query_tokens_motion` (trained there by accident; exported even where it is frozen).
EXPORTED_TRAINABLE = tuple((b, g) for b in BRANCH_NAMES for g in TRAINABLE_GROUPS) + (
    ("motion", "query_tokens"),)

# Buffers a released `.pth["model"]` carries beside the parameters; accepted and ignored.
IGNORED_BUFFERS = re.compile(r"(^|\.)bert\.embeddings\.position_ids$|(^|\.)rotary_emb\.inv_freq$")


@dataclasses.dataclass(frozen=True)
class Group:
  """Rules (full Flax paths) for the subtree at `path`; `{i}` keys repeat `num_layers` times."""
  path: tuple[str, ...]
  rules: tuple[Rule, ...]
  num_layers: int = 0
  scan: bool = False

  @property
  def name(self) -> str:
    return "/".join(self.path)

  def torch_keys(self) -> list[str]:
    keys = []
    for r in self.rules:
      if r.per_layer:
        keys.extend(r.torch_key.format(i=i) for i in range(self.num_layers))
      else:
        keys.append(r.torch_key)
    return keys


def _nest(rules, flax_prefix: str, torch_prefix: str = "") -> tuple[Rule, ...]:
  return tuple(Rule(torch_prefix + r.torch_key, flax_prefix + r.flax_path, r.transform)
               for r in rules)


def _linear(torch_stem: str, flax_stem: str) -> list[Rule]:
  return [Rule(f"{torch_stem}.weight", f"{flax_stem}/dense/kernel", LINEAR),
          Rule(f"{torch_stem}.bias", f"{flax_stem}/dense/bias")]


def hawk_groups(config: HawkConfig) -> list[Group]:
  """Every parameter of `Hawk(config)` by group, with its original HAWK name."""
  groups = []
  vc = config.vision
  for b, n in BRANCH_NAMES.items():
    vit = vision_rules(vc, "lavis", n.vit, n.ln_vision)
    groups.append(Group((b, "vit"), _nest(vit, f"{b}/vit/"), vc.num_layers, vc.scan_layers))
    groups.append(Group((b, "qformer"),
                        _nest(qformer_rules(config.qformer, "lavis", n.qformer), f"{b}/qformer/")))
    groups.append(Group((b, "query_tokens"), (Rule(n.query_tokens, f"{b}/query_tokens"),)))
    groups.append(Group((b, "frame_position_embedding"),
                        (Rule(f"{n.frame_position_embedding}.weight",
                              f"{b}/frame_position_embedding/embedding"),)))
    groups.append(Group((b, "video_qformer"),
                        _nest(qformer_rules(config.video_qformer, "lavis", n.video_qformer),
                              f"{b}/video_qformer/")))
    groups.append(Group((b, "video_query_tokens"),
                        (Rule(n.video_query_tokens, f"{b}/video_query_tokens"),)))
    proj = _linear(n.proj_0, f"{b}/proj/proj_0")
    for head in PROJ_HEADS:
      proj += _linear(f"{n.proj_last}.{head}", f"{b}/proj/{head}")
    groups.append(Group((b, "proj"), tuple(proj)))
  groups.append(Group(("llm",), _nest(llama_rules(config.llm), "llm/", LLM_PREFIX),
                      config.llm.num_layers, config.llm.scan_layers))
  return groups


# ----------------------------------------------------------------------------- shapes

def _zero_size_like(tree):
  """Arrays of the right shapes whose dtype has itemsize 0: the table's transforms run on them
  (transposes, reshapes, copies) without allocating, which gives the torch shapes of hawk7b."""
  return jax.tree.map(lambda s: np.empty(s.shape, np.dtype([])), tree)


def hawk_torch_shapes(config: HawkConfig, trainable_only: bool = False) -> dict[str, tuple]:
  """Original key -> torch shape for every tensor (or the 129 exported trainable ones), from
  `jax.eval_shape` alone."""
  fake = _zero_size_like(abstract_params(config))
  out = {}
  for g in hawk_groups(config):
    if trainable_only and g.path not in EXPORTED_TRAINABLE:
      continue
    state = flax_to_torch(fake, list(g.rules), g.num_layers, g.scan)
    out.update({k: tuple(v.shape) for k, v in state.items()})
  return out


# ----------------------------------------------------------------------------- torch -> JAX

def _named_transforms(group: Group, source: str) -> list[Rule]:
  """Rules whose forward transform names the torch key when an array does not fit."""
  def named(rule):
    def fwd(x):
      try:
        return rule.transform.fwd(x)
      except (ValueError, TypeError) as e:
        raise ConversionError(f"{source}: {rule.torch_key} of shape {tuple(np.shape(x))} does not "
                              f"fit the model ({e})") from None
    return Rule(rule.torch_key, rule.flax_path, dataclasses.replace(rule.transform, fwd=fwd))
  return [named(r) for r in group.rules]


def hawk_params_from_torch(path_or_state, config: HawkConfig) -> dict[tuple[str, ...], object]:
  """A HAWK PyTorch state dict -> {group path: Flax subtree} for the groups it holds.

  Accepts a released `pretrained.pth` / `finetuned.pth` (`{"model": {...}}`, 129 tensors and
  36 ignored buffers), a full state dict (`hawk_to_torch(...)[1]`, `HawkTorch.state_dict()`),
  or anything between, as a path or a mapping. Each group must be complete; a key HAWK does not
  have, a group with missing keys, or a tensor of the wrong shape is an error naming it. Arrays
  come back in the model's parameter dtypes, e.g. `{("motion", "query_tokens"): [1, Q, H],
  ("llm",): {...}}`.
  """
  state, source = load_lavis_state(path_or_state, "HAWK checkpoint")
  state = {k: v for k, v in state.items() if not IGNORED_BUFFERS.search(k)}
  abstract = abstract_params(config)
  expected = hawk_torch_shapes(config)
  unknown = sorted(set(state) - set(expected))
  if unknown:
    raise ConversionError(f"{source}: {len(unknown)} tensor(s) that HAWK (this config) has no "
                          f"place for: {unknown[:8]}")
  wrong = [f"{k} has shape {tuple(np.shape(state[k]))}, the model wants {expected[k]}"
           for k in sorted(state) if tuple(np.shape(state[k])) != expected[k]]
  if wrong:
    raise ConversionError(f"{source}: {len(wrong)} tensor(s) of the wrong shape: "
                          + "; ".join(wrong[:8]))
  out = {}
  for g in hawk_groups(config):
    keys = g.torch_keys()
    present = [k for k in keys if k in state]
    if not present:
      continue
    if len(present) != len(keys):
      missing = [k for k in keys if k not in state]
      raise ConversionError(f"{source}: group {g.name} is incomplete: {len(missing)} of its "
                            f"{len(keys)} tensors are missing, e.g. {missing[:5]}")
    tree, _ = torch_to_flax(state, _named_transforms(g, source), g.num_layers, g.scan)
    want = subtree(abstract, g.path)
    sub = jax.tree.map(lambda a, w: np.asarray(a).astype(w.dtype), subtree(tree, g.path), want)
    check_shapes(sub, want, what=f"{source} -> {g.name}")
    out[g.path] = sub
  if not out:
    raise ConversionError(f"{source}: no HAWK tensors in it")
  return out


def assemble(groups: Mapping[tuple[str, ...], object]) -> dict:
  """{group path: subtree} -> one nested param dict."""
  out: dict = {}
  for path, sub in groups.items():
    d = out
    for p in path[:-1]:
      d = d.setdefault(p, {})
    d[path[-1]] = sub
  return out


# ----------------------------------------------------------------------------- JAX -> torch

def hawk_to_torch(params, config: HawkConfig) -> tuple[dict[str, np.ndarray],
                                                       dict[str, np.ndarray]]:
  """Flax params -> (trainable_state, full_state), numpy arrays under the original names.

  `trainable_state` is exactly the 129 tensors a released `.pth["model"]` holds, in float32 as
  the original trains them (`query_tokens_motion` included even where it is frozen here);
  `full_state` holds every group present in `params`, in the params' dtypes. The original code
  loads either with `load_state_dict(..., strict=False)`; `HawkTorch` loads `full_state` strictly.
  """
  params = nn.meta.unbox(params)
  abstract = abstract_params(config)
  full: dict[str, np.ndarray] = {}
  for g in hawk_groups(config):
    if not has_subtree(params, g.path):
      continue
    check_shapes(subtree(params, g.path), subtree(abstract, g.path), what=f"params {g.name}")
    full.update(flax_to_torch(params, list(g.rules), g.num_layers, g.scan))
  groups = {g.path: g for g in hawk_groups(config)}
  missing = [groups[p].name for p in EXPORTED_TRAINABLE if not has_subtree(params, p)]
  if missing:
    raise ConversionError(f"params lack the trainable group(s) {missing}; a HAWK .pth needs them")
  trainable = {}
  for p in EXPORTED_TRAINABLE:
    for k in groups[p].torch_keys():
      a = full[k]
      trainable[k] = a if a.dtype == np.float32 else a.astype(np.float32)
  return trainable, full
