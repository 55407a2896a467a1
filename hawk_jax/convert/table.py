"""Declarative, reversible conversion tables (MaxText style).

A table is a list of `Rule`s, each naming one PyTorch key (with `{i}` for a layer index), the
Flax parameter path it becomes (a "/"-joined string; a segment `name_{i}` is a per-layer
module), and a `Transform` with forward (torch -> flax) and inverse functions. The same table
converts both ways, so a round trip is exact by construction and testable.

Scanned layers: with `scan=True`, a segment `layers_{i}` becomes `layers` and the per-layer
arrays are stacked on axis 0 (nn.scan's layout).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping

import numpy as np

from hawk_jax.models.params import shape_problems


@dataclasses.dataclass(frozen=True)
class Transform:
  fwd: Callable[[np.ndarray], np.ndarray]
  inv: Callable[[np.ndarray], np.ndarray]


IDENTITY = Transform(lambda x: x, lambda x: x)
# torch.nn.Linear weight [out, in] <-> Flax Dense kernel [in, out]
LINEAR = Transform(lambda x: np.ascontiguousarray(x.T), lambda x: np.ascontiguousarray(x.T))


def reshape(flax_shape_fn, torch_shape_fn) -> Transform:
  """Reshape transform; each fn maps the input array to the target shape tuple."""
  return Transform(lambda x: x.reshape(flax_shape_fn(x)), lambda x: x.reshape(torch_shape_fn(x)))


@dataclasses.dataclass(frozen=True)
class Rule:
  torch_key: str
  flax_path: str
  transform: Transform = IDENTITY

  @property
  def per_layer(self) -> bool:
    return "{i}" in self.torch_key


def _set(tree: dict, path: Iterable[str], value):
  path = list(path)
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: Iterable[str]):
  for p in path:
    tree = tree[p]
  return tree


def _layer_path(rule: Rule, i: int, scan: bool) -> list[str]:
  segs = rule.flax_path.split("/")
  if scan:
    return [s.replace("_{i}", "") for s in segs]
  return [s.format(i=i) for s in segs]


class ConversionError(KeyError):
  def __str__(self):
    return str(self.args[0])


def torch_to_flax(state: Mapping[str, np.ndarray], rules: list[Rule], num_layers: int = 0,
                  scan: bool = False, prefix: str = "", dtype=None,
                  strict: bool = True) -> tuple[dict, set[str]]:
  """Build a nested Flax param dict from a flat torch state dict; returns (params, used keys).

  A key the table names but the state lacks is an error naming it; a shape mismatch is checked
  by the caller against the model's `eval_shape` (see `check_shapes`).
  """
  params: dict = {}
  used: set[str] = set()
  missing = []
  for rule in rules:
    if rule.per_layer:
      arrs = []
      for i in range(num_layers):
        key = prefix + rule.torch_key.format(i=i)
        if key not in state:
          missing.append(key)
          continue
        used.add(key)
        arrs.append(np.asarray(rule.transform.fwd(np.asarray(state[key]))))
      if len(arrs) != num_layers:
        continue
      if scan:
        _set(params, _layer_path(rule, 0, True), np.stack(arrs, 0))
      else:
        for i, a in enumerate(arrs):
          _set(params, _layer_path(rule, i, False), a)
    else:
      key = prefix + rule.torch_key
      if key not in state:
        missing.append(key)
        continue
      used.add(key)
      value = rule.transform.fwd(np.asarray(state[key]))
      _set(params, rule.flax_path.split("/"), np.asarray(value))
  if missing and strict:
    raise ConversionError(f"missing {len(missing)} tensor(s) in the source state dict, e.g. "
                          f"{missing[:5]}")
  if dtype is not None:
    params = _map(params, lambda a: a.astype(dtype))
  return params, used


def flax_to_torch(params: Mapping, rules: list[Rule], num_layers: int = 0, scan: bool = False,
                  prefix: str = "") -> dict[str, np.ndarray]:
  """The inverse of `torch_to_flax`: a flat dict of numpy arrays with torch key names."""
  out: dict[str, np.ndarray] = {}
  for rule in rules:
    if rule.per_layer:
      for i in range(num_layers):
        if scan:
          a = np.asarray(_get(params, _layer_path(rule, 0, True)))[i]
        else:
          a = np.asarray(_get(params, _layer_path(rule, i, False)))
        out[prefix + rule.torch_key.format(i=i)] = np.ascontiguousarray(rule.transform.inv(a))
    else:
      a = np.asarray(_get(params, rule.flax_path.split("/")))
      out[prefix + rule.torch_key] = np.ascontiguousarray(rule.transform.inv(a))
  return out


def _map(tree, fn):
  if isinstance(tree, Mapping):
    return {k: _map(v, fn) for k, v in tree.items()}
  return fn(tree)


def check_shapes(params: Mapping, expected: Mapping, what: str = "params") -> None:
  """Compare a converted param tree with the model's eval_shape tree; errors name the path."""
  problems = shape_problems(params, expected)
  if problems:
    raise ConversionError(f"{what}: {len(problems)} problem(s): " + "; ".join(problems[:10]))
