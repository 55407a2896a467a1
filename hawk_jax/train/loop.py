"""The training loop of one stage: init -> (resume) -> jitted sharded steps -> checkpoints.

A run killed at any moment and started again with the same command resumes from its last
finished checkpoint (trainable parameters, optimizer state, step and the Grain iterator state),
and ends with exactly the parameters of an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hawk_jax import checkpoint
from hawk_jax import flops as flops_lib
from hawk_jax.hardware import chip as chip_spec
from hawk_jax.models.hawk import split_params
from hawk_jax.models.params import count
from hawk_jax.sharding import make_mesh
from hawk_jax.train import data as train_data
from hawk_jax.train.init import initialize
from hawk_jax.train.metrics_log import MetricsWriter
from hawk_jax.train.state import train_setup
from hawk_jax.train.step import make_eval_step

log = logging.getLogger("hawk_jax.train")

# train.frozen: how a workdir keeps its frozen towers (configs/common.py).
FROZEN_MODES = ("copy", "reference")


@dataclasses.dataclass
class StageResult:
  workdir: str
  first_loss: float | None
  last_loss: float | None
  steps: int
  resumed_from: int | None
  eval_loss: float | None
  sources: dict


def _estimate_step_flops(traced) -> float:
  """Global FLOPs of one train step, counted on its jaxpr (hawk_jax/flops.py).

  Not `compiled.cost_analysis()`: that counts a scanned layer stack's body once (so a scanned
  model's MFU came out layers-times too low) and, for a partitioned program, per device."""
  return float(flops_lib.count_traced(traced).total)


def train_stage(cfg: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None,
                progress: bool = True) -> StageResult:
  """Train one stage into `workdir`. `stop_after` ends early after that many steps of this
  invocation (tests use it to simulate an interruption)."""
  frozen_mode = cfg.train.get("frozen", "copy")  # config.json of older runs lacks it
  if frozen_mode not in FROZEN_MODES:
    raise ValueError(f"train.frozen={frozen_mode!r}: expected one of {FROZEN_MODES}")
  os.makedirs(workdir, exist_ok=True)
  if jax.process_count() > 1:
    log.info("process %d of %d", jax.process_index(), jax.process_count())
  done = _finished(workdir, int(cfg.train.num_steps))
  if done is not None:
    log.info("%s: already trained to step %d; nothing to do", workdir, done.steps)
    return done
  checkpoint.write_config(workdir, cfg)
  mesh = make_mesh(cfg.mesh_shape)
  log.info("mesh %s", dict(mesh.shape))
  setup = train_setup(cfg, mesh)
  config, model, rules = setup.config, setup.model, setup.rules

  with jax.set_mesh(mesh):
    params, _, sources, frozen_from = initialize(config, cfg, mesh, rules)
  for group, origin in sorted(sources.items()):
    log.info("params %-40s <- %s", group, origin)
  trainable, frozen = split_params(params, config)
  log.info("parameters: trainable %s, frozen %s", f"{count(trainable):,}", f"{count(frozen):,}")
  # Through the resolver: a resumed "reference" run has frozen_ref.json, not frozen/ (and a
  # dangling one raises here instead of being papered over with a fresh copy).
  if (not checkpoint.has_params(checkpoint.frozen_dir(workdir))
      and jax.process_index() == 0):
    _store_frozen(workdir, frozen, frozen_mode, frozen_from)

  state = setup.init_state(trainable)
  loader = train_data.train_iterator(cfg, split="train")
  ckpts = checkpoint.TrainCheckpoints(os.path.join(workdir, "checkpoints"),
                                      keep=cfg.train.keep_checkpoints)
  start = ckpts.latest_step()
  if start is not None:
    restored = ckpts.restore(start, setup.state["trainable"], setup.state["opt_state"],
                             data_iter=loader)
    state = {"step": jnp.asarray(start, jnp.int32), "trainable": restored["trainable"],
             "opt_state": restored["opt_state"]}
    log.info("resumed from %s step %d", ckpts.directory, start)

  batch_shardings = setup.batch_shardings
  first_batch = next(loader)

  def to_device(b):
    return {k: jax.make_array_from_process_local_data(s, np.asarray(b[k]))
            for k, s in batch_shardings.items()}

  # MFU is rated against this chip's peak; an unknown name fails here, before the compile.
  peak = chip_spec(cfg.train.get("chip", "cpu")).peak_bf16_flops * jax.device_count()
  writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
  num_steps = int(cfg.train.num_steps)
  step = int(start or 0)
  batch = to_device(first_batch)
  with jax.set_mesh(mesh):  # without it Flax's activation constraints are no-ops
    traced = setup.jit_step.trace(state, frozen, batch)
    compiled = traced.lower().compile()
  step_flops = _estimate_step_flops(traced)
  log.info("train step: %.4g GFLOP, counted on its jaxpr (remat recomputation included, and "
           "the LM-head chunks the loss skips at run time too)", step_flops / 1e9)
  global_batch = int(first_batch["input_ids"].shape[0]) * jax.process_count()
  tokens_per_batch = global_batch * int(first_batch["input_ids"].shape[1])

  bar = None
  if progress and jax.process_index() == 0:
    from tqdm import tqdm
    bar = tqdm(total=num_steps, initial=step, desc=f"stage {cfg.stage}", dynamic_ncols=True)
  t_last, steps_since = time.perf_counter(), 0
  done_here = 0
  while step < num_steps:
    state, metrics = compiled(state, frozen, batch)
    step += 1
    done_here += 1
    steps_since += 1
    if step % cfg.train.log_every == 0 or step == num_steps or step == 1 or done_here == 1:
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      dt = (time.perf_counter() - t_last) / max(steps_since, 1)
      t_last, steps_since = time.perf_counter(), 0
      m.update(samples_per_s=global_batch / dt, tokens_per_s=tokens_per_batch / dt,
               step_gflop=step_flops / 1e9, mfu=step_flops / dt / peak)
      writer.write(step, m)
      if bar is not None:
        bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['learning_rate']:.2e}")
    if bar is not None:
      bar.update(1)
    if step % cfg.train.ckpt_every == 0 or step == num_steps:
      ckpts.save(step, state["trainable"], state["opt_state"], data_iter=loader,
                 meta={"stage": int(cfg.stage), "variant": cfg.variant})
    if stop_after is not None and done_here >= stop_after:
      break
    if step < num_steps:
      batch = to_device(next(loader))
  if bar is not None:
    bar.close()
  ckpts.close()

  first_loss, last_loss = loss_ends(os.path.join(workdir, "metrics.jsonl"))
  eval_loss = None
  if step >= num_steps and cfg.train.eval_batches:
    eval_loss = evaluate_loss(model, cfg, state["trainable"], frozen, mesh, rules,
                              batch_shardings)
    if eval_loss is not None:
      writer.write(step, {"eval_loss": eval_loss})
  writer.close()
  result = StageResult(workdir, first_loss, last_loss, step, start, eval_loss, sources)
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(dataclasses.asdict(result), f, indent=2)
  return result


def _store_frozen(workdir: str, frozen, mode: str, frozen_from: str | None) -> None:
  """Save the frozen towers into workdir/frozen/, or (mode "reference", towers loaded
  unchanged from `frozen_from`) write workdir/frozen_ref.json pointing at them. Never both."""
  if mode == "reference":
    if frozen_from is not None:
      holder = checkpoint.write_frozen_ref(workdir, frozen_from)
      log.info("frozen towers: %s refers to those of %s (train.frozen=reference; keep that "
               "workdir)", os.path.join(workdir, checkpoint.FROZEN_REF), holder)
      return
    log.warning("train.frozen=reference, but the frozen towers were not all loaded from a "
                "previous workdir (init.from_stage empty, or it has no frozen towers): saving "
                "a copy in %s", os.path.join(workdir, "frozen"))
  checkpoint.save_params(os.path.join(workdir, "frozen"), frozen)


def _finished(workdir: str, num_steps: int) -> StageResult | None:
  """The recorded result of a run that already reached `num_steps` (a rerun is a no-op)."""
  path = os.path.join(workdir, "result.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    r = StageResult(**json.load(f))
  latest = checkpoint.TrainCheckpoints(os.path.join(workdir, "checkpoints"),
                                       async_save=False).latest_step()
  return r if latest is not None and latest >= num_steps and r.steps >= num_steps else None


def loss_ends(metrics_path: str, n: int = 5) -> tuple[float | None, float | None]:
  """Mean training loss of the first and last `n` logged steps (single batches are noisy),
  from the metrics log, which spans interrupted and resumed invocations (a step logged twice
  counts once, its latest value)."""
  by_step = {}
  if os.path.exists(metrics_path):
    with open(metrics_path, encoding="utf-8") as f:
      for line in f:
        rec = json.loads(line)
        if "loss" in rec:
          by_step[rec["step"]] = rec["loss"]
  if not by_step:
    return None, None
  losses_ = [by_step[k] for k in sorted(by_step)]
  return float(np.mean(losses_[:n])), float(np.mean(losses_[-n:]))


def evaluate_loss(model, cfg, trainable, frozen, mesh, rules, batch_shardings):
  """Mean loss over a few batches of the held-out split (None where there is none)."""
  try:
    it = train_data.train_iterator(cfg, split="test", train=False)
  except (FileNotFoundError, KeyError) as e:
    log.info("no held-out evaluation: %s", e)
    return None
  eval_fn = jax.jit(make_eval_step(model, cfg.loss.to_dict(), tuple(rules)))
  totals = []
  for _ in range(int(cfg.train.eval_batches)):
    b = next(it)
    b = {k: jax.make_array_from_process_local_data(s, np.asarray(b[k]))
         for k, s in batch_shardings.items()}
    with jax.set_mesh(mesh):
      totals.append(float(eval_fn(trainable, frozen, b)["loss"]))
  return float(np.mean(totals)) if totals else None
