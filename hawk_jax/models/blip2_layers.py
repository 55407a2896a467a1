"""Building blocks shared by BLIP-2's two towers (the EVA ViT and the BERT Q-Former): a
multi-axis dense layer, torch's LayerNorm, and softmax attention.

Matmuls run in the compute dtype and accumulate in float32 (models/kernels.py); LayerNorms
always compute in float32, as the PyTorch originals do under autocast.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hawk_jax.models.common import (
  dtype_of,
  fused_attention,
  param_with_axes,
  resolve_attention_impl,
)
from hawk_jax.models.kernels import bf16_attention, head_major_attention, matmul, scale_queries

# BERT and EVA both initialise their linear layers with a (truncated) normal of std 0.02.
DEFAULT_KERNEL_INIT = nn.initializers.truncated_normal(0.02)


class Dense(nn.Module):
  """y = x . kernel + bias with a multi-axis kernel [*x.shape[-n_contract:], *features].

  `kernel_axes` names every kernel axis (inputs then outputs); the bias takes the output names.
  """
  features: Sequence[int]
  kernel_axes: Sequence[str | None]
  n_contract: int = 1
  use_bias: bool = True
  dtype: Any = "float32"
  param_dtype: Any = "float32"
  kernel_init: Callable = DEFAULT_KERNEL_INIT

  @nn.compact
  def __call__(self, x):
    features = tuple(self.features)
    in_shape = tuple(x.shape[x.ndim - self.n_contract:])
    if len(self.kernel_axes) != len(in_shape) + len(features):
      raise ValueError(f"{self.name}: kernel_axes {self.kernel_axes} do not name the kernel "
                       f"axes {in_shape + features}")
    kernel = self.param("kernel", param_with_axes(self.kernel_init, *self.kernel_axes),
                        in_shape + features, dtype_of(self.param_dtype))
    y = matmul(x, kernel, dtype_of(self.dtype), self.n_contract)
    if self.use_bias:
      bias = self.param("bias", param_with_axes(nn.initializers.zeros,
                                                *self.kernel_axes[self.n_contract:]),
                        features, dtype_of(self.param_dtype))
      y = y + bias.astype(jnp.float32)
    return y.astype(dtype_of(self.dtype))


class LayerNorm(nn.Module):
  """torch.nn.LayerNorm (biased variance, eps inside the root), computed in float32; the result
  is cast to `dtype`."""
  eps: float
  dtype: Any = "float32"
  param_dtype: Any = "float32"

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    scale = self.param("scale", param_with_axes(nn.initializers.ones, "norm"), (width,),
                       dtype_of(self.param_dtype))
    bias = self.param("bias", param_with_axes(nn.initializers.zeros, "norm"), (width,),
                      dtype_of(self.param_dtype))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(dtype_of(self.dtype))


def attention(q, k, v, dtype, kv_mask=None, probs_dropout: Callable | None = None,
              impl: str = "einsum"):
  """Softmax attention, no causal mask. q [B, Lq, H, Dh], k/v [B, Lk, H, Dh] -> [B, Lq, H, Dh].

  `kv_mask` [B, Lk] (nonzero = attend) hides padded keys; `probs_dropout` is applied to the
  attention probabilities (BERT's attention dropout). Logits and softmax are float32. The
  products run head-major (`kernels.head_major_attention`), except in the forward pass of
  unmasked bf16 attention without dropout (`kernels.bf16_attention`).
  `impl` (models/common.py ATTENTION_IMPLS) may hand the whole thing to
  jax.nn.dot_product_attention instead -- not with dropout on the probabilities, which it
  cannot apply.
  """
  dtype = dtype_of(dtype)
  scale = q.shape[-1] ** -0.5
  if kv_mask is not None and kv_mask.shape != (k.shape[0], k.shape[1]):
    raise ValueError(f"attention mask has shape {kv_mask.shape}; the keys want "
                     f"{(k.shape[0], k.shape[1])} (batch, key length)")
  impl = resolve_attention_impl(impl, dtype, q.shape[-1], q.shape[1], k.shape[1],
                                masked=kv_mask is not None)
  if impl != "einsum" and probs_dropout is None:
    mask = None if kv_mask is None else kv_mask.astype(bool)[:, None, None, :]
    return fused_attention(q.astype(dtype), k, v, impl=impl, scale=scale, mask=mask)
  q = scale_queries(q, scale, dtype)
  if kv_mask is None and probs_dropout is None and dtype == jnp.bfloat16:
    return bf16_attention(q, k.astype(dtype), v.astype(dtype))
  return head_major_attention(q, k, v, dtype, kv_mask, probs_dropout)
