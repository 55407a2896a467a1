"""A persistent XLA compilation cache, so reruns and resumed runs skip recompiling.

The folder is local by default (~/.cache/hawk_jax/xla). It may be gs:// too
(HAWK_JAX_COMPILE_CACHE=gs://bucket/xla): JAX reads and writes its cache through etils.epath
itself, so every host of a pod can share one; nothing here touches the files.

Not on a pod of CPU processes (launch/local_pod.sh, gloo collectives): there each process's
cache key differs (JAX hashes the process's own devices into it, and only process 0 writes),
so process 0 runs an executable from an earlier run while the others compile theirs afresh.
Two such executables of one program were seen to issue their collectives in different orders
(process 0 in an all-reduce, process 1 in an all-gather inside a loop) and the pod hung
forever. Every process but 0 compiles anyway, so the pod loses no time without the cache.
"""
from __future__ import annotations

import logging
import os

import jax

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "hawk_jax", "xla")

log = logging.getLogger(__name__)


def cpu_pod() -> bool:
  """Whether this process is one of several CPU processes (touches JAX's backend only then)."""
  return (jax.distributed.is_initialized() and jax.process_count() > 1
          and jax.default_backend() == "cpu")


def enable(directory: str | None = None, min_compile_secs: float = 1.0) -> bool:
  """Use the cache in `directory` (default: $HAWK_JAX_COMPILE_CACHE, else DEFAULT_DIR; "off"
  for none). Returns whether the cache is on."""
  directory = directory or os.environ.get("HAWK_JAX_COMPILE_CACHE", DEFAULT_DIR)
  if directory.lower() in ("", "0", "off", "none"):
    return False
  if cpu_pod():
    log.info("persistent compilation cache off: %d CPU processes each compile their own "
             "programs (a cached and a fresh executable can order collectives differently)",
             jax.process_count())
    return False
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
  return True
