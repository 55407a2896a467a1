"""The matrix products and attention forms every tower computes with, tuned for XLA:CPU.

Why they exist, once: the towers must match their PyTorch references (float32 accumulation,
torch.autocast's bf16 semantics) and also run fast on the CPUs this project is developed and
smoke-tested on, where XLA's straightforward lowering of the same math is slow in a few
specific ways -- a bf16 product whose backward pass upcasts its operands to float32, GELU's
intermediates rounded to bf16 one by one, a scalar scale broadcast to the full logits shape,
a multi-axis kernel copy-transposed for its gradient on every step, head-major bf16 attention
products upcast to float32, matrix-vector products that stream the weights slowly. Each
function below keeps the math of the plain form and changes only how XLA is asked for it; the
tests check each against the plain form and against float32 references. What each one saved
was measured when it was added (its commit message).

On accelerators the same functions lower to ordinary dots (fused attention is chosen apart,
by `attention_impl`: models/common.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def einsum_f32(spec: str, a, b):
  """Two-operand einsum with float32 accumulation and a float32 result.

  With low-precision operands (bf16) the backward pass runs in their dtype too, as under
  torch.autocast: the float32 cotangent is rounded to it, and only the gradients asked for (not
  those of a frozen operand) are computed, as bf16 products accumulated in float32. (JAX's own
  transpose of a `preferred_element_type=f32` product multiplies the float32 cotangent with
  the bf16 operand, which upcasts the operand and runs a float32 matmul.) Float32 operands take
  the plain path. Every index of an operand must appear in the other operand or in the output
  (true of linear layers and attention).
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
  # differentiated. Only the operands a wanted gradient reads are kept, so no gradient product
  # of a frozen weight matrix enters the jaxpr (XLA would drop it as dead code, but FLOPs
  # counted on the jaxpr -- hawk_jax.flops, the logged MFU -- would count it).
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


def contract_spec(x_ndim: int, k_ndim: int, n_contract: int) -> str:
  """einsum spec contracting the last `n_contract` axes of x with the first ones of a kernel."""
  free_x = x_ndim - n_contract
  x = LETTERS[:x_ndim]
  k = x[free_x:] + LETTERS[x_ndim:x_ndim + k_ndim - n_contract]
  return f"{x},{k}->{x[:free_x]}{k[n_contract:]}"


def matmul(x, kernel, dtype, n_contract: int = 1):
  """Contract the last `n_contract` axes of x with the first ones of kernel, in `dtype`; float32
  result (`einsum_f32`). The BLIP-2 towers' dense layers."""
  spec = contract_spec(x.ndim, kernel.ndim, n_contract)
  return einsum_f32(spec, x.astype(dtype), kernel.astype(dtype))


def matmul_as_2d(x, kernel, n_contract: int, dtype):
  """`matmul` with a multi-axis kernel (LLaMA's q/k/v [E, N, D], o [N, D, E]) contracted as the
  [prod(in), prod(out)] matrix it is laid out as: the gradient x . W^T over two kernel axes made
  XLA:CPU copy-transpose every such kernel on every step, where a 2-D W^T is read in place."""
  free = x.shape[:x.ndim - n_contract]
  out = kernel.shape[n_contract:]
  if n_contract == 1 and len(out) == 1:
    return matmul(x, kernel, dtype)
  k2 = kernel.reshape(int(np.prod(kernel.shape[:n_contract])), int(np.prod(out)))
  x2 = x.reshape(*free, k2.shape[0])
  y = einsum_f32(contract_spec(x2.ndim, 2, 1), x2.astype(dtype), k2.astype(dtype))
  return y.reshape(*free, *out)


# Up to this many rows (batch x new tokens) a transposed-kernel product is formed as W . x^T;
# beyond it, as x . W^T (XLA transposed the weights first for larger prefills).
FEW_ROWS = 256


def matmul_transposed(x, kernel, n_in: int, dtype):
  """x[..., *in] . kernel[*out, *in] -> [..., *out], float32 accumulation: the decoding twin's
  [out, in] kernels. With few rows (a decode step, a short prefill) the product is formed as
  kernel . x^T, then transposed back, which streams the weights faster on CPU; the
  optimization barrier keeps XLA from folding the transpose back into the product."""
  n_free, n_out = x.ndim - n_in, kernel.ndim - n_in
  f, i = LETTERS[:n_free], LETTERS[n_free:n_free + n_in]
  o = LETTERS[n_free + n_in:n_free + n_in + n_out]
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  if int(np.prod(x.shape[:n_free])) <= FEW_ROWS:
    yt = lax.optimization_barrier(einsum_f32(f"{o}{i},{f}{i}->{o}{f}", kernel, x))
    return yt.transpose(tuple(range(n_out, n_out + n_free)) + tuple(range(n_out)))
  return einsum_f32(f"{f}{i},{o}{i}->{f}{o}", x, kernel)


def gelu_exact(x):
  """torch.nn.GELU() (the erf form, x * (1 + erf(x / sqrt 2)) / 2), computed in float32 and
  returned in x's dtype (jax.nn.gelu(approximate=False) goes through erfc, and on bf16 input
  XLA:CPU rounded each of its intermediates to bf16)."""
  x32 = x.astype(jnp.float32)
  return (0.5 * x32 * (1.0 + jax.lax.erf(x32 * 0.7071067811865476))).astype(x.dtype)


def scale_queries(q, scale: float, dtype):
  """q * scale in float32, cast to the compute dtype: softmax(q k^T * scale) with the scale on
  the [.., T, D] queries instead of the [.., T, S] logits (XLA:CPU materialised a constant
  broadcast of the logits' shape to scale them). For the usual head_dim 64 (scale 1/8) the bf16
  rounding of q is unchanged by it."""
  return (q.astype(jnp.float32) * scale).astype(dtype)


def head_major_attention(q, k, v, dtype, kv_mask=None, probs_dropout=None):
  """Softmax attention on scaled queries with head-major products ([B, H, L, Dh] operands,
  batched over B and H: on CPU 3x faster than the token-major einsum), float32 softmax.
  q [B, Lq, H, Dh], k/v [B, Lk, H, Dh] -> [B, Lq, H, Dh]; `kv_mask` [B, Lk] hides padded keys,
  `probs_dropout` is applied to the probabilities."""
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
def bf16_attention(q, k, v):
  """Unmasked bf16 attention on scaled queries, with token-major products in the forward pass
  (XLA:CPU keeps those in bf16; the head-major ones it upcasts to float32). Their backward pass
  does not run on XLA:CPU (`Unsupported element type for DotThunk::Execute: BF16 x BF16 =
  F32`), so under differentiation the head-major form is used: a frozen tower's forward pass
  (the ViTs) gets the fast form, a trained one the head-major program."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


def _bf16_attention_fwd(q, k, v):
  out, pullback = jax.vjp(lambda q, k, v: head_major_attention(q, k, v, q.dtype), q, k, v)
  return out, pullback


def _bf16_attention_bwd(pullback, g):
  return pullback(g)


bf16_attention.defvjp(_bf16_attention_fwd, _bf16_attention_bwd)
