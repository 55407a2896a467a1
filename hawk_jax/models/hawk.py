"""HAWK: an appearance and a motion branch feeding one LLaMA (docs/model.md, "The model").

Each branch: frozen EVA ViT (+ ln_vision) per frame -> frozen image Q-Former (32 queries per
frame) -> learned frame position embedding -> trainable video Q-Former over all T*32 frame
tokens -> projection. The projection (`llama_proj_0`, then `llama_proj_last`'s `encoder_0`)
feeds two heads: `decoder_2` gives the LLM tokens and `encoder_1` the "tight space" used by the
video-motion consistency loss. The LLM sees [appearance tokens; motion tokens] spliced into the
prompt at the positions `visual_mask` marks.

Parameter tree (names the converters and the trainable mask rely on):
  appearance/{vit, qformer, query_tokens, frame_position_embedding, video_qformer,
              video_query_tokens, proj/{proj_0, encoder_0, decoder_2, encoder_1}}
  motion/{same}
  llm/{...}
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hawk_jax.models.common import constrain, dtype_of
from hawk_jax.models.eva_vit import EvaViT
from hawk_jax.models.llama import Llama
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.qformer import QFormer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# torch.nn.Linear's default init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), ...).
_torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchLinear(nn.Module):
  """A Dense layer with torch.nn.Linear's init and logical axis names on its kernel."""
  features: int
  in_axis: str
  out_axis: str
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    return nn.Dense(
        self.features, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(_torch_linear_init, (self.in_axis, self.out_axis)),
        bias_init=nn.with_logical_partitioning(_torch_bias_init(fan_in), (self.out_axis,)),
        name="dense")(x)


class Projection(nn.Module):
  """`llama_proj_0` then the released `Projection`: x = encoder_0(proj_0(v));
  llm tokens = decoder_2(x); tight = encoder_1(x)."""
  config: HawkConfig

  @nn.compact
  def __call__(self, video_hidden):
    cfg = self.config
    dt = dtype_of(cfg.llm.dtype)
    h = TorchLinear(cfg.proj_hidden_size, "kv_embed", "embed", dt, name="proj_0")(video_hidden)
    h = TorchLinear(cfg.proj_hidden_size, "mlp", "embed", dt, name="encoder_0")(h)
    llm_tokens = TorchLinear(cfg.llm.hidden_size, "mlp", "embed", dt, name="decoder_2")(h)
    tight = TorchLinear(cfg.tight_size, "embed", "tight", dt, name="encoder_1")(h)
    return llm_tokens, tight


class Branch(nn.Module):
  """One visual branch: frames [B, T, H, W, 3] in [0, 1] (or normalised) -> LLM tokens
  [B, Nv, D_llm] and tight-space features [B, Nv, tight]."""
  config: HawkConfig

  def setup(self):
    cfg = self.config
    self.vit = EvaViT(cfg.vision)
    self.qformer = QFormer(cfg.qformer)
    qdt = dtype_of(cfg.qformer.param_dtype)
    self.query_tokens = self.param(
        "query_tokens",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "queries", "kv_embed")),
        (1, cfg.qformer.num_query_tokens, cfg.qformer.hidden_size), qdt)
    self.frame_position_embedding = nn.Embed(
        cfg.max_frames, cfg.video_qformer.hidden_size,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                    ("frames", "kv_embed")))
    self.video_qformer = QFormer(cfg.video_qformer)
    self.video_query_tokens = self.param(
        "video_query_tokens",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "queries", "kv_embed")),
        (1, cfg.video_qformer.num_query_tokens, cfg.video_qformer.hidden_size), jnp.float32)
    self.proj = Projection(cfg)

  def frame_tokens(self, frames):
    """Frozen part: per-frame ViT + image Q-Former -> [B, T, Qi, Hq]."""
    b, t = frames.shape[:2]
    images = frames.reshape((b * t,) + frames.shape[2:])
    image_embeds = self.vit(images)
    queries = jnp.broadcast_to(self.query_tokens, (b * t,) + self.query_tokens.shape[1:])
    q = self.qformer(queries, image_embeds)
    return q.reshape((b, t) + q.shape[1:])

  def __call__(self, frames, deterministic: bool = True):
    """`frames`: pixels [B, T, H, W, 3], or the frozen part's output [B, T, Qi, Hq] computed
    ahead of time (`Hawk.frozen_frame_tokens`), which skips the ViT and image Q-Former."""
    cfg = self.config
    b, t = frames.shape[:2]
    if t > cfg.max_frames:
      raise ValueError(f"{t} frames but the frame position table has {cfg.max_frames} rows")
    q = frames if frames.ndim == 4 else self.frame_tokens(frames)
    pos = self.frame_position_embedding(jnp.arange(t))
    q = q.astype(jnp.float32) + pos[None, :, None, :].astype(jnp.float32)
    q = q.reshape(b, t * q.shape[2], q.shape[3])
    q = constrain(q, "activation_batch", "activation_length", "activation_embed")
    vq = jnp.broadcast_to(self.video_query_tokens, (b,) + self.video_query_tokens.shape[1:])
    video_hidden = self.video_qformer(vq, q, deterministic=deterministic)
    return self.proj(video_hidden)


def normalize_frames(frames_u8, normalize: bool):
  """uint8 [.., H, W, 3] -> float32 in [0, 1], then CLIP mean/std when `normalize`."""
  x = frames_u8.astype(jnp.float32) / 255.0
  if normalize:
    x = (x - jnp.asarray(CLIP_MEAN, jnp.float32)) / jnp.asarray(CLIP_STD, jnp.float32)
  return x


def splice_visual(embeds, visual_mask, visual):
  """Put visual[b, k] at the k-th position where visual_mask[b] is set (in order).

  The loader guarantees each row has exactly visual.shape[1] marked positions; see
  `check_visual_mask` for a host-side check.
  """
  mask = visual_mask.astype(bool)
  idx = jnp.clip(jnp.cumsum(mask, axis=1) - 1, 0, visual.shape[1] - 1)
  gathered = jnp.take_along_axis(visual, idx[..., None], axis=1).astype(embeds.dtype)
  return jnp.where(mask[..., None], gathered, embeds)


def check_visual_mask(visual_mask, expected: int, what: str = "visual_mask") -> None:
  counts = np.asarray(visual_mask).astype(bool).sum(axis=-1)
  bad = np.nonzero(counts != expected)[0]
  if bad.size:
    raise ValueError(f"{what}: rows {bad[:5].tolist()} mark {counts[bad[:5]].tolist()} "
                     f"placeholder positions, the model gives {expected} visual tokens")


class Hawk(nn.Module):
  config: HawkConfig

  def setup(self):
    self.appearance = Branch(self.config, name="appearance")
    self.motion = Branch(self.config, name="motion")
    self.llm = Llama(self.config.llm, name="llm")

  def _branch_input(self, x):
    # uint8 pixels are normalised; 4-D inputs are cached frozen frame tokens, used as they are.
    return x if x.ndim == 4 else normalize_frames(x, self.config.normalize_pixels)

  def encode_video(self, frames, motion, deterministic: bool = True):
    """uint8 frames and motion [B, T, H, W, 3] (or cached frame tokens [B, T, Qi, Hq] of each
    branch) -> dict with `visual` [B, 2*Nv, D] (appearance then motion), `motion_tokens`
    [B, Nv, D], and the two tight-space outputs."""
    app, app_tight = self.appearance(self._branch_input(frames), deterministic)
    mot, mot_tight = self.motion(self._branch_input(motion), deterministic)
    return {"visual": jnp.concatenate([app, mot], axis=1), "motion_tokens": mot,
            "tight_appearance": app_tight, "tight_motion": mot_tight}

  def frozen_frame_tokens(self, frames, motion):
    """The frozen towers' output per frame — ViT, ln_vision, image Q-Former — of both branches:
    two [B, T, Qi, Hq] arrays. Computed once ahead of training, they replace the pixels (the
    frozen part is deterministic, so training on them equals training on the pixels as long
    as the pixels are not augmented)."""
    app = self.appearance.frame_tokens(normalize_frames(frames, self.config.normalize_pixels))
    mot = self.motion.frame_tokens(normalize_frames(motion, self.config.normalize_pixels))
    return app, mot

  def prompt_embeddings(self, input_ids, visual_mask, visual):
    """Token embeddings of the prompt with the visual tokens spliced in at the placeholders."""
    emb = self.llm.embed(input_ids)
    return splice_visual(emb, visual_mask, visual)

  def __call__(self, frames, motion, input_ids, attention_mask, visual_mask, *,
               ml_input_ids=None, ml_attention_mask=None, ml_visual_mask=None,
               deterministic: bool = True, return_hidden: bool = False):
    """The training forward pass: LLM logits over the prompt (and, when the motion-language
    inputs are given, over [BOS][motion tokens][motion text]) and the tight-space outputs.

    `return_hidden`: the LLM's final hidden states (`hidden`, `ml_hidden`) in place of the
    logits; `lm_logits` turns any slice of them into logits (the chunked loss uses it)."""
    enc = self.encode_video(frames, motion, deterministic)
    emb = self.prompt_embeddings(input_ids, visual_mask, enc["visual"])
    key = "hidden" if return_hidden else "logits"
    out = {key: self.llm(inputs_embeds=emb, attention_mask=attention_mask,
                         return_hidden=return_hidden),
           "tight_appearance": enc["tight_appearance"], "tight_motion": enc["tight_motion"]}
    if ml_input_ids is not None:
      ml_emb = self.prompt_embeddings(ml_input_ids, ml_visual_mask, enc["motion_tokens"])
      out["ml_" + key] = self.llm(inputs_embeds=ml_emb, attention_mask=ml_attention_mask,
                                  return_hidden=return_hidden)
    return out

  def lm_logits(self, hidden):
    """The LLM head: final hidden states [B, T, E] -> float32 logits [B, T, V]."""
    return self.llm.logits(hidden)


# Parameter groups trained in stages 1-2 (docs/model.md, "Losses and stages"); the rest is frozen.
TRAINABLE_GROUPS = ("video_qformer", "video_query_tokens", "frame_position_embedding", "proj")


def is_trainable(path: tuple[str, ...], config: HawkConfig) -> bool:
  if len(path) < 2 or path[0] not in ("appearance", "motion"):
    return False
  if path[1] in TRAINABLE_GROUPS:
    return True
  return (config.trainable_query_tokens_motion and path[0] == "motion"
          and path[1] == "query_tokens")


def _key_name(k) -> str:
  return str(getattr(k, "key", getattr(k, "name", k)))


def trainable_mask(params, config: HawkConfig):
  """A pytree of bools over `params`: True for trainable leaves."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: is_trainable(tuple(_key_name(k) for k in p), config), params)


def split_params(params, config: HawkConfig):
  """(trainable, frozen) as two nested dicts with disjoint leaves."""
  mask = trainable_mask(params, config)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  train, frozen = {}, {}
  for (path, leaf), m in zip(flat, jax.tree.leaves(mask)):
    names = [_key_name(k) for k in path]
    d = train if m else frozen
    for n in names[:-1]:
      d = d.setdefault(n, {})
    d[names[-1]] = leaf
  return train, frozen


def merge_params(a, b):
  """Deep merge of two disjoint nested dicts (e.g. the halves of `split_params`)."""
  out = dict(a)
  for k, v in b.items():
    if k in out and isinstance(out[k], dict) and isinstance(v, dict):
      out[k] = merge_params(out[k], v)
    elif k in out:
      raise ValueError(f"merge_params: {k!r} is in both trees")
    else:
      out[k] = v
  return out
