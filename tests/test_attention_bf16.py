"""The unmasked bf16 attention of the BLIP-2 towers (models/blip2_layers.py): token-major
products in the forward pass, the head-major program under differentiation."""
import jax
import jax.numpy as jnp
import numpy as np

from hawk_jax.models import blip2_layers as B


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
  qs = B.scale_queries(q, q.shape[-1] ** -0.5, jnp.bfloat16)
  fast = jax.jit(B._bf16_attention)(qs, k, v)
  head_major = jax.jit(lambda q, k, v: B._head_major_attention(q, k, v, jnp.bfloat16))(qs, k, v)
  np.testing.assert_allclose(np.asarray(fast, np.float32), np.asarray(head_major, np.float32),
                             atol=0.016)  # both round the probabilities and output to bf16


def test_gradients_are_the_head_major_ones():
  q, k, v = qkv(2)
  w = jnp.asarray(np.random.RandomState(3).normal(size=(2, 9, 3, 8)), jnp.float32)

  def loss(attn):
    return lambda q, k, v: jnp.sum(attn(q, k, v).astype(jnp.float32) * w)

  got = jax.jit(jax.grad(loss(lambda q, k, v: B.attention(q, k, v, jnp.bfloat16)),
                         (0, 1, 2)))(q, k, v)
  want = jax.jit(jax.grad(loss(lambda q, k, v: B._head_major_attention(
      B.scale_queries(q, q.shape[-1] ** -0.5, jnp.bfloat16), k, v, jnp.bfloat16)),
      (0, 1, 2)))(q, k, v)
  for g, r in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(r, np.float32))
  # and they are attention's gradients (float32 reference on the same values)
  ref = jax.grad(loss(reference), (0, 1, 2))(q, k, v)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r), atol=0.1, rtol=0.05)
