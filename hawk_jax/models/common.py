"""Pieces every tower shares: dtype names, remat policies by name, logical-axis helpers, and
the choice of attention implementation (the products themselves: models/kernels.py)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name) -> jnp.dtype:
  if not isinstance(name, str):
    return name
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; known: {sorted(_DTYPES)}") from None


# Named checkpoint policies, chosen in the config (docs/model.md, "Scale"). "none" keeps every
# activation (fastest, most memory); "full" recomputes the whole layer in the backward pass.
_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_everything": jax.checkpoint_policies.everything_saveable,
}


def remat_names() -> list[str]:
  return ["none", *_REMAT_POLICIES]


def maybe_remat(layer_cls, policy: str, static_argnums=()):
  """Wrap a Linen layer class in nn.remat with the named policy ("none": unchanged)."""
  if policy == "none":
    return layer_cls
  if policy not in _REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; known: {remat_names()}")
  return nn.remat(layer_cls, policy=_REMAT_POLICIES[policy], prevent_cse=False,
                  static_argnums=static_argnums)


def constrain(x, *names):
  """Activation sharding constraint by logical names (a no-op outside a mesh/rules context)."""
  return nn.with_logical_constraint(x, names)


def param_with_axes(init, *names):
  return nn.with_logical_partitioning(init, names)


# Attention implementations, chosen per tower in the config (`attention_impl`):
#   "einsum": the towers' own head-major einsums (float32 logits and softmax). Fastest on CPU,
#             where jax.nn.dot_product_attention's bf16 probability-value product is slow.
#   "xla":    jax.nn.dot_product_attention(implementation="xla").
#   "cudnn":  jax.nn.dot_product_attention(implementation="cudnn"): cuDNN's fused (flash)
#             attention on NVIDIA GPUs; bf16/fp16 operands, head_dim a multiple of 8, <= 128.
#   "auto":   "cudnn" on GPU where its constraints hold (and, with a mask, where cuDNN can train
#             it: even query and key lengths), else "einsum".
ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn")


def resolve_attention_impl(impl: str, dtype, head_dim: int, q_len: int = 0, kv_len: int = 0,
                           masked: bool = False) -> str:
  """The implementation `impl` means for these operands on the default backend."""
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"unknown attention_impl {impl!r}; known: {list(ATTENTION_IMPLS)}")
  if impl != "auto":
    return impl
  cudnn_ok = (jax.default_backend() == "gpu"
              and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
              and head_dim % 8 == 0 and head_dim <= 128
              and not (masked and (q_len % 2 or kv_len % 2)))
  return "cudnn" if cudnn_ok else "einsum"


def fused_attention(q, k, v, *, impl: str, scale: float, mask=None, is_causal: bool = False):
  """jax.nn.dot_product_attention on token-major operands: q [B,T,N,D], k/v [B,S,K,D]
  (K divides N: grouped-query attention), `mask` broadcastable to [B,N,T,S] (True = attend).
  Returns [B,T,N,D] in q's dtype."""
  if mask is not None and impl == "cudnn":
    # cuDNN takes the mask as an additive bias whose query and key lengths must be explicit.
    mask = jnp.broadcast_to(mask, (q.shape[0], mask.shape[1], q.shape[1], k.shape[1]))
  return jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask,
                                      scale=scale, is_causal=is_causal, implementation=impl)
