"""What a stage config must satisfy before a run writes anything: every mistake found here is
one line naming the key, what it holds and what would work -- not a traceback from deep inside
a compile, and never a run that trains something other than what was asked.

  check_config(cfg)                 choices, counts, the mesh against the devices
  check_workdir_matches(wd, cfg)    a workdir written for another stage/size/variant/model

(The batch against the mesh is checked where the mesh is built, hawk_jax/train/state.py; the
records against the config, data_pipelines/loaders.py via hawk_jax/train/data.py.)
"""
from __future__ import annotations

import json
import math

import jax
from etils import epath

from data_pipelines.motion import MOTION_MODES
from hawk_jax.stage_config import ConfigError
from hawk_jax.text import motion_text
from hawk_jax.text.motion_text import BACKENDS as MOTION_TEXT_BACKENDS
from hawk_jax.workdir import WorkdirError

# Fields with a fixed set of values (key -> choices).
CHOICES = {
    "data.motion": MOTION_MODES,
    "data.motion_text_backend": MOTION_TEXT_BACKENDS,
    "loss.ml_source": ("motion_text", "vl"),
    "train.frozen": ("copy", "reference"),
    "generate.strategy": ("greedy", "sample", "beam"),
}
# Fields that count something: at least 1 (eval_batches may be 0: no held-out loss).
POSITIVE = ("train.batch_size", "train.num_steps", "train.log_every", "train.ckpt_every",
            "train.keep_checkpoints", "train.max_consecutive_skips", "optim.grad_accum_steps",
            "data.num_frames", "data.image_size", "data.max_len")
NON_NEGATIVE = ("train.eval_batches", "data.worker_count")


def _get(cfg, key: str):
  node = cfg
  for part in key.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def check_config(cfg, device_count: int | None = None) -> None:
  """Raises ConfigError (one line: the key, its value, the valid choice) for the first field
  of `cfg` that cannot work."""
  for key, choices in CHOICES.items():
    value = _get(cfg, key)
    if value is not None and value not in choices:
      raise ConfigError(f"--config.{key}={value!r}: expected one of {', '.join(choices)}")
  for key in POSITIVE + NON_NEGATIVE:
    value = _get(cfg, key)
    if value is None:
      continue
    least = 1 if key in POSITIVE else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ConfigError(f"--config.{key}={value!r}: expected an integer >= {least}")
  check_mesh(cfg.mesh_shape, jax.device_count() if device_count is None else device_count)
  if _get(cfg, "data.motion_text_backend") is not None:
    try:  # spaCy asked for but not installed: now, not in a loader worker after the compile
      motion_text.check_backend(cfg.data.motion_text_backend)
    except ValueError as e:
      raise ConfigError(str(e)) from None


def check_mesh(shape, devices: int) -> None:
  """`mesh_shape` (data, fsdp, tensor) against the number of devices: -1 takes what is left,
  which must be a whole number; without -1 the mesh may use fewer devices, not more."""
  example = "--config.mesh_shape=(1,-1,1)"
  try:
    dims = [int(d) for d in shape]
  except (TypeError, ValueError):
    raise ConfigError(f"--config.mesh_shape={shape!r}: expected three integers (data, fsdp, "
                      f"tensor), e.g. {example}") from None
  if len(dims) != 3:
    raise ConfigError(f"--config.mesh_shape={tuple(dims)}: expected three axes (data, fsdp, "
                      f"tensor), e.g. {example}")
  if dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
    raise ConfigError(f"--config.mesh_shape={tuple(dims)}: positive sizes and at most one -1 "
                      f"(the rest of the devices), e.g. {example}")
  known = math.prod(d for d in dims if d != -1)
  if -1 in dims and devices % known:
    raise ConfigError(f"--config.mesh_shape={tuple(dims)}: the fixed axes ({known} devices) do "
                      f"not divide the {devices} devices; use sizes whose product divides "
                      f"{devices}, e.g. {example}")
  if -1 not in dims and known > devices:
    raise ConfigError(f"--config.mesh_shape={tuple(dims)} needs {known} devices, there are "
                      f"{devices}; e.g. {example}")


def _identity(cfg: dict) -> str:
  return (f"stage {cfg.get('stage')} size={cfg.get('size')} variant={cfg.get('variant')}")


def check_workdir_matches(workdir, cfg) -> None:
  """Refuses to train into a workdir whose config.json describes another model: resuming its
  checkpoints into a different model fails deep in a restore, and starting over would mix two
  runs in one folder. Other fields (learning rate, steps, data) may change between runs."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    return
  try:
    old = json.loads(path.read_text())
  except ValueError as e:
    raise WorkdirError(f"{path}: not JSON ({e}); is {workdir} a hawk-jax workdir?") from None
  new = json.loads(cfg.to_json_best_effort())
  what = [k for k in ("stage", "size", "variant") if old.get(k) != new.get(k)]
  model_keys = sorted(k for k in set(old.get("model", {})) | set(new.get("model", {}))
                      if old.get("model", {}).get(k) != new.get("model", {}).get(k))
  if what or model_keys:
    differs = ", ".join(what + [f"model.{k}" for k in model_keys[:5]])
    raise WorkdirError(
        f"{workdir} was written for {_identity(old)} (its config.json), this run asks for "
        f"{_identity(new)}; they differ in {differs}. Use another --workdir, or the config "
        f"the workdir was written with")
