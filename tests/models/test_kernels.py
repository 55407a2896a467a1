"""models/kernels.py: `einsum_f32` (bf16 operands, float32 accumulation, a bf16 backward pass
that computes only the gradients something asks for), the unmasked bf16 attention of the
BLIP-2 towers (token-major products in the forward pass, the head-major program under
differentiation), and the decoding twin's transposed-kernel product in each of its forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hawk_jax import flops
from hawk_jax.models import blip2_layers as B
from hawk_jax.models import kernels as K
from hawk_jax.models.kernels import einsum_f32

SPEC = "abc,cd->abd"


def operands(dtype):
  rs = np.random.RandomState(0)
  return (jnp.asarray(rs.normal(size=(2, 5, 16)), dtype),
          jnp.asarray(rs.normal(size=(16, 8)), dtype))


def loss(a, b):
  return jnp.sum(jnp.sin(einsum_f32(SPEC, a, b)))


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_bf16_gradients_are_the_float32_ones_rounded(argnums):
  a, b = operands(jnp.bfloat16)
  got = jax.grad(loss, argnums)(a, b)
  # reference: the same computation in float32 on the bf16 values; the bf16 pass rounds the
  # cotangent and the gradients to bf16 (relative error ~2^-8 each)
  want = jax.grad(loss, argnums)(a.astype(jnp.float32), b.astype(jnp.float32))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("argnums,products", [(0, 2), (1, 2), ((0, 1), 3)])
def test_backward_computes_only_the_wanted_gradients(dtype, argnums, products):
  """A frozen operand (not differentiated) gets no gradient product in the program, so FLOPs
  counted on the jaxpr are the ones XLA runs."""
  a, b = operands(dtype)
  traced = jax.jit(jax.grad(loss, argnums)).trace(a, b)
  one = 2 * 2 * 5 * 16 * 8
  assert flops.count_traced(traced).matmul == products * one


def test_an_unused_product_gives_zero_gradients():
  """The product's output feeds only an auxiliary result: its cotangent is a symbolic zero."""
  a, b = operands(jnp.bfloat16)
  (ga, gb), aux = jax.grad(lambda a, b: (jnp.sum(a.astype(jnp.float32)), einsum_f32(SPEC, a, b)),
                           (0, 1), has_aux=True)(a, b)
  assert aux.shape == (2, 5, 8)
  np.testing.assert_array_equal(np.asarray(gb, np.float32), 0.0)
  np.testing.assert_array_equal(np.asarray(ga, np.float32), 1.0)


# --- bf16 attention -----------------------------------------------------------------------------

def qkv(seed=0, b=2, t=9, s=11, h=3, d=8):
  rs = np.random.RandomState(seed)
  return tuple(jnp.asarray(rs.normal(size=shape), jnp.bfloat16)
               for shape in ((b, t, h, d), (b, s, h, d), (b, s, h, d)))


def reference(q, k, v):
  """float32 softmax attention on the bf16 values."""
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)


def test_forward_is_attention():
  q, k, v = qkv()
  got = jax.jit(lambda q, k, v: B.attention(q, k, v, jnp.bfloat16))(q, k, v)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), reference(q, k, v), atol=0.03)


def test_forward_matches_the_head_major_form():
  q, k, v = qkv(1)
  qs = K.scale_queries(q, q.shape[-1] ** -0.5, jnp.bfloat16)
  fast = jax.jit(K.bf16_attention)(qs, k, v)
  head_major = jax.jit(lambda q, k, v: K.head_major_attention(q, k, v, jnp.bfloat16))(qs, k, v)
  np.testing.assert_allclose(np.asarray(fast, np.float32), np.asarray(head_major, np.float32),
                             atol=0.016)  # both round the probabilities and output to bf16


def test_gradients_are_the_head_major_ones():
  q, k, v = qkv(2)
  w = jnp.asarray(np.random.RandomState(3).normal(size=(2, 9, 3, 8)), jnp.float32)

  def loss(attn):
    return lambda q, k, v: jnp.sum(attn(q, k, v).astype(jnp.float32) * w)

  got = jax.jit(jax.grad(loss(lambda q, k, v: B.attention(q, k, v, jnp.bfloat16)),
                         (0, 1, 2)))(q, k, v)
  want = jax.jit(jax.grad(loss(lambda q, k, v: K.head_major_attention(
      K.scale_queries(q, q.shape[-1] ** -0.5, jnp.bfloat16), k, v, jnp.bfloat16)),
      (0, 1, 2)))(q, k, v)
  for g, r in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(r, np.float32))
  # and they are attention's gradients (float32 reference on the same values)
  ref = jax.grad(loss(reference), (0, 1, 2))(q, k, v)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("rows", [1, 3, K.FEW_ROWS + 1])   # W . x^T twice, then x . W^T
@pytest.mark.parametrize("n_in", [1, 2])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matmul_transposed_is_the_product_with_the_kernel_in_every_form(rows, n_in, dtype):
  rs = np.random.RandomState(1)
  ins = (4, 6)[:n_in] if n_in == 2 else (24,)
  x = jnp.asarray(rs.normal(size=(rows, 1, *ins)), jnp.float32)
  kernel = jnp.asarray(rs.normal(size=(5, 7, *ins)), jnp.float32)   # [*out, *in]
  got = jax.jit(lambda x, k: K.matmul_transposed(x, k, n_in, dtype))(x, kernel)
  spec = "rtij,abij->rtab" if n_in == 2 else "rti,abi->rtab"
  want = np.einsum(spec, np.asarray(x.astype(dtype), np.float64),
                   np.asarray(kernel.astype(dtype), np.float64))
  assert got.shape == (rows, 1, 5, 7) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)
