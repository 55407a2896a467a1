"""EVA-CLIP ViT (as BLIP-2 uses it) followed by BLIP-2's `ln_vision`.

Pre-LN transformer blocks with q and v biases only (EVA has no k bias), exact-GELU MLP, a CLS
token, learned absolute positions and no final norm; `ln_vision` (float32) is applied to every
output token. No dropout or drop-path: the tower is frozen in HAWK.

Parameter tree (the converters in hawk_jax/convert rely on these names):
  patch_embed/{kernel [p * p * 3, D] (row, column, channel), bias [D]},
  cls_token [1, 1, D], pos_embed [1, N + 1, D],
  layers/... (stacked on axis 0 when scan_layers) or layers_{i}/...:
    norm1/{scale, bias}, attn/{qkv/kernel [D, 3, H, Dh], q_bias [H, Dh], v_bias [H, Dh],
    proj/{kernel [H, Dh, D], bias}}, norm2/{scale, bias}, mlp/{fc1, fc2}/{kernel, bias}
  ln_vision/{scale, bias}
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hawk_jax.models.blip2_layers import DEFAULT_KERNEL_INIT, Dense, LayerNorm, attention
from hawk_jax.models.common import constrain, dtype_of, maybe_remat, param_with_axes
from hawk_jax.models.kernels import gelu_exact, matmul
from hawk_jax.models.model_config import VisionConfig


def _head_dim(config: VisionConfig) -> int:
  if config.hidden_size % config.num_heads:
    raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of num_heads "
                     f"{config.num_heads}")
  return config.hidden_size // config.num_heads


class EvaAttention(nn.Module):
  """Self-attention from one fused qkv kernel; q and v get biases, k none."""
  config: VisionConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    heads, head_dim = cfg.num_heads, _head_dim(cfg)
    qkv = _QKV(cfg, name="qkv")(x)  # [B, L, 3, H, Dh], float32
    q_bias = self.param("q_bias", param_with_axes(nn.initializers.zeros, "heads", "head_dim"),
                        (heads, head_dim), pdtype)
    v_bias = self.param("v_bias", param_with_axes(nn.initializers.zeros, "heads", "head_dim"),
                        (heads, head_dim), pdtype)
    names = ("activation_batch", "activation_length", "activation_heads", "activation_head_dim")
    q = constrain((qkv[:, :, 0] + q_bias.astype(jnp.float32)).astype(dtype), *names)
    k = constrain(qkv[:, :, 1].astype(dtype), *names)
    v = constrain((qkv[:, :, 2] + v_bias.astype(jnp.float32)).astype(dtype), *names)
    out = attention(q, k, v, dtype, impl=cfg.attention_impl)
    out = constrain(out, *names)
    return Dense((cfg.hidden_size,), ("heads", "head_dim", "embed"), n_contract=2,
                 dtype=dtype, param_dtype=pdtype, name="proj")(out)


class _QKV(nn.Module):
  """The fused, bias-free qkv projection: x [B, L, D] -> float32 [B, L, 3, H, Dh]."""
  config: VisionConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    kernel = self.param(
        "kernel", param_with_axes(DEFAULT_KERNEL_INIT, "embed", None, "heads", "head_dim"),
        (cfg.hidden_size, 3, cfg.num_heads, _head_dim(cfg)), dtype_of(cfg.param_dtype))
    return matmul(x, kernel, dtype_of(cfg.dtype))


class EvaMlp(nn.Module):
  config: VisionConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    h = Dense((cfg.mlp_dim,), ("embed", "mlp"), dtype=dtype, param_dtype=pdtype, name="fc1")(x)
    h = gelu_exact(h)
    h = constrain(h, "activation_batch", "activation_length", "activation_mlp")
    return Dense((cfg.hidden_size,), ("mlp", "embed"), dtype=dtype, param_dtype=pdtype,
                 name="fc2")(h)


class EvaBlock(nn.Module):
  """x + attn(norm1(x)), then + mlp(norm2(x)). Returns (x, None) so nn.scan can carry x."""
  config: VisionConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    h = LayerNorm(cfg.layer_norm_eps, dtype, pdtype, name="norm1")(x)
    x = x + EvaAttention(cfg, name="attn")(h)
    x = constrain(x, "activation_batch", "activation_length", "activation_embed")
    h = LayerNorm(cfg.layer_norm_eps, dtype, pdtype, name="norm2")(x)
    x = x + EvaMlp(cfg, name="mlp")(h)
    x = constrain(x, "activation_batch", "activation_length", "activation_embed")
    return x, None


class EvaViT(nn.Module):
  """pixels [B, H, W, 3] (H = W = image_size) -> ln_vision(ViT(pixels)) [B, N + 1, D]."""
  config: VisionConfig

  @nn.compact
  def __call__(self, pixels, deterministic: bool = True):
    del deterministic  # no dropout: EVA is frozen in BLIP-2 and HAWK
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    x = self._patch_embed(pixels)
    b = x.shape[0]
    cls_token = self.param("cls_token", param_with_axes(DEFAULT_KERNEL_INIT, None, None, "embed"),
                           (1, 1, cfg.hidden_size), pdtype)
    pos_embed = self.param("pos_embed",
                           param_with_axes(DEFAULT_KERNEL_INIT, None, "positions", "embed"),
                           (1, cfg.seq_len, cfg.hidden_size), pdtype)
    cls = jnp.broadcast_to(cls_token.astype(dtype), (b, 1, cfg.hidden_size))
    x = jnp.concatenate([cls, x], axis=1) + pos_embed.astype(dtype)
    x = constrain(x, "activation_batch", "activation_length", "activation_embed")

    block = maybe_remat(EvaBlock, cfg.remat_policy)
    if cfg.scan_layers and cfg.num_layers:
      x, _ = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                     length=cfg.num_layers,
                     metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")(x)
    else:
      for i in range(cfg.num_layers):
        x, _ = block(cfg, name=f"layers_{i}")(x)
    # BLIP-2's ln_vision runs in float32 and hands back the input dtype.
    return LayerNorm(cfg.ln_vision_eps, dtype, pdtype, name="ln_vision")(x)

  def _patch_embed(self, pixels):
    """A stride-p, p x p convolution with bias, done as patchify + matmul."""
    cfg = self.config
    p = cfg.patch_size
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
      raise ValueError(f"EvaViT wants pixels [batch, height, width, 3]; got {pixels.shape}")
    b, h, w, c = pixels.shape
    if (h, w) != (cfg.image_size, cfg.image_size):
      raise ValueError(f"EvaViT was built for {cfg.image_size}x{cfg.image_size} images (learned "
                       f"positions, no interpolation); got {h}x{w}")
    if h % p:
      raise ValueError(f"image size {h} is not a multiple of patch size {p}")
    g = h // p
    patches = pixels.reshape(b, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, g * g, p * p * c)  # (row, column, channel) within a patch
    x = Dense((cfg.hidden_size,), ("patch", "embed"), dtype=cfg.dtype,
              param_dtype=cfg.param_dtype, name="patch_embed")(patches)
    return constrain(x, "activation_batch", "activation_length", "activation_embed")
