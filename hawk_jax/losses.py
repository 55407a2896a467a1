"""HAWK's losses (docs/model.md, "Losses and stages").

- `lm_loss`: causal-LM cross-entropy, HF convention (logits at t predict labels at t+1;
  label -100 is ignored), averaged over the supervised tokens of the whole batch.
- `lm_loss_chunked`: the same value from the final hidden states, computing the LM head chunk
  by chunk over each row's positions in supervised-first order, and skipping (forward and
  backward) chunks with no supervised target.
- `consistency_loss`: L_MV = 1 - cos(appearance tight, motion tight) with both flattened over
  the WHOLE batch into one vector each, as the released code does (`.view(1, -1)`), no
  stop-gradient.
- `total_loss`: w_vl L_VL + w_ml L_ML + w_mv L_MV, where L_ML is the motion-language pass or,
  for the released stage 2, L_VL again.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

IGNORE = -100


def lm_loss(logits, labels):
  """Returns (mean token cross-entropy, number of supervised tokens) in float32."""
  logits = logits[:, :-1].astype(jnp.float32)
  targets = labels[:, 1:]
  valid = targets != IGNORE
  safe = jnp.where(valid, targets, 0)
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
  nll = (logz - picked) * valid
  count = valid.sum()
  return nll.sum() / jnp.maximum(count, 1), count


def consistency_loss(tight_a, tight_b, eps: float = 1e-8):
  a = tight_a.astype(jnp.float32).reshape(-1)
  b = tight_b.astype(jnp.float32).reshape(-1)
  norms = jnp.maximum(jnp.linalg.norm(a), eps) * jnp.maximum(jnp.linalg.norm(b), eps)
  cos = jnp.dot(a, b) / norms
  return 1.0 - cos


# Positions per row in one LM-head chunk (of the supervised-first order, `lm_loss_chunked`).
LM_CHUNK = 32


def lm_loss_chunked(hidden, labels, logits_fn: Callable, chunk: int = LM_CHUNK):
  """`lm_loss` from final hidden states [B, L, E]; `logits_fn` maps [B, c, E] to logits.

  Each row's positions are first put in supervised-first order (a stable sort of the row on
  "is this target ignored", hidden states gathered alike; the loss is a sum over positions,
  so it does not change). The reordered positions are cut into chunks of `chunk` and each
  chunk's logits are computed under a `lax.cond` on "does any row supervise a target here":
  the LM head -- a [tokens, vocab] product and its backward pass -- runs on
  ceil(max supervised per row / chunk) chunks of [B, chunk] rows, wherever in its row an
  answer lies, and prompt, visual and padding positions (most of a stage-2 sequence) are
  skipped. The sort runs along positions only, so a batch sharded over devices stays where it
  is. Same value and gradient as `lm_loss(logits_fn(hidden), labels)`.

  Gradients flow to `hidden` only: `logits_fn`'s weights (the frozen LM head) get none.
  Differentiated, each computed chunk produces its gradient for `hidden` in the forward pass
  (`_nll_sum_fwd`), so the conditional hands out a [B, c, E] block instead of the residuals
  autodiff of a `cond` would keep: a copy of the head's kernel and the chunk's logits -- and,
  for a skipped chunk, zeros of those shapes (at `small` 4 x 106 MB of zeros per step).
  """
  h = hidden[:, :-1]
  targets = labels[:, 1:]
  order = jnp.argsort((targets == IGNORE).astype(jnp.int32), axis=1, stable=True)
  h = jnp.take_along_axis(h, order[..., None], axis=1)
  targets = jnp.take_along_axis(targets, order, axis=1)
  n = targets.shape[1]
  pad = -n % chunk
  if pad:
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)), constant_values=IGNORE)
  total = _nll_sum(logits_fn, chunk, h, jnp.asarray(targets))
  count = (targets != IGNORE).sum()
  return total / jnp.maximum(count, 1), count


def _chunk_nll(logits, tc, valid):
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, jnp.where(valid, tc, 0)[..., None], axis=-1)[..., 0]
  return jnp.sum((logz - picked) * valid)


def _chunks(h, targets, chunk):
  """(hidden, targets, supervised) of each chunk of positions."""
  for start in range(0, h.shape[1], chunk):
    tc = targets[:, start:start + chunk]
    yield h[:, start:start + chunk], tc, tc != IGNORE


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _nll_sum(logits_fn, chunk, h, targets):
  """Summed NLL over the chunks of h [B, L, E] / targets [B, L] (L a multiple of chunk)."""
  total = jnp.zeros((), jnp.float32)
  for hc, tc, valid in _chunks(h, targets, chunk):
    total = total + jax.lax.cond(
        jnp.any(valid), lambda hc, tc, valid: _chunk_nll(logits_fn(hc).astype(jnp.float32),
                                                         tc, valid),
        lambda *_: jnp.zeros((), jnp.float32), hc, tc, valid)
  return total


def _nll_sum_fwd(logits_fn, chunk, h, targets):
  def with_grad(hc, tc, valid):
    logits, pullback = jax.vjp(lambda x: logits_fn(x).astype(jnp.float32), hc)
    # d nll / d logits = softmax - one_hot(target), on supervised positions only.
    dlogits = (jax.nn.softmax(logits, axis=-1)
               - jax.nn.one_hot(jnp.where(valid, tc, 0), logits.shape[-1], dtype=jnp.float32))
    (dh,) = pullback(dlogits * valid[..., None])
    return _chunk_nll(logits, tc, valid), dh.astype(hc.dtype)

  def skip(hc, tc, valid):
    return jnp.zeros((), jnp.float32), jnp.zeros_like(hc)

  total = jnp.zeros((), jnp.float32)
  grads = []
  for hc, tc, valid in _chunks(h, targets, chunk):
    nll, dh = jax.lax.cond(jnp.any(valid), with_grad, skip, hc, tc, valid)
    total = total + nll
    grads.append(dh)
  return total, jnp.concatenate(grads, axis=1)


def _nll_sum_bwd(logits_fn, chunk, dh, g):
  del logits_fn, chunk
  return (g * dh).astype(dh.dtype), None


_nll_sum.defvjp(_nll_sum_fwd, _nll_sum_bwd)


def total_loss(outputs, batch, *, w_vl: float, w_ml: float, w_mv: float, ml_source: str,
               logits_fn: Callable | None = None, chunk: int = LM_CHUNK):
  """outputs from `Hawk.__call__`; returns (total, dict of terms).

  With `logits_fn` (the LLM head), outputs hold the final hidden states (`hidden`,
  `ml_hidden`, from `return_hidden=True`) and the LM terms use `lm_loss_chunked`.
  """
  def lm(prefix, labels):
    if logits_fn is None:
      return lm_loss(outputs[prefix + "logits"], labels)
    return lm_loss_chunked(outputs[prefix + "hidden"], labels, logits_fn, chunk)

  l_vl, n_tok = lm("", batch["labels"])
  if ml_source == "motion_text":
    l_ml, _ = lm("ml_", batch["ml_labels"])
  elif ml_source == "vl":
    l_ml = l_vl
  else:
    raise ValueError(f"loss.ml_source={ml_source!r}: expected 'motion_text' or 'vl'")
  l_mv = consistency_loss(outputs["tight_appearance"], outputs["tight_motion"])
  total = w_vl * l_vl + w_ml * l_ml + w_mv * l_mv
  return total, {"loss": total, "l_vl": l_vl, "l_ml": l_ml, "l_mv": l_mv,
                 "supervised_tokens": n_tok}
