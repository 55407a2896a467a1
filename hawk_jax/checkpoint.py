"""Checkpoint reading and writing, the one low module training, conversion and inference use.

Layout of a workdir:
  config.json              the stage config the run used (ConfigDict as JSON)
  frozen/                  the frozen parameters, written once (StandardSave), or instead
  frozen_ref.json          {"workdir": "<absolute path>"}: this workdir's frozen parameters are
                             those of that workdir (train.frozen="reference": a stage that
                             loaded its towers unchanged from the previous stage does not
                             copy ~18 GB at hawk7b). Readers go through `frozen_dir()`, which
                             follows references (also chains of them); the referenced workdir
                             must be kept.
  checkpoints/<step>/      CheckpointManager steps with items
                             trainable  (StandardSave) — trainable parameters
                             opt_state  (StandardSave) — optimizer state (trainable part only)
                             data       (grain CheckpointSave) — the input iterator, if any
                             meta       (JsonSave) — step, stage, variant, and the checksum of
                                          every trainable and optimizer-state leaf
                                          (hawk_jax/checksums.py)
damaged_checkpoints/<step>/  a step that failed to restore (unreadable, or its arrays do not
                             match their checksums), moved out of checkpoints/ by the training
                             loop -- never deleted -- so that it neither shadows the intact
                             steps nor counts towards keep-N.
Saves are asynchronous; an interrupted save leaves a `*.orbax-checkpoint-tmp*` folder that
`latest_step()` skips. Restoring takes abstract targets (ShapeDtypeStruct with shardings), so a
checkpoint restores onto any mesh. Reading the parameters of a workdir (which step, which parts,
which dtype) is hawk_jax/workdir.py, built on `restore_params` here.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from hawk_jax import checksums


def as_path(path) -> epath.Path:
  """A workdir path as etils.epath: gs://bucket/... as it is, a local path made absolute."""
  p = epath.Path(path)
  return p if str(p).startswith("gs://") else epath.Path(os.path.abspath(str(p)))



def write_config(workdir, cfg: ml_collections.ConfigDict) -> None:
  path = as_path(workdir) / "config.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(cfg.to_json_best_effort(indent=2))


def read_config(workdir) -> ml_collections.ConfigDict:
  path = as_path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: no config.json — is {workdir} a hawk-jax workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def save_params(directory, params) -> None:
  """One-shot save of a parameter tree (frozen towers, or a full inference model)."""
  path = as_path(directory)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, params, force=True)


def has_params(directory) -> bool:
  return as_path(directory).exists()


def saved_shapes(directory) -> Any:
  """The tree stored in a parameter folder (`save_params`, or a checkpoint step's
  `trainable`), as ShapeDtypeStructs, from its metadata alone."""
  path = as_path(directory)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no saved parameters")
  # Orbax warns that a bare item folder has no step metadata; that is expected here.
  quiet = logging.getLogger("absl")
  level = quiet.level
  quiet.setLevel(logging.ERROR)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      meta = ckptr.metadata(path).item_metadata
  finally:
    quiet.setLevel(level)
  tree = getattr(meta, "tree", meta)
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree)


def restore_params(directory, target) -> Any:
  """Reads the leaves `target` names from a parameter folder (`save_params`, or a checkpoint
  step's `trainable`): the one restore every reader of parameters goes through.

  `target` is a tree of ShapeDtypeStructs, the whole stored tree or any part of it; each leaf
  is read straight onto its `sharding` (none: the first local device) and cast to its dtype,
  so a 7B tower lands sharded on a mesh without passing through one host's memory."""
  path = as_path(directory)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no saved parameters")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda s: s if getattr(s, "sharding", None) is not None else
      jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), target)
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)

  def restore():
    with ocp.PyTreeCheckpointer() as ckptr:
      return ckptr.restore(path, args=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))

  params, error = quiet_restore(restore)
  if error is not None:
    raise UnreadableParams(path, error)
  return params


class UnreadableParams(OSError):
  """A parameter folder whose files cannot be read (missing, truncated, undecodable)."""

  def __init__(self, path, reason: str):
    super().__init__(f"{path}: {reason}")
    self.reason = reason


FROZEN_REF = "frozen_ref.json"


def frozen_dir(workdir) -> str:
  """The folder holding `workdir`'s frozen parameters: its own `frozen/` if that exists, else
  that of the workdir its `frozen_ref.json` names (followed through chains).

  A workdir with neither gives its own `frozen/` path, so callers' `has_params` checks and
  "missing" messages stay as they were. A reference that cannot be followed (the referenced
  workdir was deleted or moved, a cycle, a malformed file) raises: falling back to random
  towers, or to none, would be silently wrong.

  Raises:
    FileNotFoundError: a reference to a workdir without frozen parameters; names both paths.
    ValueError: a cycle of references, or a `frozen_ref.json` without a "workdir" string.
  """
  wd = as_path(workdir)
  chain = [wd]
  while True:
    own = wd / "frozen"
    if own.exists():
      return str(own)
    ref = wd / FROZEN_REF
    if not ref.exists():
      if len(chain) == 1:
        return str(own)
      raise FileNotFoundError(
          f"{chain[-2] / FROZEN_REF} refers to the frozen parameters of {wd}, but {wd} has "
          f"neither frozen/ nor {FROZEN_REF} (deleted or moved?). Workdirs written with "
          f'train.frozen="reference" need the workdir they refer to; restore it, or point '
          f"{chain[-2] / FROZEN_REF} at a workdir holding the same frozen parameters")
    try:
      target = json.loads(ref.read_text())["workdir"]
      if not isinstance(target, str) or not target:
        raise TypeError
    except (ValueError, KeyError, TypeError):
      raise ValueError(f'{ref}: expected {{"workdir": "<path>"}}') from None
    # Written absolute; a hand-written relative path is taken from the referring workdir.
    if not (target.startswith("gs://") or os.path.isabs(target)):
      target = str(wd / target)
    wd = as_path(target)
    if wd in chain:
      raise ValueError(f"{FROZEN_REF} references form a cycle: "
                       + " -> ".join(str(p) for p in chain + [wd]))
    chain.append(wd)


def write_frozen_ref(workdir, source_workdir) -> str:
  """Make `workdir`'s frozen parameters those of `source_workdir` by writing
  `workdir/frozen_ref.json` instead of a copy. Returns the referenced workdir.

  The reference names the workdir that actually holds `frozen/` (a chain is flattened), so
  an intermediate stage that only referred to it may be deleted later.
  """
  wd = as_path(workdir)
  if (wd / "frozen").exists():
    raise FileExistsError(f"{wd / 'frozen'} exists; a workdir holds frozen/ or {FROZEN_REF}, "
                          "never both")
  src = frozen_dir(source_workdir)
  if not has_params(src):
    raise FileNotFoundError(f"{src}: no frozen parameters for {wd / FROZEN_REF} to refer to")
  holder = as_path(src).parent
  if holder == wd:
    raise ValueError(f"{wd / FROZEN_REF} cannot refer to {wd} itself")
  wd.mkdir(parents=True, exist_ok=True)
  # Written whole then renamed, so a reader never sees half a file.
  tmp = wd / (FROZEN_REF + ".tmp")
  tmp.write_text(json.dumps({"workdir": str(holder)}, indent=2) + "\n")
  tmp.rename(wd / FROZEN_REF)
  return str(holder)


class DamagedCheckpoint(Exception):
  """A checkpoint step that does not restore: a file is missing, truncated or unreadable, or
  the arrays read do not match the checksums recorded when it was saved."""

  def __init__(self, step: int, directory, reason: str):
    super().__init__(f"checkpoint step {step} in {directory} is damaged: {reason}")
    self.step, self.directory, self.reason = step, str(directory), reason


def short_error(e: BaseException) -> str:
  """One line of an error: its innermost cause (Orbax wraps TensorStore's "OUT_OF_RANGE ...
  byte range" in "error while reading array index"), without the whole TensorStore spec
  that follows the first line."""
  seen = {id(e)}
  while e.__cause__ is not None and id(e.__cause__) not in seen:
    e = e.__cause__
    seen.add(id(e))
  text = str(e).split("See full TensorStore details")[0].strip().splitlines()
  first = text[0] if text else ""
  return f"{type(e).__name__}: {first[:300]}"


def quiet_restore(restore: Callable[[], Any], settle_s: float = 1.0) -> tuple[Any, str | None]:
  """(restore(), None), or (None, the error in one line) if it raised. What Orbax writes to
  stderr (fd 2) meanwhile is shown if the restore succeeds and dropped if it failed.

  Orbax closes its event loop as soon as one TensorStore read of a restore fails; the reads
  still in flight then complete into the closed loop and each prints a "RuntimeError: Event
  loop is closed" traceback from a TensorStore thread, and the abandoned coroutines print the
  whole TensorStore spec when collected -- a screen of noise around the one-line error the user
  needs. So on failure the exception is dropped first (it holds the coroutines), the reads get
  `settle_s` to finish, and the leftovers are collected, all while stderr is held."""
  sys.stderr.flush()
  held = tempfile.TemporaryFile()
  saved = os.dup(2)
  os.dup2(held.fileno(), 2)
  reason = None
  try:
    try:
      return restore(), None
    except Exception as e:  # noqa: BLE001 -- Orbax/TensorStore raise many types; all mean
      reason = short_error(e)  # the files cannot be read
    time.sleep(settle_s)
    gc.collect()
    return None, reason
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    if reason is None:
      held.seek(0)
      text = held.read()
      if text:
        os.write(2, text)
    held.close()


def check_sums(step: int, directory, item: str, tree, meta: dict | None) -> None:
  """Raises DamagedCheckpoint when a leaf of `tree` (read from `item` of step `step`) differs
  from the checksum `meta` recorded (steps saved before checksums were recorded pass)."""
  recorded = ((meta or {}).get("checksums") or {}).get(item)
  if not recorded:
    return
  bad = checksums.mismatches(tree, recorded)
  if bad:
    raise DamagedCheckpoint(step, directory,
                            f"{len(bad)} array(s) of {item} differ from the checksums recorded "
                            f"at save ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}): "
                            f"a garbled file")


def read_meta(step_dir) -> dict:
  """The meta item of a checkpoint step (its JSON), or raises DamagedCheckpoint."""
  path = as_path(step_dir) / "meta" / "metadata"
  step = as_path(step_dir).name
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise DamagedCheckpoint(int(step), as_path(step_dir).parent,
                            f"{path} is missing") from None
  except ValueError as e:
    raise DamagedCheckpoint(int(step), as_path(step_dir).parent,
                            f"{path} is not JSON ({e})") from None


class TrainCheckpoints:
  """CheckpointManager over (trainable, opt_state, data iterator, meta)."""

  def __init__(self, directory, keep: int = 2, async_save: bool = True):
    self.directory = as_path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def reload(self) -> None:
    """Re-read the step list (after a step was moved aside)."""
    self.manager.reload()

  def save(self, step: int, trainable, opt_state, data_iter=None, meta=None) -> bool:
    sums = {"trainable": checksums.tree_checksums(trainable),
            "opt_state": checksums.tree_checksums(opt_state)}
    items = dict(trainable=ocp.args.StandardSave(trainable),
                 opt_state=ocp.args.StandardSave(opt_state),
                 meta=ocp.args.JsonSave(dict(meta or {}, step=int(step), checksums=sums)))
    if data_iter is not None:
      import grain
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**items))

  def has_data_state(self, step: int) -> bool:
    """Whether `step` holds this process's Grain iterator state for the current process count
    (Grain writes one `process_<i>-of-<n>.json` per process)."""
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    return (self.directory / str(step) / "data" / name).exists()

  def restore(self, step: int, trainable_target, opt_state_target=None, data_iter=None):
    """Returns a dict with the restored items (`data_iter` is restored in place), checked
    against the checksums recorded at save.

    Raises:
      DamagedCheckpoint: a file of the step is missing, truncated or unreadable, or an array
        differs from its checksum; the message says which and why.
    """
    items = dict(trainable=ocp.args.StandardRestore(trainable_target),
                 meta=ocp.args.JsonRestore())
    if opt_state_target is not None:
      items["opt_state"] = ocp.args.StandardRestore(opt_state_target)
    if data_iter is not None:
      import grain
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored, error = quiet_restore(
        lambda: self.manager.restore(step, args=ocp.args.Composite(**items)))
    if error is not None:  # the caller decides what to do (an older step, an error)
      raise DamagedCheckpoint(step, self.directory, error)
    meta = restored["meta"]
    check_sums(step, self.directory, "trainable", restored["trainable"], meta)
    if opt_state_target is not None:
      check_sums(step, self.directory, "opt_state", restored["opt_state"], meta)
    return restored

  def move_aside(self, step: int) -> epath.Path:
    """Move a damaged step out of checkpoints/ into ../damaged_checkpoints/ (kept for a
    post-mortem, out of the way of keep-N and of later saves of the same step number).
    Returns where it went."""
    src = self.directory / str(step)
    dest_root = self.directory.parent / "damaged_checkpoints"
    dest_root.mkdir(parents=True, exist_ok=True)
    # A file in it (a bucket has no empty folders, and a rename needs its target's folder).
    (dest_root / "README.txt").write_text(
        "Checkpoint steps that failed to restore (a file missing, truncated or unreadable, or "
        "arrays that differ from the checksums recorded at save), moved here from "
        "checkpoints/ by the training loop; the run resumed from an older step. Its log names "
        "each step and why. Delete them once you no longer need them.\n")
    dest, n = dest_root / str(step), 1
    while dest.exists():
      n += 1
      dest = dest_root / f"{step}.{n}"
    src.rename(dest)
    self.manager.reload()
    return dest

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree, shardings=None):
  """ShapeDtypeStructs of `tree` (optionally with shardings) to restore into."""
  if shardings is None:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
