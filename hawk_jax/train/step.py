"""The jitted, sharded train step.

Gradients are taken with respect to the trainable tree only, so nothing is computed for the
frozen towers (their outputs do not depend on trainable parameters); with the released
`query_tokens_motion` trainable, gradients flow back through the frozen motion image Q-Former,
exactly as in the released code. Gradient accumulation scans over micro-batches inside the step.

A step whose loss or gradient norm is not finite changes nothing but its counters: the update
is dropped inside the step (a select between the new and the old parameters and optimizer
state, no host round trip), `skips.total` and `skips.streak` (consecutive skips) count it, and
the training loop stops the run after `train.max_consecutive_skips` in a row. So a NaN never
reaches the parameters, and a checkpoint always holds the last good ones.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hawk_jax import losses
from hawk_jax.models.hawk import Hawk, merge_params

# The batch arrays `Hawk.__call__` takes, positionally and as the motion-language keywords
# (the whole batch layout: hawk_jax.train.data.batch_spec).
MODEL_KEYS = ("frames", "motion", "input_ids", "attention_mask", "visual_mask")
ML_KEYS = ("ml_input_ids", "ml_attention_mask", "ml_visual_mask")


def forward_loss(model: Hawk, params, batch, rng, loss_cfg, deterministic: bool = False):
  """The stage loss. The LLM hands back its final hidden states and the LM head runs only on
  chunks of positions with supervised targets (`losses.lm_loss_chunked`)."""
  use_ml = loss_cfg["ml_source"] == "motion_text"
  kwargs = {k: batch[k] for k in ML_KEYS} if use_ml else {}
  out = model.apply({"params": params}, *(batch[k] for k in MODEL_KEYS),
                    deterministic=deterministic, rngs={"dropout": rng}, return_hidden=True,
                    **kwargs)

  def logits_fn(hidden):
    return model.apply({"params": params}, hidden, method=Hawk.lm_logits)

  return losses.total_loss(out, batch, w_vl=loss_cfg["w_vl"], w_ml=loss_cfg["w_ml"],
                           w_mv=loss_cfg["w_mv"], ml_source=loss_cfg["ml_source"],
                           logits_fn=logits_fn, chunk=loss_cfg.get("lm_chunk", losses.LM_CHUNK))


def make_train_step(model: Hawk, tx: optax.GradientTransformation, schedule: Callable,
                    loss_cfg: dict, seed: int, accum_steps: int = 1, rules=None):
  """Returns step(state, frozen, batch) -> (state, metrics); state = {step, trainable,
  opt_state, skips}. Wrap it in jax.jit with shardings (hawk_jax.train.state)."""
  loss_cfg = dict(loss_cfg)

  def loss_fn(trainable, frozen, batch, rng):
    return forward_loss(model, merge_params(trainable, frozen), batch, rng, loss_cfg)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state, frozen, batch):
    with nn.logical_axis_rules(rules or ()):
      rng = jax.random.fold_in(jax.random.key(seed), state["step"])
      if accum_steps == 1:
        (_, terms), grads = grad_fn(state["trainable"], frozen, batch, rng)
      else:
        micro = jax.tree.map(
            lambda x: x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:]), batch)

        def body(acc, xs):
          mb, i = xs
          (_, t), g = grad_fn(state["trainable"], frozen, mb, jax.random.fold_in(rng, i))
          return jax.tree.map(jnp.add, acc, (g, t)), None

        zeros_g = jax.tree.map(jnp.zeros_like, state["trainable"])
        zeros_t = jax.eval_shape(lambda: loss_fn(state["trainable"], frozen,
                                                 jax.tree.map(lambda x: x[0], micro), rng)[1])
        zeros_t = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros_t)
        (grads, terms), _ = jax.lax.scan(body, (zeros_g, zeros_t),
                                         (micro, jnp.arange(accum_steps)))
        grads = jax.tree.map(lambda g: g / accum_steps, grads)
        terms = {k: (v if k == "supervised_tokens" else v / accum_steps)
                 for k, v in terms.items()}
      updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
      trainable = optax.apply_updates(state["trainable"], updates)
      grad_norm = optax.global_norm(grads)
      finite = jnp.isfinite(terms["loss"]) & jnp.isfinite(grad_norm)

      def unless_bad(new, old):
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

      skipped = jnp.logical_not(finite).astype(jnp.int32)
      skips = {"total": state["skips"]["total"] + skipped,
               "streak": jnp.where(finite, 0, state["skips"]["streak"] + 1)}
      metrics = dict(terms, grad_norm=grad_norm, learning_rate=schedule(state["step"]),
                     skipped=skipped, skip_streak=skips["streak"])
      new_state = {"step": state["step"] + 1,
                   "trainable": unless_bad(trainable, state["trainable"]),
                   "opt_state": unless_bad(opt_state, state["opt_state"]), "skips": skips}
      return new_state, metrics

  return step


def make_eval_step(model: Hawk, loss_cfg: dict, rules=None):
  loss_cfg = dict(loss_cfg)

  def step(trainable, frozen, batch):
    with nn.logical_axis_rules(rules or ()):
      _, terms = forward_loss(model, merge_params(trainable, frozen), batch,
                              jax.random.key(0), loss_cfg, deterministic=True)
      return terms
  return step
