"""Model initialisation in the big_vision order: shapes first (eval_shape), then shardings,
then random init of everything on the mesh, then the converted pretrained towers over it, then
the previous stage's trainable parameters. Every parameter group's source is recorded, and a
missing or mis-shaped tensor is an error that names it.

Pretrained towers arrive already converted: `python -m hawk_jax.convert from-torch` turns
HF/LAVIS/released-HAWK files into a workdir (frozen/ + a trainable checkpoint), and
`config.init.from_stage` names that workdir or a previous stage's. They are read straight onto
the mesh with the target shardings (hawk_jax.workdir), so a 7B tower never passes through one
host's memory.
"""
from __future__ import annotations

import logging

from hawk_jax import checkpoint
from hawk_jax import workdir as workdir_lib
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import param_shardings, random_params

log = logging.getLogger("hawk_jax.init")


def initialize(config: HawkConfig, cfg, mesh, rules
               ) -> tuple[dict, dict, dict[str, str], str | None]:
  """Returns (params, shardings, sources, frozen_from): params on the mesh; sources maps each
  top group (e.g. "appearance/vit") to where it came from; frozen_from is the workdir
  (`init.from_stage`) whose frozen towers all frozen groups were loaded from unchanged, or None
  (then a workdir must save its own copy of them, it cannot refer to another's)."""
  frozen_from = None
  abstract, shardings = param_shardings(config, mesh, rules)
  params = random_params(config, cfg.seed, shardings)
  sources: dict[str, str] = {}
  for top in ("appearance", "motion"):
    for group in abstract[top]:
      sources[f"{top}/{group}"] = f"random init (seed {cfg.seed})"
  sources["llm"] = f"random init (seed {cfg.seed})"

  prev = cfg.init.get("from_stage", "")
  if prev:
    check_from_stage(prev)
    read = dict(config=config, shardings=shardings)
    # Frozen towers: exactly those the previous stage trained with, or those that
    # `python -m hawk_jax.convert from-torch` converted from pretrained files.
    # `prev` may hold only a reference to another workdir's towers (train.frozen="reference");
    # a dangling reference raises rather than leaving the towers random.
    if workdir_lib.has_frozen_params(prev):
      frozen = workdir_lib.load_params(prev, parts=("frozen",), **read).params
      params = _merge_over(params, frozen)
      prev_frozen = workdir_lib.frozen_params_dir(prev)
      own = str(checkpoint.as_path(prev) / "frozen")
      where = "" if prev_frozen == own else f" (in {prev_frozen})"
      for k in _groups(frozen):
        sources[k] = f"frozen towers of {prev}{where}"
      frozen_from = prev
    else:
      log.warning("%s has no frozen/ parameters: the frozen towers stay randomly initialised",
                  prev)
    if not workdir_lib.checkpoint_steps(prev):
      log.info("%s has no trainable checkpoint: the trainable parameters start fresh", prev)
    else:
      loaded = workdir_lib.load_params(prev, parts=("trainable",), **read)
      params = _merge_over(params, loaded.params)
      for k in _groups(loaded.params):
        sources[k] = f"stage checkpoint {prev} step {loaded.step}"
  return params, shardings, sources, frozen_from


def check_from_stage(prev: str, size: str | None = None) -> None:
  """A mistyped `init.from_stage` is an error naming it, never a run from random towers; and a
  read creates nothing (no folder appears at the mistyped path). A workdir of another `size`
  is refused naming both sizes (its parameters cannot fit this model)."""
  try:
    prev_cfg = workdir_lib.read_config(prev)
  except workdir_lib.WorkdirError as e:
    raise workdir_lib.WorkdirError(f"config.init.from_stage: {e}") from None
  prev_size = prev_cfg.get("size")
  if size is not None and prev_size is not None and prev_size != size:
    raise workdir_lib.WorkdirError(
        f"config.init.from_stage={prev} was written for size={prev_size} (its config.json), "
        f"this run is size={size}; start from a workdir of size {size}")
  if not (workdir_lib.has_frozen_params(prev) or workdir_lib.checkpoint_steps(prev)):
    raise workdir_lib.WorkdirError(
        f"config.init.from_stage={prev}: holds neither frozen towers (frozen/ or "
        f"frozen_ref.json) nor a finished trainable checkpoint; point it at a trained stage or "
        f"at a workdir written by `python -m hawk_jax.convert from-torch`")


def _groups(tree) -> list[str]:
  out = []
  for top, sub in tree.items():
    if top == "llm" or not isinstance(sub, dict):
      out.append(top)
    else:
      out.extend(f"{top}/{g}" for g in sub)
  return out


def _merge_over(base: dict, over: dict) -> dict:
  out = dict(base)
  for k, v in over.items():
    if isinstance(v, dict) and isinstance(out.get(k), dict):
      out[k] = _merge_over(out[k], v)
    else:
      if k not in out:
        raise KeyError(f"restored parameter {k!r} is not in the model")
      out[k] = v
  return out
