"""Name tables for BLIP-2's towers: EVA ViT (+ ln_vision) and the Q-Former, in HuggingFace
(`Blip2VisionModel`, `Blip2QFormerModel`, transformers 5) and LAVIS/HAWK naming.

Flax paths are those documented in hawk_jax/models/eva_vit.py and qformer.py.

HF keeps EVA's q and v biases as one fused `qkv.bias` [3D] whose middle (k) third is zero. The
table names its q and v thirds as pseudo-keys `...qkv.bias[q]` / `...qkv.bias[v]`;
`unfuse_qkv_bias` turns a real HF state dict into that form (refusing a non-zero k third, which
EVA cannot represent) and `fuse_qkv_bias` turns it back, writing zeros in the k third.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from hawk_jax.convert.table import IDENTITY, LINEAR, ConversionError, Rule, Transform
from hawk_jax.models.model_config import QFormerConfig, VisionConfig
from hawk_jax.models.qformer import has_cross_attention

NAMINGS = ("hf", "lavis")


def _c(x):
  return np.ascontiguousarray(x)


def heads_in(heads: int, head_dim: int) -> Transform:
  """torch Linear [H*Dh, E] <-> Flax kernel [E, H, Dh]."""
  return Transform(lambda x: _c(x.T.reshape(x.shape[1], heads, head_dim)),
                   lambda x: _c(x.reshape(x.shape[0], heads * head_dim).T))


def heads_out(heads: int, head_dim: int) -> Transform:
  """torch Linear [E, H*Dh] <-> Flax kernel [H, Dh, E]."""
  return Transform(lambda x: _c(x.T.reshape(heads, head_dim, x.shape[0])),
                   lambda x: _c(x.reshape(heads * head_dim, x.shape[-1]).T))


def heads_bias(heads: int, head_dim: int) -> Transform:
  """[H*Dh] <-> [H, Dh]."""
  return Transform(lambda x: _c(x.reshape(heads, head_dim)),
                   lambda x: _c(x.reshape(heads * head_dim)))


def fused_qkv(heads: int, head_dim: int) -> Transform:
  """torch qkv Linear [3D, D] <-> Flax kernel [D, 3, H, Dh]."""
  return Transform(lambda x: _c(x.T.reshape(x.shape[1], 3, heads, head_dim)),
                   lambda x: _c(x.reshape(x.shape[0], 3 * heads * head_dim).T))


def patch_conv(patch_size: int) -> Transform:
  """torch Conv2d weight [D, 3, p, p] <-> Flax patch kernel [p * p * 3, D] (row, column, channel
  order, as EvaViT flattens a patch)."""
  p = patch_size
  return Transform(lambda x: _c(x.transpose(2, 3, 1, 0).reshape(p * p * x.shape[1], x.shape[0])),
                   lambda x: _c(x.reshape(p, p, -1, x.shape[-1]).transpose(3, 2, 0, 1)))


def _check_naming(naming):
  if naming not in NAMINGS:
    raise ValueError(f"unknown naming {naming!r}; known: {NAMINGS}")


def _norm(torch_stem: str, flax_stem: str) -> list[Rule]:
  return [Rule(f"{torch_stem}.weight", f"{flax_stem}/scale"),
          Rule(f"{torch_stem}.bias", f"{flax_stem}/bias")]


def _linear(torch_stem: str, flax_stem: str, kernel: Transform = LINEAR,
            bias: Transform = IDENTITY) -> list[Rule]:
  return [Rule(f"{torch_stem}.weight", f"{flax_stem}/kernel", kernel),
          Rule(f"{torch_stem}.bias", f"{flax_stem}/bias", bias)]


def vision_rules(config: VisionConfig, naming: str = "hf", prefix: str | None = None,
                 ln_vision_key: str | None = None) -> list[Rule]:
  """Rules for EvaViT; per-layer keys carry `{i}` (see table.torch_to_flax's `scan`).

  Args:
    naming: "hf" (Blip2VisionModel) or "lavis" (LAVIS / HAWK `visual_encoder.*`).
    prefix: put before every ViT key. Default "" for hf; "visual_encoder." for lavis (use ""
      for LAVIS's `eva_vit_g.pth`, "visual_encoder_motion." for HAWK's motion twin).
    ln_vision_key: the full key stem of BLIP-2's ln_vision (not under `prefix` for lavis).
      Default: prefix + "post_layernorm" for hf, "ln_vision" for lavis (HAWK's motion twin is
      "ln_vision_motion"); "" leaves ln_vision out of the table (eva_vit_g.pth has none).
  """
  _check_naming(naming)
  heads = config.num_heads
  head_dim = config.hidden_size // heads
  if naming == "hf":
    prefix = "" if prefix is None else prefix
    ln_vision_key = prefix + "post_layernorm" if ln_vision_key is None else ln_vision_key
    emb, blk = prefix + "embeddings.", prefix + "encoder.layers.{i}."
    rules = [
        Rule(emb + "class_embedding", "cls_token"),
        Rule(emb + "position_embedding", "pos_embed"),
        *_linear(emb + "patch_embedding", "patch_embed", patch_conv(config.patch_size)),
        *_norm(blk + "layer_norm1", "layers_{i}/norm1"),
        Rule(blk + "self_attn.qkv.weight", "layers_{i}/attn/qkv/kernel",
             fused_qkv(heads, head_dim)),
        Rule(blk + "self_attn.qkv.bias[q]", "layers_{i}/attn/q_bias", heads_bias(heads, head_dim)),
        Rule(blk + "self_attn.qkv.bias[v]", "layers_{i}/attn/v_bias", heads_bias(heads, head_dim)),
        *_linear(blk + "self_attn.projection", "layers_{i}/attn/proj", heads_out(heads, head_dim)),
        *_norm(blk + "layer_norm2", "layers_{i}/norm2"),
        *_linear(blk + "mlp.fc1", "layers_{i}/mlp/fc1"),
        *_linear(blk + "mlp.fc2", "layers_{i}/mlp/fc2"),
    ]
  else:
    prefix = "visual_encoder." if prefix is None else prefix
    ln_vision_key = "ln_vision" if ln_vision_key is None else ln_vision_key
    blk = prefix + "blocks.{i}."
    rules = [
        Rule(prefix + "cls_token", "cls_token"),
        Rule(prefix + "pos_embed", "pos_embed"),
        *_linear(prefix + "patch_embed.proj", "patch_embed", patch_conv(config.patch_size)),
        *_norm(blk + "norm1", "layers_{i}/norm1"),
        Rule(blk + "attn.qkv.weight", "layers_{i}/attn/qkv/kernel", fused_qkv(heads, head_dim)),
        Rule(blk + "attn.q_bias", "layers_{i}/attn/q_bias", heads_bias(heads, head_dim)),
        Rule(blk + "attn.v_bias", "layers_{i}/attn/v_bias", heads_bias(heads, head_dim)),
        *_linear(blk + "attn.proj", "layers_{i}/attn/proj", heads_out(heads, head_dim)),
        *_norm(blk + "norm2", "layers_{i}/norm2"),
        *_linear(blk + "mlp.fc1", "layers_{i}/mlp/fc1"),
        *_linear(blk + "mlp.fc2", "layers_{i}/mlp/fc2"),
    ]
  if ln_vision_key:
    rules += _norm(ln_vision_key, "ln_vision")
  return rules


def vision_layer_pattern(naming: str, prefix: str | None = None) -> re.Pattern:
  """Matches a per-block key and captures the block index (to drop EVA's unused 40th block)."""
  _check_naming(naming)
  if naming == "hf":
    stem = ("" if prefix is None else prefix) + "encoder.layers."
  else:
    stem = ("visual_encoder." if prefix is None else prefix) + "blocks."
  return re.compile(re.escape(stem) + r"(\d+)\.")


def qformer_rules(config: QFormerConfig, naming: str = "hf", prefix: str = "") -> list[Rule]:
  """Rules for QFormer, one per concrete key (layers differ, so no `{i}` and no scan).

  Args:
    naming: "hf" (Blip2QFormerModel: `layernorm`, `encoder.layer.N.attention.attention.*`) or
      "lavis" (BERT names: `bert.embeddings.LayerNorm`, `bert.encoder.layer.N.attention.self.*`).
    prefix: put before every key, e.g. "Qformer." / "video_Qformer." / "Qformer_motion." for
      HAWK checkpoints, "qformer." inside HF's Blip2Model.
  """
  _check_naming(naming)
  heads = config.num_heads
  head_dim = config.hidden_size // heads
  if naming == "hf":
    rules = _norm(prefix + "layernorm", "input_norm")
    layer_stem, attn_inner = prefix + "encoder.layer.", "attention"
  else:
    rules = _norm(prefix + "bert.embeddings.LayerNorm", "input_norm")
    layer_stem, attn_inner = prefix + "bert.encoder.layer.", "self"
  to_heads, from_heads, bias = (heads_in(heads, head_dim), heads_out(heads, head_dim),
                                heads_bias(heads, head_dim))
  for i in range(config.num_layers):
    t, f = f"{layer_stem}{i}.", f"layers_{i}/"
    blocks = [("attention", "self_attention")]
    if has_cross_attention(config, i):
      blocks.append(("crossattention", "cross_attention"))
    for torch_block, flax_block in blocks:
      for proj in ("query", "key", "value"):
        rules += _linear(f"{t}{torch_block}.{attn_inner}.{proj}", f"{f}{flax_block}/{proj}",
                         to_heads, bias)
      rules += _linear(f"{t}{torch_block}.output.dense", f"{f}{flax_block}/out", from_heads)
      rules += _norm(f"{t}{torch_block}.output.LayerNorm", f"{f}{flax_block}/norm")
    rules += _linear(f"{t}intermediate_query.dense", f"{f}mlp/wi")
    rules += _linear(f"{t}output_query.dense", f"{f}mlp/wo")
    rules += _norm(f"{t}output_query.LayerNorm", f"{f}mlp/norm")
  return rules


def qformer_text_only_pattern(naming: str, prefix: str = "") -> re.Pattern:
  """Keys of the Q-Former's text-only parts, which HAWK never uses: ignored on import."""
  _check_naming(naming)
  p = re.escape(prefix)
  if naming == "hf":
    return re.compile(p + r"(encoder\.layer\.\d+\.(intermediate|output)\.|embeddings\.)")
  return re.compile(p + r"(bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)"
                    r"|bert\.encoder\.layer\.\d+\.(intermediate|output)\.|cls\.)")


_FUSED_BIAS = ".qkv.bias"


def unfuse_qkv_bias(state: Mapping[str, np.ndarray], source: str = "state dict") -> dict:
  """Replace every `*.qkv.bias` [3D] by pseudo-keys `*.qkv.bias[q]` and `*.qkv.bias[v]`.

  EVA has no k bias; a non-zero k third cannot be represented and is refused, naming the key.
  """
  out = {}
  for key, value in state.items():
    if not key.endswith(_FUSED_BIAS):
      out[key] = value
      continue
    value = np.asarray(value)
    if value.ndim != 1 or value.shape[0] % 3:
      raise ConversionError(f"{source}: {key} has shape {value.shape}; a fused qkv bias is [3*D]")
    q, k, v = np.split(value, 3)
    if np.any(k != 0):
      raise ConversionError(
          f"{source}: {key} has a non-zero k third (max |k bias| = "
          f"{float(np.max(np.abs(k))):.3g}); EVA attention has q and v biases only, so this "
          f"model cannot be represented without changing its outputs")
    out[key + "[q]"] = q
    out[key + "[v]"] = v
  return out


def fuse_qkv_bias(state: Mapping[str, np.ndarray]) -> dict:
  """The inverse of `unfuse_qkv_bias`: q and v thirds around a zero k third."""
  out = {}
  for key, value in state.items():
    if key.endswith(_FUSED_BIAS + "[v]"):
      continue
    if key.endswith(_FUSED_BIAS + "[q]"):
      stem = key[:-len("[q]")]
      v = state[stem + "[v]"]
      out[stem] = np.concatenate([value, np.zeros_like(value), v])
    else:
      out[key] = value
  return out
