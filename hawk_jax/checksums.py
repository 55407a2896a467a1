"""Checksums of parameter trees that do not depend on how the arrays are sharded.

A checkpoint file that is garbled (a flipped bit, a block of a disk or bucket object rewritten)
is not always an error to read: Orbax stores arrays zstd-compressed without a content checksum,
and a garbled byte in a data file restores as different numbers without a word. So every
checkpoint records, per leaf, a checksum of the array's bits, and restoring recomputes it.

The checksum of a leaf is sum_i bits(x_i) * w_i mod 2**32 with odd weights w_i = (2 i + 1) *
0x9E3779B1 over the flat index i. Integer addition wraps and is associative, so the value is the
same whatever the mesh, the process count or the reduction order -- a checkpoint saved on a 2x4
pod and restored on one CPU compares equal -- and any change of a single element changes it (a
bit flip changes bits(x_i) by +-2**k, times an odd weight, which is never 0 mod 2**32). It runs
on the devices, where the arrays are, as one jitted reduction per tree: no host copy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B1)


def _leaf_checksum(x) -> jax.Array:
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  elif x.dtype.itemsize == 8:  # two 32-bit words per element
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  elif x.dtype.itemsize == 4:
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  else:  # 1 or 2 bytes: the unsigned integer of that width, widened
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  # The flat (row-major) index, wrapping at 2**32 for leaves that large.
  index = jnp.zeros(bits.shape, jnp.uint32)
  stride = jnp.uint32(1)
  for axis in range(bits.ndim - 1, -1, -1):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * stride
    stride = stride * jnp.uint32(bits.shape[axis])
  weights = (index * jnp.uint32(2) + jnp.uint32(1)) * _GOLDEN
  return jnp.sum(bits * weights, dtype=jnp.uint32)


@jax.jit
def _tree_checksums(tree):
  return jax.tree.map(_leaf_checksum, tree)


def tree_checksums(tree) -> dict[str, int]:
  """{leaf path (jax.tree_util.keystr): checksum} of a tree of arrays (numpy or jax, any
  sharding). Every process gets the same numbers."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  if not leaves:
    return {}
  sums = jax.device_get(_tree_checksums([x for _, x in leaves]))
  return {jax.tree_util.keystr(path): int(s) for (path, _), s in zip(leaves, sums)}


def mismatches(tree, recorded: dict[str, int]) -> list[str]:
  """The leaves of `tree` whose checksum differs from `recorded` (leaves `recorded` does not
  name are not checked: a partial read checks what it read)."""
  actual = tree_checksums(tree)
  return [path for path, value in actual.items()
          if path in recorded and int(recorded[path]) != value]
