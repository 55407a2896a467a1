"""A persistent XLA compilation cache, so reruns and resumed runs skip recompiling.

The folder is local by default (~/.cache/hawk_jax/xla). It may be gs:// too
(HAWK_JAX_COMPILE_CACHE=gs://bucket/xla): JAX reads and writes its cache through etils.epath
itself, so every host of a pod can share one; nothing here touches the files.

Not on a pod of CPU processes: `hawk_jax.distributed.initialize` sets the cache aside there
(`hawk_jax.distributed.set_aside_compile_cache` says why), and `enable` then leaves it off.
"""
from __future__ import annotations

import os

import jax

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "hawk_jax", "xla")


def enable(directory: str | None = None, min_compile_secs: float = 1.0) -> bool:
  """Use the cache in `directory` (default: $HAWK_JAX_COMPILE_CACHE, else DEFAULT_DIR; "off"
  for none). Returns whether the cache is on."""
  directory = directory or os.environ.get("HAWK_JAX_COMPILE_CACHE", DEFAULT_DIR)
  if directory.lower() in ("", "0", "off", "none"):
    return False
  if not jax.config.jax_enable_compilation_cache:  # set aside (a CPU pod), or by the user
    return False
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
  return True
