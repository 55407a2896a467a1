"""Stage configs as every command, test and notebook reads them: a config file with its argument
(`configs/stage2_finetune.py:size=tiny,variant=paper`, big_vision style) plus overrides
`--config.KEY=VALUE` (or `--config.KEY VALUE`), each read as the type of the value it replaces.

  cfg = load_config("configs/stage2_finetune.py:size=tiny", {"train.batch_size": 8})
  args, cfg = parse_args_with_config(parser)                 # a command line (argparse)
"""
from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import os
import sys
from typing import Any, Mapping, Sequence

import ml_collections

Overrides = Mapping[str, Any] | Sequence[tuple[str, str]]


class ConfigError(ValueError):
  """A config file or override that cannot be applied; the message names it."""


def load_config(spec: str, overrides: Overrides | None = None) -> ml_collections.ConfigDict:
  """`"configs/stage2_finetune.py:size=tiny"` -> ConfigDict, with `overrides` applied: a mapping
  of dotted keys to values (set as given) or (dotted key, command-line text) pairs."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"config file {path!r} not found")
  mod_spec = importlib.util.spec_from_file_location("_hawk_cfg", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  if not hasattr(mod, "get_config"):
    raise ConfigError(f"config file {path!r} has no get_config(arg)")
  cfg = mod.get_config(arg or None)
  apply_overrides(cfg, overrides or {})
  return cfg


def split_config_args(argv: Sequence[str]) -> tuple[list[str], str | None,
                                                     list[tuple[str, str]]]:
  """(other arguments, the --config spec or None, [(dotted key, text)]) of a command line."""
  rest, overrides, spec = [], [], None
  i = 0
  while i < len(argv):
    a = argv[i]
    if a == "--config" or a.startswith("--config=") or a.startswith("--config."):
      key, eq, value = a[len("--config"):].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise ConfigError(f"{a}: missing value")
        value = argv[i + 1]
        i += 1
      if key:
        overrides.append((key[1:], value))
      else:
        spec = value
    else:
      rest.append(a)
    i += 1
  return rest, spec, overrides


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Overrides) -> None:
  """Sets dotted keys in place. Text values (pairs) are read as the type of the value they
  replace; an unknown key or an unreadable value is a ConfigError naming it."""
  items = overrides.items() if isinstance(overrides, Mapping) else overrides
  from_text = not isinstance(overrides, Mapping)
  for key, value in items:
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      if not isinstance(node, ml_collections.ConfigDict) or p not in node:
        raise ConfigError(f"--config.{key}: the config has no field {p!r}{_closest(cfg, key)}")
      node = node[p]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(f"--config.{key}: the config has no field {leaf!r}{_closest(cfg, key)}")
    node[leaf] = coerce(node[leaf], value, key) if from_text else value


def dotted_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf of a config as a dotted key ("train.batch_size", ...)."""
  out = []
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.extend(dotted_keys(v, f"{prefix}{k}."))
    else:
      out.append(f"{prefix}{k}")
  return out


def _closest(cfg: ml_collections.ConfigDict, key: str) -> str:
  """'; did you mean --config.X?' for the nearest valid key (by spelling, and by the last part,
  so `--config.batch_size` finds `train.batch_size`), or ''."""
  keys = dotted_keys(cfg)
  best = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
  if not best:
    leaf = key.rsplit(".", 1)[-1]
    best = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:1] or [
        k for k in keys if k.rsplit(".", 1)[-1] in difflib.get_close_matches(
            leaf, [x.rsplit(".", 1)[-1] for x in keys], n=1, cutoff=0.75)][:1]
  return f"; did you mean --config.{best[0]}?" if best else ""


def coerce(current, text: str, key: str):
  """A command-line string as the type of the config value it replaces."""
  try:
    if isinstance(current, bool):
      if text.lower() in ("true", "1", "yes"):
        return True
      if text.lower() in ("false", "0", "no"):
        return False
      raise ValueError("expected true or false")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(text)
      if not isinstance(value, (tuple, list)):
        raise ValueError("expected a tuple or list")
      return type(current)(value)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f"--config.{key}={text!r}: cannot read it as {type(current).__name__} "
                      f"({e})") from None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
  """`--config FILE[:ARG]` on a command's parser; the overrides are documented in its epilog."""
  parser.add_argument("--config", required=required, default=None,
                      help="stage config file[:size=..,variant=..], e.g. "
                           "configs/stage2_finetune.py:size=tiny; override any field with "
                           "--config.KEY=VALUE (e.g. --config.train.batch_size=8)")


def parse_args_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
                           ) -> tuple[argparse.Namespace, ml_collections.ConfigDict | None]:
  """(the parser's arguments, the loaded config or None) of a command line: `--config` and
  its `--config.KEY=VALUE` overrides go through `load_config`; a bad one exits with the
  parser's usage error naming it."""
  try:
    rest, spec, overrides = split_config_args(list(sys.argv[1:] if argv is None else argv))
  except ConfigError as e:
    parser.error(str(e))
  if spec is not None:
    rest = ["--config", spec] + rest
  args = parser.parse_args(rest)
  if args.config is None:
    if overrides:
      parser.error("--config.KEY=VALUE overrides need --config")
    return args, None
  try:
    return args, load_config(args.config, overrides)
  except ConfigError as e:
    parser.error(str(e))
