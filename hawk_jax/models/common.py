"""Pieces every tower shares: dtype names, remat policies by name, logical-axis helpers."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name) -> jnp.dtype:
  if not isinstance(name, str):
    return name
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; known: {sorted(_DTYPES)}") from None


# Named checkpoint policies, chosen in the config (DESIGN.md §6). "none" keeps every activation
# (fastest, most memory); "full" recomputes the whole layer in the backward pass.
_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_everything": jax.checkpoint_policies.everything_saveable,
}


def remat_names() -> list[str]:
  return ["none", *_REMAT_POLICIES]


def maybe_remat(layer_cls, policy: str, static_argnums=()):
  """Wrap a Linen layer class in nn.remat with the named policy ("none": unchanged)."""
  if policy == "none":
    return layer_cls
  if policy not in _REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; known: {remat_names()}")
  return nn.remat(layer_cls, policy=_REMAT_POLICIES[policy], prevent_cse=False,
                  static_argnums=static_argnums)


def constrain(x, *names):
  """Activation sharding constraint by logical names (a no-op outside a mesh/rules context)."""
  return nn.with_logical_constraint(x, names)


def param_with_axes(init, *names):
  return nn.with_logical_partitioning(init, names)
