"""HAWK's losses (DESIGN.md §3).

- `lm_loss`: causal-LM cross-entropy, HF convention (logits at t predict labels at t+1;
  label -100 is ignored), averaged over the supervised tokens of the whole batch.
- `consistency_loss`: L_MV = 1 - cos(appearance tight, motion tight) with both flattened over
  the WHOLE batch into one vector each, as the released code does (`.view(1, -1)`), no
  stop-gradient.
- `total_loss`: w_vl L_VL + w_ml L_ML + w_mv L_MV, where L_ML is the motion-language pass or,
  for the released stage 2, L_VL again.
"""
from __future__ import annotations

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


def total_loss(outputs, batch, *, w_vl: float, w_ml: float, w_mv: float, ml_source: str):
  """outputs from `Hawk.__call__`; returns (total, dict of terms)."""
  l_vl, n_tok = lm_loss(outputs["logits"], batch["labels"])
  if ml_source == "motion_text":
    l_ml, _ = lm_loss(outputs["ml_logits"], batch["ml_labels"])
  elif ml_source == "vl":
    l_ml = l_vl
  else:
    raise ValueError(f"loss.ml_source={ml_source!r}: expected 'motion_text' or 'vl'")
  l_mv = consistency_loss(outputs["tight_appearance"], outputs["tight_motion"])
  total = w_vl * l_vl + w_ml * l_ml + w_mv * l_mv
  return total, {"loss": total, "l_vl": l_vl, "l_ml": l_ml, "l_mv": l_mv,
                 "supervised_tokens": n_tok}
