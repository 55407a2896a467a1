"""Reading and writing the parameters of a workdir: the one place that knows which step, which
parts (frozen towers, trainable parameters), which parameter groups, which dtype and which
shardings a reader wants.

A workdir (layout in hawk_jax/checkpoint.py) holds `config.json`, the frozen towers in
`frozen/` (or a `frozen_ref.json` naming the workdir that holds them) and the trainable
parameters of each finished step in `checkpoints/<step>/trainable`. Its readers:

  loaded = load_params("runs/stage2")                      # everything, latest step (inference)
  loaded = load_params(wd, parts=("frozen",), groups=[("appearance", "vit"), ...])  # towers
  loaded = load_params(prev, parts=("frozen",), config=new, shardings=s)   # the next stage
  loaded.cfg, loaded.config, loaded.params, loaded.step

What is read is checked against the model before anything is restored, so a workdir of another
size or an older layout fails with the offending parameter paths named, not deep inside Orbax.

Decoding at batch 1 is memory-bound matrix-vector work, and XLA's bf16 matrix-vector product
on a CPU is several times slower than float32; `dtype="auto"` therefore takes float32 on a CPU
backend when the float32 model fits in memory (it keeps the run's dtypes otherwise, and says
so), and the run's dtypes on accelerators.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from etils import epath

from hawk_jax import checkpoint
from hawk_jax.models.hawk import merge_params, split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import (GroupPath, abstract_params, count, flatten_paths,
                                    has_subtree, shape_problems, subtree)

log = logging.getLogger("hawk_jax.workdir")

PARTS = ("frozen", "trainable")
DTYPE_CHOICES = ("auto", "config", "float32", "bfloat16")
# "auto" takes float32 on a CPU only while the float32 weights leave this much of the
# available memory for activations, the KV cache and the loading copy.
_F32_MEMORY_FRACTION = 0.6


class WorkdirError(ValueError):
  """A workdir that cannot be read (missing parts, unknown step, mismatched shapes)."""


@dataclasses.dataclass
class LoadedParams:
  cfg: ml_collections.ConfigDict   # the workdir's stage config (config.json)
  config: HawkConfig               # the model the parameters were read for, dtypes as loaded
  params: dict                     # nested dict of arrays (the parts and groups asked for)
  step: int | None                 # the trainable checkpoint step read (None: frozen only)


def read_config(workdir) -> ml_collections.ConfigDict:
  """The stage config a workdir was written with (its config.json)."""
  path = epath.Path(workdir)
  if not path.is_dir():
    raise WorkdirError(f"{workdir}: no such workdir")
  try:
    cfg = checkpoint.read_config(workdir)
  except FileNotFoundError as e:
    raise WorkdirError(str(e)) from None
  if "model" not in cfg:
    raise WorkdirError(f"{workdir}/config.json has no 'model' section; not a hawk-jax stage "
                       "config")
  return cfg


def checkpoint_steps(workdir) -> list[int]:
  """Finished checkpoint steps of a workdir, ascending (interrupted saves are skipped)."""
  ckpt_dir = epath.Path(workdir) / "checkpoints"
  if not ckpt_dir.is_dir():
    return []
  # A finished Orbax step is a folder named by the bare step number; an interrupted async
  # save leaves `<step>.orbax-checkpoint-tmp-*`.
  return sorted(int(p.name) for p in ckpt_dir.iterdir()
                if p.name.isdigit() and (p / "trainable").is_dir())


def frozen_params_dir(workdir) -> str:
  """The folder holding the workdir's frozen towers (its frozen/, or where frozen_ref.json
  points); raises if a reference cannot be followed or the towers are missing."""
  try:
    directory = checkpoint.frozen_dir(workdir)
  except (FileNotFoundError, ValueError) as e:
    raise WorkdirError(str(e)) from None
  if not checkpoint.has_params(directory):
    raise WorkdirError(f"{directory}: missing — the frozen towers are written when training "
                       "starts; was the run started?")
  return directory


def has_frozen_params(workdir) -> bool:
  """Whether the workdir has frozen towers (a reference that cannot be followed raises)."""
  try:
    return checkpoint.has_params(checkpoint.frozen_dir(workdir))
  except (FileNotFoundError, ValueError) as e:
    raise WorkdirError(str(e)) from None


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


def _select(tree: dict, groups: Sequence[GroupPath] | None) -> dict:
  """The subtrees of `tree` under any of `groups` (all of it when groups is None)."""
  if groups is None:
    return tree
  out: dict = {}
  for path in groups:
    if has_subtree(tree, path):
      node = out
      for p in path[:-1]:
        node = node.setdefault(p, {})
      node[path[-1]] = subtree(tree, path)
  return out


def _flat_key(path) -> str:
  """A tree_util key path as `flatten_paths` names the leaf ("llm/layers/...")."""
  return "/".join(str(k.key) for k in path)


def _with_shardings(abstract: dict, shardings) -> dict:
  if shardings is None:
    return checkpoint.abstract_like(abstract)
  flat = flatten_paths(shardings)
  return jax.tree_util.tree_map_with_path(
      lambda path, s: jax.ShapeDtypeStruct(
          s.shape, s.dtype, sharding=flat[_flat_key(path)]), abstract)


def _read_part(directory: str, expected: dict, whole: bool, what: str, shardings,
               step: int | None = None) -> dict:
  try:
    saved = checkpoint.saved_shapes(directory)
  except FileNotFoundError as e:
    raise WorkdirError(f"{what}: {e}") from None
  except Exception as e:  # noqa: BLE001 -- unreadable metadata: a damaged folder
    raise _damaged(directory, step, checkpoint.short_error(e)) from e
  problems = shape_problems(saved, expected, extra_ok=not whole)
  if problems:
    raise WorkdirError(f"{what} ({directory}): {len(problems)} problem(s): "
                       + "; ".join(problems[:10])
                       + ". The checkpoint does not match the model in config.json")
  try:
    params = checkpoint.restore_params(directory, _with_shardings(expected, shardings))
  except checkpoint.UnreadableParams as e:
    raise _damaged(directory, step, e.reason) from None
  if step is not None:
    _check_trainable_sums(directory, step, params, saved)
  return params


def _damaged(directory: str, step: int | None, reason: str) -> WorkdirError:
  where = epath.Path(directory)
  if step is None:  # the frozen towers
    return WorkdirError(f"{where} is damaged: {reason}")
  workdir = where.parent.parent.parent
  others = [s for s in checkpoint_steps(workdir) if s != step]
  hint = (f"; read another step with --step (steps there: {others})" if others
          else "; it is the only step")
  return WorkdirError(f"checkpoint step {step} of {workdir} is damaged: {reason}{hint}")


def _check_trainable_sums(directory: str, step: int, params: dict, saved: dict) -> None:
  """The leaves read at their saved dtype against the checksums of the step's meta (leaves cast
  to another dtype cannot be compared bit for bit, and are not)."""
  step_dir = epath.Path(directory).parent
  try:
    meta = checkpoint.read_meta(step_dir)
  except checkpoint.DamagedCheckpoint as e:
    raise _damaged(directory, step, e.reason) from None
  flat_saved = flatten_paths(saved)
  same_dtype = jax.tree_util.tree_map_with_path(
      lambda path, x: x if flat_saved[_flat_key(path)].dtype == x.dtype else None, params)
  try:
    checkpoint.check_sums(step, step_dir.parent, "trainable", same_dtype, meta)
  except checkpoint.DamagedCheckpoint as e:
    raise _damaged(directory, step, e.reason) from None


def select_step(workdir, step: int | None = None) -> int:
  """`step` if the workdir has it finished, else the latest finished one (step None)."""
  steps = checkpoint_steps(workdir)
  if not steps:
    raise WorkdirError(f"{workdir}/checkpoints: no finished checkpoint step (train longer, or "
                       "point at the workdir of a finished stage)")
  if step is None:
    return steps[-1]
  if step not in steps:
    raise WorkdirError(f"{workdir}/checkpoints: no finished step {step}; steps there: {steps}")
  return step


def load_params(workdir, *, step: int | None = None, parts: Sequence[str] = PARTS,
                groups: Sequence[GroupPath] | None = None, dtype: str = "config",
                config: HawkConfig | None = None, shardings=None) -> LoadedParams:
  """Reads parameters of a workdir.

  Args:
    workdir: a stage's workdir (config.json, frozen/ or frozen_ref.json, checkpoints/), or one
      written by `python -m hawk_jax.convert from-torch`.
    step: the trainable checkpoint step; None takes the latest finished one.
    parts: "frozen" (the towers) and/or "trainable" (one step's trainable parameters).
    groups: only these parameter groups, e.g. [("appearance", "vit"), ("llm",)]; None: all of
      the parts. A group lives in whichever part the model puts it.
    dtype: "config" (as the config says), "auto" (float32 on a CPU when it fits, else the
      config's), "float32" or "bfloat16" (HawkConfig.with_dtype: the video Q-Formers keep
      float32 parameters). The returned `config` carries the dtypes used.
    config: the model to read into (default: the workdir's own); a new stage passes its own.
    shardings: a tree of NamedShardings over the model's parameters (models.params.
      param_shardings): every leaf is read straight onto the mesh. None: the first local
      device.

  Raises:
    WorkdirError naming the missing file, the unknown step (and the steps there are) or the
    parameters whose shapes differ from the model's.
  """
  unknown = set(parts) - set(PARTS)
  if unknown or not parts:
    raise ValueError(f"parts {list(parts)}: expected some of {PARTS}")
  cfg = read_config(workdir)
  config = config or HawkConfig.from_stage_config(cfg)
  abstract = abstract_params(config)
  # Decided before reading: the memory check must not count the weights being loaded.
  target = resolve_dtype(dtype, count(_select(abstract, groups)))
  if target is not None:
    config = config.with_dtype(target)
    abstract = abstract_params(config)
  trainable_abs, frozen_abs = (_select(t, groups) for t in split_params(abstract, config))
  params, step_read = {}, None
  if "frozen" in parts and frozen_abs:
    params = _read_part(frozen_params_dir(workdir), frozen_abs, groups is None,
                        "frozen parameters", shardings)
  if "trainable" in parts and trainable_abs:
    step_read = select_step(workdir, step)
    directory = str(epath.Path(workdir) / "checkpoints" / str(step_read) / "trainable")
    params = merge_params(params, _read_part(directory, trainable_abs, groups is None,
                                             f"trainable parameters of step {step_read}",
                                             shardings, step=step_read))
  log.info("read %s from %s%s (%s parameters, dtype %s)", "+".join(parts), workdir,
           f" step {step_read}" if step_read is not None else "", f"{count(params):,}",
           target or "as configured")
  return LoadedParams(cfg, config, params, step_read)


def write_workdir(workdir, cfg: ml_collections.ConfigDict, params: dict, *, step: int,
                  opt_state: Any = None, meta: dict | None = None) -> None:
  """A workdir as training leaves one: config.json, frozen/ and checkpoints/<step> holding the
  trainable parameters (and `opt_state`, default an empty Adam count). For converted weights
  and random models that training, inference or conversion then read."""
  config = HawkConfig.from_stage_config(cfg)
  trainable, frozen = split_params(params, config)
  checkpoint.write_config(workdir, cfg)
  checkpoint.save_params(epath.Path(workdir) / "frozen", frozen)
  ckpts = checkpoint.TrainCheckpoints(epath.Path(workdir) / "checkpoints", async_save=False)
  if opt_state is None:
    opt_state = {"count": np.zeros((), np.int32)}
  ckpts.save(step, trainable, opt_state, meta=meta)
  ckpts.close()
