"""Loading a trained workdir for inference: config, frozen towers and one step's trainable part.

  cfg, model, params = load_workdir("runs/stage2")          # latest finished step
  cfg, model, params = load_workdir("runs/stage2", step=40)

A workdir (hawk_jax.checkpoint) holds `config.json`, `frozen/` (the frozen towers, written once)
and `checkpoints/<step>/trainable`. Both parts are checked against the model the config
describes before anything is read, so a workdir from another size or an older layout fails with
the offending parameter paths named, not deep inside Orbax.

Decoding at batch 1 is memory-bound matrix-vector work. XLA's bf16 matrix-vector product on a
CPU is several times slower than float32 (DESIGN.md §11), so on a CPU backend the default
`dtype="auto"` casts every weight to float32 and runs the model in float32 -- when the float32
model fits in memory (a 7B model does not fit a 24 GB machine in float32: it then keeps its
bf16 weights, and says so). On an accelerator "auto" keeps the dtypes the run was trained with.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from hawk_jax import checkpoint
from hawk_jax.stage_config import hawk_model_config
from hawk_jax.convert.table import ConversionError, check_shapes
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.hawk import Hawk, merge_params, split_params
from hawk_jax.train.init import abstract_boxed

log = logging.getLogger("hawk_jax.infer")

DTYPE_CHOICES = ("auto", "config", "float32", "bfloat16")


class WorkdirError(ValueError):
  """A workdir that cannot be loaded (missing parts, unknown step, mismatched shapes)."""


def with_dtype(config: HawkConfig, dtype: str) -> HawkConfig:
  """`config` with every tower's compute and parameter dtype set to `dtype` (the trainable
  video Q-Formers keep float32 parameters, as in training)."""
  def tower(c, keep_param=False):
    return dataclasses.replace(c, dtype=dtype,
                               param_dtype=c.param_dtype if keep_param else dtype)
  return dataclasses.replace(
      config, vision=tower(config.vision), qformer=tower(config.qformer),
      video_qformer=tower(config.video_qformer, keep_param=dtype != "float32"),
      llm=tower(config.llm))


# "auto" takes float32 on a CPU only while the float32 weights leave this much of the
# available memory for activations, the KV cache and the loading copy.
_F32_MEMORY_FRACTION = 0.6


def available_memory_bytes() -> int | None:
  """MemAvailable of /proc/meminfo (None where there is no such file)."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def resolve_dtype(dtype: str, num_params: int | None = None) -> str | None:
  """The dtype to cast to, or None to keep the config's dtypes.

  "auto": "float32" on a CPU backend when `num_params` float32 weights fit in memory, else
  None; "config": None; "float32"/"bfloat16": that dtype."""
  if dtype not in DTYPE_CHOICES:
    raise ValueError(f"dtype {dtype!r}: expected one of {DTYPE_CHOICES}")
  if dtype != "auto":
    return None if dtype == "config" else dtype
  if jax.default_backend() != "cpu":
    return None
  available = available_memory_bytes()
  if num_params is not None and available is not None:
    need = 4 * num_params
    if need > _F32_MEMORY_FRACTION * available:
      log.warning("float32 weights (%.1f GB) would not fit the %.1f GB available: keeping the "
                  "run's dtypes (slower decoding on CPU)", need / 1e9, available / 1e9)
      return None
  return "float32"


def _saved_shapes(directory: str) -> dict:
  """The parameter tree stored in an Orbax StandardSave folder, as ShapeDtypeStructs."""
  import orbax.checkpoint as ocp
  # Orbax warns that a bare item folder has no step metadata; that is expected here.
  quiet = logging.getLogger("absl")
  level = quiet.level
  quiet.setLevel(logging.ERROR)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      meta = ckptr.metadata(directory).item_metadata
  finally:
    quiet.setLevel(level)
  tree = getattr(meta, "tree", meta)
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree)


def _check_stored(directory: str, expected: dict, what: str) -> None:
  try:
    check_shapes(_saved_shapes(directory), expected, what=f"{what} ({directory})")
  except ConversionError as e:
    raise WorkdirError(f"{e}. The checkpoint does not match the model in config.json") from None


def checkpoint_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps of a workdir, ascending (interrupted saves are skipped)."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return []
  steps = []
  for name in os.listdir(ckpt_dir):
    # A finished Orbax step is a folder named by the bare step number; an interrupted async
    # save leaves `<step>.orbax-checkpoint-tmp-*`.
    if name.isdigit() and os.path.isdir(os.path.join(ckpt_dir, name, "trainable")):
      steps.append(int(name))
  return sorted(steps)


def _single_device_target(abstract: dict) -> dict:
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)


def load_workdir(workdir: str, step: int | None = None, *,
                 dtype: str = "auto") -> tuple[ml_collections.ConfigDict, Hawk, dict[str, Any]]:
  """(cfg, model, params) of a trained workdir; params on the default device.

  Args:
    workdir: a stage's workdir (config.json, frozen/ or frozen_ref.json, checkpoints/).
    step: the checkpoint step to load; None takes the latest finished one.
    dtype: "auto" (float32 on CPU, the config's dtypes elsewhere), "config", "float32" or
      "bfloat16". The returned model's config carries the dtypes actually used.

  Raises:
    WorkdirError naming the missing file, the unknown step (and the steps there are) or the
    parameters whose shapes differ from the config's model.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  if not os.path.isdir(workdir):
    raise WorkdirError(f"{workdir}: no such workdir")
  try:
    cfg = checkpoint.read_config(workdir)
  except FileNotFoundError as e:
    raise WorkdirError(str(e)) from None
  if "model" not in cfg:
    raise WorkdirError(f"{workdir}/config.json has no 'model' section; not a hawk-jax stage "
                       "config")
  config = hawk_model_config(cfg)
  try:
    frozen_dir = checkpoint.frozen_dir(workdir)  # frozen/, or where frozen_ref.json points
  except (FileNotFoundError, ValueError) as e:
    raise WorkdirError(str(e)) from None
  if not checkpoint.has_params(frozen_dir):
    raise WorkdirError(f"{frozen_dir}: missing — the frozen towers are written when training "
                       "starts; was the run started?")
  steps = checkpoint_steps(workdir)
  if not steps:
    raise WorkdirError(f"{workdir}/checkpoints: no finished checkpoint step (train longer, or "
                       "point at the workdir of a finished stage)")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise WorkdirError(f"{workdir}/checkpoints: no finished step {step}; steps there: {steps}")

  abstract = nn.unbox(abstract_boxed(Hawk(config)))
  trainable_abs, frozen_abs = split_params(abstract, config)
  _check_stored(frozen_dir, frozen_abs, "frozen parameters")
  trainable_dir = os.path.join(workdir, "checkpoints", str(step), "trainable")
  _check_stored(trainable_dir, trainable_abs, f"trainable parameters of step {step}")

  # Decided before reading: the memory check must not count the weights being loaded.
  target = resolve_dtype(dtype, sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)))
  frozen = checkpoint.load_params(frozen_dir, _single_device_target(frozen_abs))
  trainable, _ = checkpoint.restore_trainable(workdir, _single_device_target(trainable_abs),
                                              step=step)
  params = merge_params(trainable, frozen)
  if target is not None and with_dtype(config, target) != config:
    config = with_dtype(config, target)
    # Leaves follow the dtypes the new config's model declares (float32 video Q-Formers
    # stay float32 under "bfloat16").
    want = nn.unbox(abstract_boxed(Hawk(config)))
    params = jax.tree.map(lambda x, w: x.astype(w.dtype) if x.dtype != w.dtype else x,
                          params, want)
  log.info("loaded %s step %d (%s parameters, dtype %s)", workdir, step,
           f"{sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)):,}",
           target or "as configured")
  return cfg, Hawk(config), params

