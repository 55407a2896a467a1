"""`einsum_f32` (models/common.py): bf16 operands, float32 accumulation, a bf16 backward pass
that computes only the gradients something asks for."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hawk_jax import flops
from hawk_jax.models.common import einsum_f32

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
