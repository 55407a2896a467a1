"""Losses against PyTorch references (HF's shifted cross-entropy, F.cosine_similarity)."""
import numpy as np
import torch
import torch.nn.functional as F

from hawk_jax import losses


def test_lm_loss_matches_torch_shifted_cross_entropy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 7, 11)).astype(np.float32)
  labels = rng.integers(0, 11, size=(3, 7))
  labels[:, :3] = -100
  labels[1, 5:] = -100
  got, n = losses.lm_loss(logits, labels)
  want = F.cross_entropy(torch.tensor(logits[:, :-1]).reshape(-1, 11),
                         torch.tensor(labels[:, 1:]).reshape(-1), ignore_index=-100)
  np.testing.assert_allclose(float(got), want.item(), rtol=1e-5)
  assert int(n) == int((labels[:, 1:] != -100).sum())


def test_consistency_loss_is_one_minus_batch_flattened_cosine():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(2, 4, 6)).astype(np.float32)
  b = rng.normal(size=(2, 4, 6)).astype(np.float32)
  want = 1 - F.cosine_similarity(torch.tensor(a).view(1, -1), torch.tensor(b).view(1, -1)).item()
  np.testing.assert_allclose(float(losses.consistency_loss(a, b)), want, rtol=1e-5)
  np.testing.assert_allclose(float(losses.consistency_loss(a, a)), 0.0, atol=1e-6)


def test_total_loss_weights_and_released_stage2():
  rng = np.random.default_rng(2)
  out = {"logits": rng.normal(size=(2, 5, 9)).astype(np.float32),
         "ml_logits": rng.normal(size=(2, 4, 9)).astype(np.float32),
         "tight_appearance": rng.normal(size=(2, 3, 4)).astype(np.float32),
         "tight_motion": rng.normal(size=(2, 3, 4)).astype(np.float32)}
  batch = {"labels": rng.integers(0, 9, size=(2, 5)), "ml_labels": rng.integers(0, 9, size=(2, 4))}
  tot, t = losses.total_loss(out, batch, w_vl=1.0, w_ml=0.1, w_mv=0.1, ml_source="motion_text")
  np.testing.assert_allclose(float(tot), float(t["l_vl"] + 0.1 * t["l_ml"] + 0.1 * t["l_mv"]),
                             rtol=1e-6)
  tot2, t2 = losses.total_loss(out, batch, w_vl=1.0, w_ml=0.1, w_mv=0.1, ml_source="vl")
  np.testing.assert_allclose(float(tot2), float(1.1 * t2["l_vl"] + 0.1 * t2["l_mv"]), rtol=1e-6)


def test_lm_loss_chunked_equals_lm_loss_in_value_and_gradient():
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(3)
  hidden = jnp.asarray(rng.normal(size=(3, 50, 8)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(8, 13)), jnp.float32)
  labels = rng.integers(0, 13, size=(3, 50))
  labels[:, :37] = -100   # whole chunks without a target are skipped
  labels[1, 45:] = -100
  def fn(h):
    return h @ head
  want, n = losses.lm_loss(fn(hidden), labels)
  got, m = losses.lm_loss_chunked(hidden, labels, fn, chunk=16)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  assert int(m) == int(n)
  g_want = jax.grad(lambda h: losses.lm_loss(fn(h), labels)[0])(hidden)
  g_got = jax.grad(lambda h: losses.lm_loss_chunked(h, labels, fn, chunk=16)[0])(hidden)
  np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), atol=1e-6)
  none = np.full_like(labels, -100)
  assert float(losses.lm_loss_chunked(hidden, none, fn, chunk=16)[0]) == 0.0


def test_lm_loss_chunked_runs_the_head_on_supervised_first_chunks_only():
  """Answers anywhere in a row (early, scattered, late): each row's positions are taken in
  supervised-first order, so the head runs on ceil(max supervised per row / chunk) chunks
  (counted at run time by a callback in the head), and value and gradient equal lm_loss's."""
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(4)
  hidden = jnp.asarray(rng.normal(size=(3, 65, 8)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(8, 13)), jnp.float32)
  labels = np.full((3, 65), -100)
  labels[0, 2:12] = rng.integers(0, 13, 10)           # early: 10 targets (positions 1..10)
  labels[1, 5::4] = rng.integers(0, 13, 15)           # scattered: 15 targets
  labels[2, 50:] = rng.integers(0, 13, 15)            # late: 15 targets
  calls = []

  def fn(h):
    jax.debug.callback(lambda: calls.append(1))
    return h @ head
  want, n = losses.lm_loss(hidden @ head, labels)
  got, m = jax.jit(lambda h: losses.lm_loss_chunked(h, labels, fn, chunk=16))(hidden)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  assert int(m) == int(n) == 40
  assert len(calls) == 1  # 15 supervised at most per row: 1 chunk of 16, not 4
  g_want = jax.grad(lambda h: losses.lm_loss(h @ head, labels)[0])(hidden)
  g_got = jax.grad(lambda h: losses.lm_loss_chunked(h, labels, fn, chunk=16)[0])(hidden)
  np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), atol=1e-6)
