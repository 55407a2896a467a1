"""The optimiser as released (docs/model.md, "Losses and stages"): AdamW (0.9, 0.999), weight
decay 0.05 on matrices only, linear warm-up init_lr -> peak_lr then cosine to end_lr, optional
clipping.

It is built over the TRAINABLE parameter tree only, so frozen parameters have no optimizer
state at all (the MaxText `multi_transform` effect, by construction).
"""
from __future__ import annotations

import jax
import optax


def learning_rate_schedule(c) -> optax.Schedule:
  warm = optax.linear_schedule(c.init_lr, c.peak_lr, max(int(c.warmup_steps), 1))
  decay_steps = max(int(c.total_steps) - int(c.warmup_steps), 1)
  cosine = optax.cosine_decay_schedule(c.peak_lr, decay_steps, alpha=c.end_lr / c.peak_lr)
  return optax.join_schedules([warm, cosine], [int(c.warmup_steps)])


def decay_mask(params):
  """Weight decay on matrices (ndim >= 2: kernels, embeddings, query tokens), not on biases
  or norm scales — the released `p.ndim < 2 or 'bias' in n or 'ln' in n` rule."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                          optax.Schedule]:
  c = dict(optim_cfg)
  c["total_steps"] = total_steps
  c = type("C", (), c)
  schedule = learning_rate_schedule(c)
  parts = []
  if c.grad_clip_norm and c.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay,
                           mask=decay_mask))
  return optax.chain(*parts), schedule
