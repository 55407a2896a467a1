"""Loading stage configs outside absl (tests, notebooks) the way `--config` loads them."""
from __future__ import annotations

import importlib.util
import os

import ml_collections

from hawk_jax.models.model_config import HawkConfig


def load_config(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """`"configs/stage2_finetune.py:size=tiny"` -> ConfigDict; `overrides` maps dotted keys."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path!r} not found")
  mod_spec = importlib.util.spec_from_file_location("_hawk_cfg", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  cfg = mod.get_config(arg or None)
  for key, value in (overrides or {}).items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"config override {key!r}: no such field")
    node[leaf] = value
  return cfg


def hawk_model_config(cfg: ml_collections.ConfigDict) -> HawkConfig:
  return HawkConfig.from_dict(cfg.model.to_dict())
