"""The training loop of one stage: init -> (resume) -> jitted sharded steps -> checkpoints.

A run killed at any moment and started again with the same command resumes from its last
finished checkpoint (trainable parameters, optimizer state, step and the Grain iterator state),
and ends with exactly the parameters of an uninterrupted run.

On a pod every process runs this same loop (SPMD). What is a collective is joined by all of
them: the frozen-tower save, checkpoint saves and restores (Orbax: each process writes its
shards, process 0 the metadata), the evaluation loss. What there is one of -- config.json,
frozen_ref.json, metrics.jsonl, TensorBoard events, result.json, the progress bar, INFO logs --
comes from process 0 (hawk_jax.distributed.is_main_process). Each process reads its own shard
of the data (data_pipelines.loaders). Workdirs are paths of etils.epath, so gs://bucket/... works
like a local folder.

Preemption: SIGTERM (what a Cloud TPU VM gets before maintenance or preemption, what SLURM sends
before a time limit) makes every process save a checkpoint at the same next step boundary
(JAX's preemption sync point when distributed, else a signal handler) and raise `Preempted`;
rerunning the same command resumes and ends bit-identical to an uninterrupted run.

Resuming on another topology (process count, mesh shape): parameters and optimizer state are
restored onto the new mesh's shardings; the Grain iterator state is per process, so with another
process count the loader is instead positioned at the checkpoint's step (a batch depends only on
(seed, step), so this gives the same batches).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from hawk_jax import checkpoint, distributed
from hawk_jax import flops as flops_lib
from hawk_jax.hardware import rated_peak_flops
from hawk_jax.models.hawk import split_params
from hawk_jax.models.params import count
from hawk_jax.sharding import make_mesh
from hawk_jax.train import config_checks
from hawk_jax.train import data as train_data
from hawk_jax.train.init import check_from_stage, initialize
from hawk_jax.train.metrics_log import MetricsWriter
from hawk_jax.train.state import skip_counters, train_setup
from hawk_jax.train.step import make_eval_step
from hawk_jax.workdir import WorkdirError

log = logging.getLogger("hawk_jax.train")


@dataclasses.dataclass
class StageResult:
  workdir: str
  first_loss: float | None
  last_loss: float | None
  steps: int
  resumed_from: int | None
  eval_loss: float | None
  sources: dict
  skipped_updates: int = 0   # non-finite steps whose update was dropped (train/step.py)


class Preempted(Exception):
  """SIGTERM reached the run: a checkpoint of `step` is saved; rerun the same command."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f"preempted (SIGTERM): checkpoint saved at step {step} in {workdir}; "
                     "rerun the same command to resume")
    self.step = step


class PreemptionWatch:
  """Whether a SIGTERM has reached the run, agreed by all processes at a step boundary.

  Distributed: JAX's coordination service catches SIGTERM on any process, and
  `reached_preemption_sync_point(n)` is True on every process at the same call (each process
  calls it after every step). On the notice, the sync point is set to one past the largest
  counter any process last passed, counters starting at 0; so `n` counts the steps of this
  invocation (1, 2, ...), not the global step: a notice that arrives while a resumed run is
  still loading or compiling then stops it after its first step, where a global step (say 4,
  after a sync point of 1) would never meet the sync point. (Orbax's CheckpointManager.save
  also passes its step; that can only move the agreed point later, and equally for all.)
  One process: a SIGTERM handler sets a flag (the previous handler is put back by `close`)."""

  def __init__(self):
    self._flag = False
    self._previous = None
    self._sync = jax.distributed.is_initialized()
    if not self._sync:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      except ValueError:  # not the main thread: no handler, no preemption checkpoint
        self._previous = None

  def _on_sigterm(self, signum, frame):
    self._flag = True
    log.warning("SIGTERM: saving a checkpoint at the next step boundary")

  def reached(self, steps_done: int) -> bool:
    """After the `steps_done`-th step of this invocation: stop and save here?"""
    if self._sync:
      return multihost_utils.reached_preemption_sync_point(steps_done)
    return self._flag

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


class Diverged(Exception):
  """`max_skips` consecutive steps had a non-finite loss or gradient norm; their updates were
  dropped, so the parameters (and every checkpoint) are those before `first_step`."""

  def __init__(self, first_step: int, step: int, max_skips: int, checkpoint_step: int | None,
               workdir: str):
    kept = (f"checkpoint step {checkpoint_step} in {workdir} is the last one saved"
            if checkpoint_step is not None else f"no checkpoint was saved in {workdir}")
    super().__init__(
        f"stopped at step {step}: the loss or gradient norm was not finite at steps "
        f"{first_step}..{step} ({max_skips} in a row, train.max_consecutive_skips="
        f"{max_skips}). Those updates were skipped, so the parameters are those before step "
        f"{first_step}; {kept}. Lower optim.peak_lr, set optim.grad_clip_norm, or look at the "
        f"data of those steps")
    self.first_step, self.step, self.checkpoint_step = first_step, step, checkpoint_step


def _estimate_step_flops(traced) -> float:
  """Global FLOPs of one train step, counted on its jaxpr (hawk_jax/flops.py).

  Not `compiled.cost_analysis()`: that counts a scanned layer stack's body once (so a scanned
  model's MFU came out layers-times too low) and, for a partitioned program, per device."""
  return float(flops_lib.count_traced(traced).total)


def _all_agree(flag: bool) -> bool:
  """Process 0's answer, on every process: a decision that leads into a collective (a save
  every process must join) must not depend on when each process looked at the bucket."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _compute_is_f32(config) -> bool:
  return np.dtype(config.llm.dtype) == np.float32


def train_stage(cfg: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None,
                progress: bool = True) -> StageResult:
  """Train one stage into `workdir` (a local path or gs://...). `stop_after` ends early after
  that many steps of this invocation (tests use it to simulate an interruption).

  Raises:
    Preempted: a SIGTERM arrived; the checkpoint of the step it names is complete.
  """
  # Watching from the start: a SIGTERM while loading or compiling stops the run after its first
  # step (with a checkpoint), instead of killing it.
  preemption = PreemptionWatch()
  try:
    return _train_stage(cfg, workdir, stop_after, progress, preemption)
  finally:
    preemption.close()


def _train_stage(cfg, workdir, stop_after, progress, preemption) -> StageResult:
  frozen_mode = cfg.train.get("frozen", "copy")  # config.json of older runs lacks it
  wd = checkpoint.as_path(workdir)
  workdir = str(wd)
  # Before anything is written: a mistake leaves no trace and costs no compile.
  config_checks.check_config(cfg)
  if cfg.init.get("from_stage", ""):
    check_from_stage(cfg.init.from_stage, cfg.get("size"))
  config_checks.check_workdir_matches(wd, cfg)
  train_data.check_records(cfg)
  main = distributed.is_main_process()
  if main:
    wd.mkdir(parents=True, exist_ok=True)
  if jax.process_count() > 1:
    log.info("process %d of %d", jax.process_index(), jax.process_count())
  done = _finished(wd, int(cfg.train.num_steps))
  if _all_agree(done is not None):
    log.info("%s: already trained to step %d; nothing to do", workdir, cfg.train.num_steps)
    return done or StageResult(workdir, None, None, int(cfg.train.num_steps), None, None, {})
  mesh = make_mesh(cfg.mesh_shape)
  log.info("mesh %s", dict(mesh.shape))
  setup = train_setup(cfg, mesh)  # checks that the batch splits over the mesh
  if main:
    checkpoint.write_config(wd, cfg)
  config, model, rules = setup.config, setup.model, setup.rules

  with jax.set_mesh(mesh):
    params, _, sources, frozen_from = initialize(config, cfg, mesh, rules)
  for group, origin in sorted(sources.items()):
    log.debug("params %-40s <- %s", group, origin)
  by_origin: dict[str, list[str]] = {}
  for group, origin in sorted(sources.items()):
    by_origin.setdefault(origin, []).append(group)
  log.info("parameters: %s (per group: --log_level DEBUG)",
           "; ".join(f"{len(g)} group(s) <- {o}" for o, g in by_origin.items()))
  trainable, frozen = split_params(params, config)
  log.info("parameters: trainable %s, frozen %s", f"{count(trainable):,}", f"{count(frozen):,}")
  # Through the resolver: a resumed "reference" run has frozen_ref.json, not frozen/ (and a
  # dangling one raises here instead of being papered over with a fresh copy).
  if _all_agree(not checkpoint.has_params(checkpoint.frozen_dir(wd))):
    _store_frozen(wd, frozen, frozen_mode, frozen_from)

  state = setup.init_state(trainable)
  ckpts = checkpoint.TrainCheckpoints(wd / "checkpoints", keep=cfg.train.keep_checkpoints)
  start, restored, loader = _restore_newest_intact(cfg, setup, ckpts)
  if start is not None:
    meta = restored["meta"]
    state = {"step": jnp.asarray(start, jnp.int32), "trainable": restored["trainable"],
             "opt_state": restored["opt_state"],
             "skips": skip_counters(meta.get("skipped_total", 0), meta.get("skip_streak", 0))}
    log.info("resumed from %s step %d", ckpts.directory, start)
  if loader is None:
    loader = train_data.train_iterator(cfg, split="train", start_step=int(start or 0))

  batch_shardings = setup.batch_shardings
  first_batch = next(loader)

  def to_device(b):
    return {k: jax.make_array_from_process_local_data(s, np.asarray(b[k]))
            for k, s in batch_shardings.items()}

  # MFU is rated against this chip's peak (f32 compute: its f32 peak); an unknown name fails
  # here, before the compile.
  peak = rated_peak_flops(cfg.train.get("chip", "auto"), f32=_compute_is_f32(config),
                          device_kind=jax.devices()[0].device_kind) * jax.device_count()
  writer = MetricsWriter(workdir, enabled=main)
  if start is None:  # once per run: what it trains with, and what its first batch looks like
    writer.write_text(0, "run/config", cfg.to_json_best_effort(indent=2), preformatted=True)
    frames = np.asarray(first_batch["frames"])
    if frames.dtype == np.uint8 and frames.ndim == 5:  # pixels (not a tower cache's tokens)
      writer.write_images(0, "data/frames_motion",
                          np.stack([frames[0], np.asarray(first_batch["motion"])[0]]))
  num_steps = int(cfg.train.num_steps)
  step = int(start or 0)
  records_in_first = int(np.sum(first_batch.get("records_skipped", 0)))
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
  if progress and main:
    from tqdm import tqdm
    bar = tqdm(total=num_steps, initial=step, desc=f"stage {cfg.stage}", dynamic_ncols=True)
  t_last, steps_since = time.perf_counter(), 0
  done_here = 0
  logged: dict[int, float] = {}
  meta = {"stage": int(cfg.stage), "variant": cfg.variant, "process_count": jax.process_count()}
  max_skips = int(cfg.train.get("max_consecutive_skips", 5))
  # Prompt-less records the loader passed over (this process's rows, this invocation).
  records_skipped = records_in_first

  def next_batch():
    nonlocal records_skipped
    b = next(loader)
    records_skipped += int(np.sum(b.get("records_skipped", 0)))
    return to_device(b)

  def check_streak(at_step: int, step_metrics) -> None:
    """Stop when the updates up to `at_step` were skipped `max_skips` times in a row."""
    streak = int(jax.device_get(step_metrics["skip_streak"]))
    if streak >= max_skips:
      ckpts.close()
      writer.close()
      raise Diverged(at_step - streak + 1, at_step, max_skips, ckpts.latest_step(), workdir)

  def save() -> None:
    skips = jax.device_get(state["skips"])
    ckpts.save(step, state["trainable"], state["opt_state"], data_iter=loader,
               meta=dict(meta, skipped_total=int(skips["total"]),
                         skip_streak=int(skips["streak"])))

  # The previous step's skip streak is read once the next step is queued, so the host never
  # waits on the step in flight (the devices stay busy); a save reads the current one (it
  # waits for the step anyway) and nothing is left to read after it.
  pending = None

  def checked_save() -> None:
    nonlocal pending
    check_streak(step, metrics)
    pending = None
    save()
  try:
    while step < num_steps:
      state, metrics = compiled(state, frozen, batch)
      step += 1
      done_here += 1
      steps_since += 1
      if pending is not None:
        check_streak(*pending)
      pending = (step, metrics)
      if step % cfg.train.log_every == 0 or step == num_steps or step == 1 or done_here == 1:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        dt = (time.perf_counter() - t_last) / max(steps_since, 1)
        t_last, steps_since = time.perf_counter(), 0
        m.update(samples_per_s=global_batch / dt, tokens_per_s=tokens_per_batch / dt,
                 step_gflop=step_flops / 1e9, mfu=step_flops / dt / peak,
                 records_skipped=records_skipped)
        writer.write(step, m)
        logged[step] = m["loss"]
        if bar is not None:
          bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['learning_rate']:.2e}")
      if bar is not None:
        bar.update(1)
      saved = False
      if step % cfg.train.ckpt_every == 0 or step == num_steps:
        checked_save()
        saved = True
      if step < num_steps and preemption.reached(done_here):
        if not saved:
          checked_save()
        ckpts.close()
        writer.close()
        raise Preempted(step, workdir)
      if stop_after is not None and done_here >= stop_after:
        break
      if step < num_steps:
        batch = next_batch()
    if pending is not None:
      check_streak(*pending)
  finally:
    if bar is not None:
      bar.close()
  ckpts.close()
  skipped_total = int(jax.device_get(state["skips"]["total"]))
  if skipped_total:
    log.warning("%d update(s) of this stage were skipped: non-finite loss or gradient norm "
                "(metrics.jsonl: 'skipped')", skipped_total)
  if records_skipped:
    log.warning("the loader passed over %d record(s) that cannot make a prompt (named above)",
                records_skipped)

  eval_loss = None
  if step >= num_steps and cfg.train.eval_batches:
    eval_loss = evaluate_loss(model, cfg, state["trainable"], frozen, mesh, rules,
                              batch_shardings)
    if eval_loss is not None:
      writer.write(step, {"eval_loss": eval_loss})
  writer.close()  # a gs:// metrics log is complete in the bucket from here on
  if main:
    first_loss, last_loss = loss_ends(wd / "metrics.jsonl")
  else:  # this invocation's steps only (process 0 alone writes the metrics log)
    first_loss, last_loss = _ends(logged)
  result = StageResult(workdir, first_loss, last_loss, step, start, eval_loss, sources,
                       skipped_total)
  if main:
    (wd / "result.json").write_text(json.dumps(dataclasses.asdict(result), indent=2))
  return result


def _all_succeeded(ok: bool) -> bool:
  """Whether `ok` holds on every process (a restore that failed on one process failed)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def _restore_newest_intact(cfg, setup, ckpts: checkpoint.TrainCheckpoints):
  """(step, restored items, loader) of the newest checkpoint step that restores and matches
  its checksums, or (None, None, None) without checkpoints. The loader is the restored Grain
  iterator, or None where the step's iterator state was saved by another process count (the
  caller positions a fresh loader at the step).

  Newer steps that are damaged are named in a warning and moved to damaged_checkpoints/
  (never deleted), so keep-N counts only intact steps and a later save of the same step number
  does not collide. If no step restores, nothing is moved and the run stops (WorkdirError
  naming each step and why): training from scratch over a workdir with checkpoints would
  silently throw the run away."""
  damaged: list[checkpoint.DamagedCheckpoint] = []
  for step in reversed(ckpts.all_steps()):
    loader = None
    if ckpts.has_data_state(step):
      loader = train_data.train_iterator(cfg, split="train")
    else:
      log.info("step %d's data iterator was saved by another number of processes: "
               "positioning the loader at step %d instead", step, step)
    restored, error = None, None
    try:
      restored = ckpts.restore(step, setup.state["trainable"], setup.state["opt_state"],
                               data_iter=loader)
    except checkpoint.DamagedCheckpoint as e:
      error = e
    if _all_succeeded(error is None):
      for bad in damaged:
        if distributed.is_main_process():
          dest = ckpts.move_aside(bad.step)
          log.warning("%s. Resuming from step %d; step %d is kept in %s", bad, step, bad.step,
                      dest)
      if damaged and jax.process_count() > 1:
        multihost_utils.sync_global_devices("hawk_jax:damaged_moved")
        ckpts.reload()
      return step, restored, loader
    damaged.append(error or checkpoint.DamagedCheckpoint(
        step, ckpts.directory, "it failed to restore on another process (see its log)"))
    log.warning("%s; trying the step before it", damaged[-1])
  if damaged:
    raise WorkdirError(
        f"no checkpoint in {ckpts.directory} restores: "
        + "; ".join(f"step {d.step}: {d.reason}" for d in damaged)
        + ". Nothing was moved or deleted. To train this stage from the start, move "
        f"{ckpts.directory} aside")
  return None, None, None


def _store_frozen(wd: epath.Path, frozen, mode: str, frozen_from: str | None) -> None:
  """Save the frozen towers into workdir/frozen/ (a collective: every process writes its
  shards), or (mode "reference", towers loaded unchanged from `frozen_from`) write
  workdir/frozen_ref.json pointing at them (process 0). Never both."""
  if mode == "reference":
    if frozen_from is not None:
      holder = None
      if distributed.is_main_process():
        holder = checkpoint.write_frozen_ref(wd, frozen_from)
      log.info("frozen towers: %s refers to those of %s (train.frozen=reference; keep that "
               "workdir)", wd / checkpoint.FROZEN_REF, holder)
      if jax.process_count() > 1:  # nobody reads the reference before it is written
        multihost_utils.sync_global_devices("hawk_jax:frozen_ref")
      return
    log.warning("train.frozen=reference, but the frozen towers were not all loaded from a "
                "previous workdir (init.from_stage empty, or it has no frozen towers): saving "
                "a copy in %s", wd / "frozen")
  checkpoint.save_params(wd / "frozen", frozen)


def _finished(wd: epath.Path, num_steps: int) -> StageResult | None:
  """The recorded result of a run that already reached `num_steps` (a rerun is a no-op)."""
  path = wd / "result.json"
  if not path.exists():
    return None
  r = StageResult(**json.loads(path.read_text()))
  latest = checkpoint.TrainCheckpoints(wd / "checkpoints", async_save=False).latest_step()
  return r if latest is not None and latest >= num_steps and r.steps >= num_steps else None


def _ends(by_step: dict, n: int = 5) -> tuple[float | None, float | None]:
  if not by_step:
    return None, None
  losses_ = [by_step[k] for k in sorted(by_step)]
  return float(np.mean(losses_[:n])), float(np.mean(losses_[-n:]))


def loss_ends(metrics_path, n: int = 5) -> tuple[float | None, float | None]:
  """Mean training loss of the first and last `n` logged steps (single batches are noisy),
  from the metrics log, which spans interrupted and resumed invocations (a step logged twice
  counts once, its latest value)."""
  path = epath.Path(metrics_path)
  by_step = {}
  if path.exists():
    for line in path.read_text().splitlines():
      rec = json.loads(line)
      if "loss" in rec:
        by_step[rec["step"]] = rec["loss"]
  return _ends(by_step, n)


def evaluate_loss(model, cfg, trainable, frozen, mesh, rules, batch_shardings):
  """Mean loss over a few batches of the held-out split (None where there is none). Every
  process reads its shard of each batch and joins the step."""
  try:
    it = train_data.train_iterator(cfg, split="test", train=False)
  except (FileNotFoundError, KeyError) as e:  # no test split
    log.info("no held-out evaluation: %s", e)
    return None
  except ValueError as e:  # a test split none of whose records makes a prompt
    log.warning("no held-out evaluation: %s", e)
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
