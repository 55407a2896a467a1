"""Building blocks shared by BLIP-2's two towers (the EVA ViT and the BERT Q-Former).

Matmuls run in the compute dtype and accumulate in float32 (`preferred_element_type`): bf16 in
and out without it is slower on CPU and loses precision; LayerNorms always compute in float32,
as the PyTorch originals do under autocast.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hawk_jax.models.common import (contract_spec, dtype_of, einsum_f32, fused_attention,
                                    param_with_axes, resolve_attention_impl, scale_queries)

# BERT and EVA both initialise their linear layers with a (truncated) normal of std 0.02.
DEFAULT_KERNEL_INIT = nn.initializers.truncated_normal(0.02)


def matmul(x, kernel, dtype, n_contract: int = 1):
  """Contract the last `n_contract` axes of x with the first ones of kernel; float32 result
  (and, in bf16, a bf16 backward pass: `einsum_f32`)."""
  spec = contract_spec(x.ndim, kernel.ndim, n_contract)
  return einsum_f32(spec, x.astype(dtype), kernel.astype(dtype))


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
  attention probabilities (BERT's attention dropout). Logits and softmax are float32.
  The products run head-major ([B, H, L, Dh] operands, batched over B and H): on CPU, the
  token-major einsum `bhqk,bkhd->bqhd` was 3x slower than transposing q, k, v first -- except
  in the forward pass of unmasked bf16 attention without dropout, where XLA:CPU keeps the
  token-major products in bf16 and upcasts the head-major ones (`_bf16_attention`).
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
    return _bf16_attention(q, k.astype(dtype), v.astype(dtype))
  return _head_major_attention(q, k, v, dtype, kv_mask, probs_dropout)


def _head_major_attention(q, k, v, dtype, kv_mask=None, probs_dropout=None):
  """`attention`'s einsums on scaled queries: head-major products, float32 softmax."""
  q, k, v = (t.astype(dtype).transpose(0, 2, 1, 3) for t in (q, k, v))
  logits = einsum_f32("bhqd,bhkd->bhqk", q, k)
  if kv_mask is not None:
    keep = kv_mask.astype(bool)[:, None, None, :]
    logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if probs_dropout is not None:
    probs = probs_dropout(probs)
  out = einsum_f32("bhqk,bhkd->bhqd", probs.astype(dtype), v)
  return out.astype(dtype).transpose(0, 2, 1, 3)


@jax.custom_vjp
def _bf16_attention(q, k, v):
  """Unmasked bf16 attention on scaled queries, token-major products.

  XLA:CPU upcasts the head-major batched bf16 products (`_head_major_attention`) to float32;
  the token-major ones it runs in bf16 (ViT attention of the `small` size: 10.3 vs 14.6 ms per
  layer and branch). Their backward pass does not run on XLA:CPU (`Unsupported element type
  for DotThunk::Execute: BF16 x BF16 = F32`), so under differentiation the head-major form is
  used instead: the forward pass of a frozen tower (the ViTs) gets the fast form, a trained
  one the same program as before."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


def _bf16_attention_fwd(q, k, v):
  out, pullback = jax.vjp(lambda q, k, v: _head_major_attention(q, k, v, q.dtype), q, k, v)
  return out, pullback


def _bf16_attention_bwd(pullback, g):
  return pullback(g)


_bf16_attention.defvjp(_bf16_attention_fwd, _bf16_attention_bwd)
