"""Pieces every tower shares: dtype names, remat policies by name, logical-axis helpers, and
the matmul every tower uses (float32 accumulation, backward pass in the compute dtype)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name) -> jnp.dtype:
  if not isinstance(name, str):
    return name
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; known: {sorted(_DTYPES)}") from None


# Named checkpoint policies, chosen in the config (DESIGN.md §6). "none" keeps every activation
# (fastest, most memory); "full" recomputes the whole layer in the backward pass.
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


def einsum_f32(spec: str, a, b):
  """Two-operand einsum with float32 accumulation and a float32 result.

  With low-precision operands (bf16) the backward pass runs in their dtype too: the float32
  cotangent is rounded to it, and the gradients asked for (not those of a frozen operand) are
  einsums of bf16 operands accumulated in float32, as under torch.autocast. (JAX's own
  transpose of a `preferred_element_type=f32` product multiplies the float32 cotangent with
  the bf16 operand, which upcasts the operand -- a frozen weight matrix included -- and runs a
  float32 matmul, slower on CPU by the bf16 speed-up.) Float32 operands take the plain path, unchanged. Every index of an operand must
  appear in the other operand or in the output (true of linear layers and attention).
  """
  if a.dtype == jnp.float32 and b.dtype == jnp.float32:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
  if a.dtype != b.dtype:
    raise ValueError(f"einsum_f32 {spec!r}: operands of different dtypes {a.dtype}, {b.dtype}")
  return _lowp_einsum(spec, a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lowp_einsum(spec, a, b):
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _lowp_einsum_fwd(spec, a, b):
  # symbolic_zeros: `a` and `b` come as CustomVJPPrimal, which says whether each is
  # differentiated. Only the operands a needed gradient reads are kept, so the backward pass
  # computes no gradient for an operand nothing differentiates (a frozen weight matrix): XLA
  # would drop that product as dead code, but it stayed in the jaxpr, and FLOPs counted on the
  # jaxpr (hawk_jax.flops: the logged MFU) counted it -- 39% too many at `small` in bf16.
  out = _lowp_einsum(spec, a.value, b.value)
  return out, (a.value if b.perturbed else None, b.value if a.perturbed else None)


def _lowp_einsum_bwd(spec, res, g):
  a, b = res  # a is kept iff b's gradient is wanted, b iff a's
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return None, None
  ins, out = spec.replace(" ", "").split("->")
  sa, sb = ins.split(",")
  dtype = (a if a is not None else b).dtype  # the operands share one (`einsum_f32` checks)
  g = g.astype(dtype)
  da = None if b is None else jnp.einsum(f"{out},{sb}->{sa}", g, b,
                                         preferred_element_type=jnp.float32).astype(dtype)
  db = None if a is None else jnp.einsum(f"{sa},{out}->{sb}", a, g,
                                         preferred_element_type=jnp.float32).astype(dtype)
  return da, db


_lowp_einsum.defvjp(_lowp_einsum_fwd, _lowp_einsum_bwd, symbolic_zeros=True)


def gelu_exact(x):
  """torch.nn.GELU() (the erf form, x * (1 + erf(x / sqrt 2)) / 2), computed in float32 and
  returned in x's dtype. jax.nn.gelu(approximate=False) goes through erfc (two polynomial
  branches, an exp and two divisions per element) and, on bf16 input, rounds every
  intermediate to bf16 on XLA:CPU: ~4% of the `small` bf16 train step's thread time."""
  x32 = x.astype(jnp.float32)
  return (0.5 * x32 * (1.0 + jax.lax.erf(x32 * 0.7071067811865476))).astype(x.dtype)


def scale_queries(q, scale: float, dtype):
  """q * scale in float32, cast to the compute dtype: softmax(q k^T * scale) with the scale on
  the [.., T, D] queries instead of the [.., T, S] logits. XLA:CPU materialises a constant
  broadcast of the logits' shape to scale them inside its fused product; and for the usual
  head_dim 64 (scale 1/8) the bf16 rounding of q is unchanged by it."""
  return (q.astype(jnp.float32) * scale).astype(dtype)


def contract_spec(x_ndim: int, k_ndim: int, n_contract: int) -> str:
  """einsum spec contracting the last `n_contract` axes of x with the first ones of a kernel."""
  letters = "abcdefghijklmnopqrstuvwxyz"
  free_x = x_ndim - n_contract
  x = letters[:x_ndim]
  k = x[free_x:] + letters[x_ndim:x_ndim + k_ndim - n_contract]
  return f"{x},{k}->{x[:free_x]}{k[n_contract:]}"


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
