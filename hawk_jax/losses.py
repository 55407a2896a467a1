"""HAWK's losses (DESIGN.md §3).

- `lm_loss`: causal-LM cross-entropy, HF convention (logits at t predict labels at t+1;
  label -100 is ignored), averaged over the supervised tokens of the whole batch.
- `lm_loss_chunked`: the same value from the final hidden states, computing the LM head chunk
  by chunk and skipping (forward and backward) chunks with no supervised target.
- `consistency_loss`: L_MV = 1 - cos(appearance tight, motion tight) with both flattened over
  the WHOLE batch into one vector each, as the released code does (`.view(1, -1)`), no
  stop-gradient.
- `total_loss`: w_vl L_VL + w_ml L_ML + w_mv L_MV, where L_ML is the motion-language pass or,
  for the released stage 2, L_VL again.
"""
from __future__ import annotations

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
  cos = jnp.dot(a, b) / (jnp.maximum(jnp.linalg.norm(a), eps) * jnp.maximum(jnp.linalg.norm(b), eps))
  return 1.0 - cos


def lm_loss_chunked(hidden, labels, logits_fn: Callable, chunk: int = 32):
  """`lm_loss` from final hidden states [B, L, E]; `logits_fn` maps [B, c, E] to logits.

  The positions are cut into chunks of `chunk` and each chunk's logits are computed under a
  `lax.cond` on "does any row supervise a target here": prompt, visual and padding positions
  (most of a stage-2 sequence) skip the LM head -- a [tokens, vocab] product and its backward
  pass -- entirely. Same value as `lm_loss(logits_fn(hidden), labels)`.
  """
  h = hidden[:, :-1]
  targets = labels[:, 1:]
  n = targets.shape[1]
  pad = -n % chunk
  if pad:
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)), constant_values=IGNORE)
  total = jnp.zeros((), jnp.float32)
  for start in range(0, n + pad, chunk):
    hc, tc = h[:, start:start + chunk], targets[:, start:start + chunk]
    valid = tc != IGNORE

    def chunk_nll(hc, tc, valid):
      logits = logits_fn(hc).astype(jnp.float32)
      logz = jax.nn.logsumexp(logits, axis=-1)
      picked = jnp.take_along_axis(logits, jnp.where(valid, tc, 0)[..., None], axis=-1)[..., 0]
      return jnp.sum((logz - picked) * valid)

    total = total + jax.lax.cond(jnp.any(valid), chunk_nll,
                                 lambda *_: jnp.zeros((), jnp.float32), hc, tc, valid)
  count = (targets != IGNORE).sum()
  return total / jnp.maximum(count, 1), count


def total_loss(outputs, batch, *, w_vl: float, w_ml: float, w_mv: float, ml_source: str,
               logits_fn: Callable | None = None, chunk: int = 32):
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
