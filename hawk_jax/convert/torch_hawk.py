"""HAWK in PyTorch, built from `transformers` modules, with the original parameter names.

  model = HawkTorch(config)                      # float32, eval mode
  model.load_state_dict(full_state)              # original HAWK names (hawk_to_torch(...)[1])
  out = model(frames_u8, motion_u8, input_ids, attention_mask, visual_mask)
  out["inputs_embeds"], out["logits"], out["tight_appearance"], out["tight_motion"]

Modules: per branch a `Blip2VisionModel` (its `post_layernorm` is BLIP-2's `ln_vision`, with
eps set to `config.vision.ln_vision_eps`), a `Blip2QFormerModel` image Q-Former and one video
Q-Former, `nn.Parameter` query tokens, an `nn.Embedding` frame position table, `nn.Linear`
projections (`llama_proj_0`, `llama_proj_last.{encoder_0, decoder_2, encoder_1}`), and one
`LlamaForCausalLM` as `llama_model`.

`state_dict()` and `load_state_dict()` speak the ORIGINAL names (`visual_encoder.blocks.N...`,
`ln_vision`, `Qformer.bert...`, `video_Qformer_motion.bert...`, ...): a state-dict hook and a
load pre-hook rename the transformers-internal keys with a map derived from the tower tables
(hawk_jax/convert/blip2_tables.py, HF naming against LAVIS naming of the same Flax paths).
transformers fuses EVA's q and v biases into one `qkv.bias` with a zero k third; the hooks
split and re-fuse it. The load hook drops the buffers a released file carries
(`*.bert.embeddings.position_ids`, `*.rotary_emb.inv_freq`).

The forward pass mirrors the released `encode_videoQformer_visual` (per-frame ViT + ln_vision,
image Q-Former, frame positions added to all queries of a frame, video Q-Former over T*Q
tokens, `llama_proj_0`, `llama_proj_last`) and the prompt splice (the 2*Nv placeholders
marked by `visual_mask` get [appearance; motion] tokens). Pixel normalisation is a switch
(`normalize_pixels`, default from the config): released HAWK feeds [0, 1] frames to EVA.
LLaMA positions are `cumsum(attention_mask) - 1`, as in the JAX model (the same as the
original's `arange` for right-padded prompts).

At hawk7b size use `HawkTorch.from_state_dict(full_state, config)`: it builds the modules on
the meta device (no random weights allocated) and then takes the given tensors.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import (
  Blip2QFormerConfig,
  Blip2QFormerModel,
  Blip2VisionConfig,
  Blip2VisionModel,
  LlamaConfig,
  LlamaForCausalLM,
)

from hawk_jax.convert.blip2_hf import qformer_config_to_hf
from hawk_jax.convert.blip2_tables import qformer_rules, vision_rules
from hawk_jax.convert.hawk_names import BRANCH_NAMES, IGNORED_BUFFERS, hawk_to_torch
from hawk_jax.convert.llama_hf import llama_config_to_hf
from hawk_jax.models.hawk import CLIP_MEAN, CLIP_STD
from hawk_jax.models.model_config import HawkConfig, VisionConfig

_FUSED = ".qkv.bias"


def _attr(name: str) -> str:
  return name.rstrip(".")


def _vision_hf_config(config: VisionConfig) -> Blip2VisionConfig:
  return Blip2VisionConfig(
      hidden_size=config.hidden_size, intermediate_size=config.mlp_dim,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      image_size=config.image_size, patch_size=config.patch_size, hidden_act="gelu",
      layer_norm_eps=config.layer_norm_eps, qkv_bias=True, attention_dropout=0.0)


def _pair_rules(hf_rules, original_rules, num_layers: int) -> dict[str, str]:
  """Two tables of the same Flax paths -> {HF key: original key}."""
  original = {r.flax_path: r.torch_key for r in original_rules}
  out = {}
  for r in hf_rules:
    other = original[r.flax_path]
    if r.per_layer:
      out.update({r.torch_key.format(i=i): other.format(i=i) for i in range(num_layers)})
    else:
      out[r.torch_key] = other
  return out


def tower_renames(config: HawkConfig) -> dict[str, str]:
  """transformers module key -> original HAWK key, for both branches' ViTs (post_layernorm ->
  ln_vision) and Q-Formers. The ViT's fused bias appears as `...qkv.bias[q]` / `[v]`."""
  out = {}
  vc = config.vision
  for n in BRANCH_NAMES.values():
    out.update(_pair_rules(vision_rules(vc, "hf", n.vit, n.vit + "post_layernorm"),
                           vision_rules(vc, "lavis", n.vit, n.ln_vision), vc.num_layers))
    for qc, prefix in ((config.qformer, n.qformer), (config.video_qformer, n.video_qformer)):
      out.update(_pair_rules(qformer_rules(qc, "hf", prefix), qformer_rules(qc, "lavis", prefix),
                             0))
  return out


class Projection(nn.Module):
  """The released `Projection`: h = encoder_0(x); returns (decoder_2(h), encoder_1(h))."""

  def __init__(self, hidden: int, llm_hidden: int, tight: int):
    super().__init__()
    self.encoder_0 = nn.Linear(hidden, hidden)
    self.encoder_1 = nn.Linear(hidden, tight)
    self.decoder_2 = nn.Linear(hidden, llm_hidden)

  def forward(self, x):
    h = self.encoder_0(x)
    return self.decoder_2(h), self.encoder_1(h)


class HawkTorch(nn.Module):
  """The two-branch HAWK; see the module docstring."""

  def __init__(self, config: HawkConfig, normalize_pixels: bool | None = None):
    super().__init__()
    self.config = config
    self.normalize_pixels = (config.normalize_pixels if normalize_pixels is None
                             else normalize_pixels)
    qc, vqc = config.qformer, config.video_qformer
    for n in BRANCH_NAMES.values():
      vit = Blip2VisionModel(_vision_hf_config(config.vision))
      vit.post_layernorm.eps = config.vision.ln_vision_eps  # BLIP-2's ln_vision: eps 1e-5
      setattr(self, _attr(n.vit), vit)
      setattr(self, _attr(n.qformer), Blip2QFormerModel(Blip2QFormerConfig(
          **qformer_config_to_hf(qc))))
      setattr(self, n.query_tokens, nn.Parameter(
          torch.randn(1, qc.num_query_tokens, qc.hidden_size) * 0.02))
      setattr(self, n.frame_position_embedding,
              nn.Embedding(config.max_frames, vqc.hidden_size))
      setattr(self, _attr(n.video_qformer), Blip2QFormerModel(Blip2QFormerConfig(
          **qformer_config_to_hf(vqc))))
      setattr(self, n.video_query_tokens, nn.Parameter(
          torch.randn(1, vqc.num_query_tokens, vqc.hidden_size) * 0.02))
      setattr(self, n.proj_0, nn.Linear(vqc.hidden_size, config.proj_hidden_size))
      setattr(self, n.proj_last, Projection(config.proj_hidden_size, config.llm.hidden_size,
                                            config.tight_size))
    self.llama_model = LlamaForCausalLM(LlamaConfig(**llama_config_to_hf(config.llm)))
    self._to_original = tower_renames(config)
    self._to_module = {v: k for k, v in self._to_original.items()}
    self.register_state_dict_post_hook(_rename_to_original)
    self.register_load_state_dict_pre_hook(_rename_to_module)
    self.register_load_state_dict_post_hook(_report_original_names)
    self._load_prefix = ""
    self.eval()

  @classmethod
  def from_state_dict(cls, state, config: HawkConfig,
                      normalize_pixels: bool | None = None) -> "HawkTorch":
    """A model holding `state` (original names, every tensor), built without first allocating
    random weights; tensors are taken as they are (dtype included), not copied."""
    with torch.device("meta"):
      model = cls(config, normalize_pixels)
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers are in no state dict: rebuild RoPE's inverse frequencies.
    rotary = model.llama_model.model.rotary_emb
    model.llama_model.model.rotary_emb = type(rotary)(config=model.llama_model.config)
    left = [n for n, b in model.named_buffers() if b.is_meta]
    if left:
      raise RuntimeError(f"buffers left on the meta device: {left[:5]}")
    return model.eval()

  # --------------------------------------------------------------------------- forward

  def pixels(self, frames_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [0, 1], CLIP-normalised when
    `normalize_pixels` (the released layout `b c t h w`)."""
    x = frames_u8.to(torch.float32) / 255.0
    if self.normalize_pixels:
      mean = torch.tensor(CLIP_MEAN, device=x.device)
      std = torch.tensor(CLIP_STD, device=x.device)
      x = (x - mean) / std
    return x.permute(0, 4, 1, 2, 3).contiguous()

  def encode_videoQformer_visual(self, image: torch.Tensor, motion: bool = False):  # noqa: N802
    """The released branch: image [B, 3, T, H, W] -> (llm tokens [B, Nv, D_llm],
    attention mask [B, Nv], tight-space output [B, Nv, tight])."""
    n = BRANCH_NAMES["motion" if motion else "appearance"]
    b, c, t, h, w = image.shape
    if t > self.config.max_frames:
      raise ValueError(f"{t} frames but the frame position table has {self.config.max_frames} "
                       f"rows")
    frames = image.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    vit = getattr(self, _attr(n.vit))
    image_embeds = vit(pixel_values=frames.to(vit.dtype)).last_hidden_state  # ln_vision'd
    query_tokens = getattr(self, n.query_tokens)
    qformer = getattr(self, _attr(n.qformer))
    q = qformer(query_embeds=query_tokens.expand(b * t, -1, -1),
                encoder_hidden_states=image_embeds).last_hidden_state
    positions = getattr(self, n.frame_position_embedding)(
        torch.arange(t, device=image.device))
    q = q.reshape(b, t, q.shape[1], q.shape[2]) + positions[None, :, None, :].to(q.dtype)
    q = q.reshape(b, t * q.shape[2], q.shape[3])
    video_query_tokens = getattr(self, n.video_query_tokens)
    video_hidden = getattr(self, _attr(n.video_qformer))(
        query_embeds=video_query_tokens.expand(b, -1, -1),
        encoder_hidden_states=q).last_hidden_state
    proj_0 = getattr(self, n.proj_0)
    tokens, tight = getattr(self, n.proj_last)(proj_0(video_hidden.to(proj_0.weight.dtype)))
    return tokens, torch.ones(tokens.shape[:-1], dtype=torch.long, device=tokens.device), tight

  def prompt_embeddings(self, input_ids, visual_mask, visual):
    """Token embeddings with visual[b, k] at the k-th marked position of row b (placeholder ids
    are embedded as 0 first, as released, so they may lie outside the vocabulary). The splice
    is a gather and a select with static shapes, so `torch.compile` traces it in one graph;
    the count check runs in eager mode only (under compile it would split the graph)."""
    mask = visual_mask.to(torch.bool)
    if not torch.compiler.is_compiling():
      counts = mask.sum(dim=1)
      if bool((counts != visual.shape[1]).any()):
        raise ValueError(f"visual_mask marks {counts.tolist()} positions per row; the model "
                         f"gives {visual.shape[1]} visual tokens")
    embed = self.llama_model.get_input_embeddings()
    emb = embed(torch.where(mask, torch.zeros_like(input_ids), input_ids))
    # The k-th marked position of a row takes visual token k: k = (marks so far) - 1.
    k = (torch.cumsum(mask.to(torch.long), dim=1) - 1).clamp(0, visual.shape[1] - 1)
    spliced = torch.gather(visual.to(emb.dtype), 1,
                           k[..., None].expand(-1, -1, visual.shape[-1]))
    return torch.where(mask[..., None], spliced, emb)

  def encode(self, frames, motion):
    """uint8 frames and motion [B, T, H, W, 3] -> (visual [B, 2Nv, D] = [appearance; motion]
    LLM tokens, tight_appearance, tight_motion [B, Nv, tight])."""
    app, _, tight_app = self.encode_videoQformer_visual(self.pixels(frames))
    mot, _, tight_mot = self.encode_videoQformer_visual(self.pixels(motion), motion=True)
    return torch.cat([app, mot], dim=1), tight_app, tight_mot

  @staticmethod
  def positions(attention_mask):
    """LLaMA positions: cumsum(attention_mask) - 1 on real tokens, 0 on padding."""
    m = attention_mask.to(torch.long)
    return torch.where(m.bool(), torch.cumsum(m, dim=-1) - 1, torch.zeros_like(m))

  def forward(self, frames, motion, input_ids, attention_mask, visual_mask):
    """uint8 frames and motion [B, T, H, W, 3], prompt ids/masks [B, L] -> dict of
    inputs_embeds [B, L, D], logits [B, L, V], visual [B, 2Nv, D], tight_appearance and
    tight_motion [B, Nv, tight]."""
    visual, tight_app, tight_mot = self.encode(frames, motion)
    emb = self.prompt_embeddings(input_ids, visual_mask, visual)
    logits = self.llama_model(inputs_embeds=emb, attention_mask=attention_mask,
                              position_ids=self.positions(attention_mask)).logits
    return {"inputs_embeds": emb, "logits": logits, "visual": visual,
            "tight_appearance": tight_app, "tight_motion": tight_mot}


def _rename_to_original(module: HawkTorch, state_dict, prefix: str, local_metadata) -> None:
  """State-dict post hook: transformers keys -> original names, order kept."""
  del local_metadata
  items = list(state_dict.items())
  state_dict.clear()
  for key, value in items:
    local = key[len(prefix):] if key.startswith(prefix) else None
    if local is not None and local.endswith(_FUSED) and local + "[q]" in module._to_original:
      # EVA has no k bias; the k third is dropped. (A k bias adds the same q.b_k to every
      # logit of a query, which softmax ignores, so nothing is lost even when it is non-zero.)
      d = value.shape[0] // 3
      state_dict[prefix + module._to_original[local + "[q]"]] = value[:d]
      state_dict[prefix + module._to_original[local + "[v]"]] = value[2 * d:]
    elif local is not None and local in module._to_original:
      state_dict[prefix + module._to_original[local]] = value
    else:
      state_dict[key] = value


def _rename_to_module(module: HawkTorch, state_dict, prefix: str, local_metadata, strict,
                      missing_keys, unexpected_keys, error_msgs) -> None:
  """Load pre-hook: original names -> transformers keys; released buffers dropped."""
  del local_metadata, strict, missing_keys, unexpected_keys, error_msgs
  module._load_prefix = prefix
  for key in [k for k in state_dict if k.startswith(prefix)]:
    local = key[len(prefix):]
    if IGNORED_BUFFERS.search(local):
      del state_dict[key]
      continue
    target = module._to_module.get(local)
    if target is None:
      continue
    if target.endswith(_FUSED + "[q]"):
      other = prefix + module._to_original[target[:-3] + "[v]"]
      if other not in state_dict:
        continue  # left for load_state_dict to report as missing / unexpected
      q = state_dict.pop(key)
      v = state_dict.pop(other)
      state_dict[prefix + target[:-3]] = torch.cat([q, torch.zeros_like(q), v])
    elif target.endswith(_FUSED + "[v]"):
      continue  # fused together with its q half
    else:
      state_dict[prefix + target] = state_dict.pop(key)


def _report_original_names(module: HawkTorch, incompatible_keys) -> None:
  """Load post-hook: missing keys are reported under their original names as well."""
  prefix = module._load_prefix
  renamed = []
  for key in incompatible_keys.missing_keys:
    local = key[len(prefix):] if key.startswith(prefix) else None
    if local is not None and local.endswith(_FUSED) and local + "[q]" in module._to_original:
      renamed += [prefix + module._to_original[local + s] for s in ("[q]", "[v]")]
    elif local is not None and local in module._to_original:
      renamed.append(prefix + module._to_original[local])
    else:
      renamed.append(key)
  incompatible_keys.missing_keys[:] = renamed


def to_torch_state(state) -> dict[str, torch.Tensor]:
  """numpy arrays (bfloat16 included) -> torch tensors, sharing memory where possible."""
  import warnings

  import ml_dtypes
  import numpy as np
  out = {}
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    for k, a in state.items():
      a = np.ascontiguousarray(a)
      if a.dtype == ml_dtypes.bfloat16:
        out[k] = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
      else:
        out[k] = torch.from_numpy(a)
  return out


def from_params(params, config: HawkConfig, normalize_pixels: bool | None = None) -> HawkTorch:
  """A float32 HawkTorch holding Flax `params` (a full tree); `.to(torch.bfloat16)` after it
  for bf16."""
  import numpy as np
  _, full = hawk_to_torch(params, config)
  # The model owns its tensors: read-only views of JAX arrays are copied, the rest taken.
  full = {k: a if a.flags.writeable else np.array(a) for k, a in full.items()}
  state = {k: v.float() for k, v in to_torch_state(full).items()}
  return HawkTorch.from_state_dict(state, config, normalize_pixels)


def state_numpy(model: HawkTorch) -> dict:
  """model.state_dict() (original names) as float32-or-native numpy arrays."""
  out = {}
  for k, v in model.state_dict().items():
    v = v.detach().cpu()
    if v.dtype == torch.bfloat16:
      v = v.float()
    out[k] = v.numpy()
  return out
