"""FLOPs of a traced JAX program, counted from its jaxpr.

`compiled.cost_analysis()` counts the body of a scanned loop once, so for a model with scanned
layers it undercounts by the number of layers (docs/model.md, "Scale"). Counting on the jaxpr
instead multiplies every `scan` body by its length, sees through `pjit`, `remat`, `custom_vjp` and
`cond` (the most expensive branch), and costs one trace -- no unrolled lowering, no compile.

The rules follow XLA's HloCostAnalysis so the two agree on an unrolled program: a dot is
2 x (output elements) x (contracted elements); an elementwise op is one FLOP per output element,
except transcendental ones (exp, log, tanh, erf, rsqrt, ...), which are counted apart; a
reduction is one FLOP per input element; data movement (reshape, transpose, slice, gather,
broadcast, concatenate, ...) is free.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

TRANSCENDENTAL = frozenset({
    "exp", "exp2", "expm1", "log", "log1p", "tanh", "logistic", "erf", "erfc", "erf_inv",
    "rsqrt", "sqrt", "cbrt", "pow", "sin", "cos", "tan", "atan2", "asin", "acos", "atan",
    "sinh", "cosh", "asinh", "acosh", "atanh", "lgamma", "digamma",
})
ELEMENTWISE = frozenset({
    "add", "add_any", "sub", "mul", "div", "rem", "max", "min", "neg", "abs", "sign", "floor",
    "ceil", "round", "select_n", "clamp", "eq", "ne", "lt", "le", "gt", "ge", "and", "or",
    "not", "xor", "integer_pow", "square", "convert_element_type", "is_finite", "nextafter",
    "shift_left", "shift_right_logical", "shift_right_arithmetic", "population_count",
    "imag", "real", "conj", "reduce_precision",
})
REDUCTION = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
    "reduce_xor", "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp",
})


@dataclasses.dataclass
class FlopCount:
  matmul: float = 0.0          # dot_general / conv, 2 per multiply-add
  elementwise: float = 0.0     # arithmetic, comparisons, casts, reductions
  transcendental: float = 0.0  # exp, log, erf, rsqrt, ... (not in `total`, as in XLA)
  unknown_trip_loops: int = 0  # while loops counted once (trip count not static)

  @property
  def total(self) -> float:
    """FLOPs in XLA's sense (matmul + elementwise), comparable to cost_analysis()["flops"]."""
    return self.matmul + self.elementwise

  def scaled(self, k: float) -> "FlopCount":
    return FlopCount(self.matmul * k, self.elementwise * k, self.transcendental * k,
                     self.unknown_trip_loops)

  def __iadd__(self, other: "FlopCount") -> "FlopCount":
    self.matmul += other.matmul
    self.elementwise += other.elementwise
    self.transcendental += other.transcendental
    self.unknown_trip_loops += other.unknown_trip_loops
    return self


def _size(aval) -> int:
  shape = getattr(aval, "shape", ())
  return int(math.prod(shape))


def _jaxprs_in(value) -> list:
  """Sub-jaxprs held by one equation parameter (a Jaxpr, a ClosedJaxpr or a tuple of them)."""
  if hasattr(value, "eqns"):
    return [value]
  inner = getattr(value, "jaxpr", None)
  if inner is not None and hasattr(inner, "eqns"):
    return [inner]
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _jaxprs_in(v)]
  return []


def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval
  contracted = math.prod(lhs.shape[d] for d in lhs_contract)
  return 2.0 * _size(eqn.outvars[0].aval) * contracted


def _conv_flops(eqn) -> float:
  rhs = eqn.invars[1].aval
  dn = eqn.params["dimension_numbers"]
  out_feature_dim = dn.rhs_spec[0]
  per_output = math.prod(s for i, s in enumerate(rhs.shape) if i != out_feature_dim)
  return 2.0 * _size(eqn.outvars[0].aval) * per_output


def count_jaxpr(jaxpr) -> FlopCount:
  """FLOPs of one (open or closed) jaxpr, loops multiplied out."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr) if not hasattr(jaxpr, "eqns") else jaxpr
  total = FlopCount()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total.matmul += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total.matmul += _conv_flops(eqn)
    elif name in ELEMENTWISE:
      total.elementwise += sum(_size(v.aval) for v in eqn.outvars)
    elif name in TRANSCENDENTAL:
      total.transcendental += sum(_size(v.aval) for v in eqn.outvars)
    elif name in REDUCTION:
      total.elementwise += sum(_size(v.aval) for v in eqn.invars)
    elif name == "scan":
      total += count_jaxpr(eqn.params["jaxpr"]).scaled(eqn.params["length"])
    elif name == "while":
      body = count_jaxpr(eqn.params["body_jaxpr"])
      body += count_jaxpr(eqn.params["cond_jaxpr"])
      body.unknown_trip_loops += 1
      total += body
    elif name == "cond":
      branches = [count_jaxpr(b) for b in eqn.params["branches"]]
      total += max(branches, key=lambda c: c.total)
    else:
      # Call-like primitives (pjit, remat, custom_jvp/vjp, closed_call, shard_map): count the
      # sub-programs they run once each.
      for value in eqn.params.values():
        for sub in _jaxprs_in(value):
          total += count_jaxpr(sub)
  return total


def count_traced(traced: Any) -> FlopCount:
  """FLOPs of `jax.jit(f).trace(*args)` (a `Traced`) or of a ClosedJaxpr."""
  jaxpr = getattr(traced, "jaxpr", traced)
  return count_jaxpr(jaxpr)
