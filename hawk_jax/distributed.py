"""Starting JAX's multi-process runtime, the one way every command line does it (`--distributed`).

On a Cloud TPU VM, under SLURM, Open MPI or Kubernetes, `jax.distributed.initialize()` finds the
coordinator and this process's index by itself. Launchers that start processes by hand
(launch/gpu.sh over ssh, launch/local_pod.sh on one machine) set the cluster scripts' protocol
instead: JAX_COORDINATOR_ADDRESS (which JAX reads itself), JAX_NUM_PROCESSES, JAX_PROCESS_ID.

Two settings matter for a pod that must never hang:
- the coordination service's heartbeat: when a process dies (kill -9, a lost host) the
  service notices its missing heartbeats after `heartbeat_timeout_s` and terminates every
  other process with a message naming the lost one ("The following tasks are unhealthy
  (stopped sending heartbeats): 1"); HAWK_HEARTBEAT_TIMEOUT_S overrides the default;
- on CPU, cross-process collectives go over gloo (TCP), so a "pod" of CPU processes on one
  machine runs the same sharded programs a TPU slice does (launch/local_pod.sh).

And a CPU pod compiles without the persistent compilation cache (`set_aside_compile_cache`).
"""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger("hawk_jax.distributed")

# JAX's own default is 100 s; 60 s stops a pod well within two minutes of losing a process,
# while a busy host (a long compile, a checkpoint write) still sends its heartbeats.
DEFAULT_HEARTBEAT_TIMEOUT_S = 60


def distributed_args(env=None) -> dict:
  """Process count and index from JAX_NUM_PROCESSES / JAX_PROCESS_ID when a launcher sets them
  (launch/gpu.sh over ssh, launch/local_pod.sh); JAX reads JAX_COORDINATOR_ADDRESS itself and
  detects Cloud TPU, SLURM, Open MPI and Kubernetes on its own when they are absent."""
  env = os.environ if env is None else env
  out = {}
  if env.get("JAX_NUM_PROCESSES"):
    out["num_processes"] = int(env["JAX_NUM_PROCESSES"])
  if env.get("JAX_PROCESS_ID"):
    out["process_id"] = int(env["JAX_PROCESS_ID"])
  return out


def heartbeat_timeout_s(env=None) -> int:
  env = os.environ if env is None else env
  value = env.get("HAWK_HEARTBEAT_TIMEOUT_S", "")
  if not value:
    return DEFAULT_HEARTBEAT_TIMEOUT_S
  try:
    seconds = int(value)
  except ValueError:
    seconds = 0
  if seconds < 1:
    raise ValueError(f"HAWK_HEARTBEAT_TIMEOUT_S={value!r}: expected a whole number of seconds "
                     ">= 1")
  return seconds


def initialize() -> None:
  """`jax.distributed.initialize` with the launcher's environment, gloo collectives on CPU and
  a bounded heartbeat. Call it before anything touches a JAX device."""
  if jax.distributed.is_initialized():
    return
  # Must precede initialize(): the CPU client is created with its collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s(),
                             **distributed_args())
  log.info("process %d of %d: %d local devices of %d", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_count() > 1 and jax.default_backend() == "cpu":
    set_aside_compile_cache()


def set_aside_compile_cache() -> None:
  """Turn JAX's persistent compilation cache off, however it was set (HAWK_JAX_COMPILE_CACHE,
  JAX_COMPILATION_CACHE_DIR), before the first compile.

  Why, on a pod of CPU processes: each process's cache key differs (JAX hashes the process's
  own devices into it) and only process 0 writes, so process 0 runs executables of an earlier
  run while the others compile theirs afresh. Such a cached and a fresh executable of one
  program were seen to issue their collectives in different orders (process 0 in an
  all-reduce, process 1 in an all-gather inside a loop), and the pod hung for good. Every
  process but 0 compiles anyway, so the pod loses no time without the cache."""
  jax.config.update("jax_enable_compilation_cache", False)
  log.info("persistent compilation cache off: %d CPU processes each compile their own "
           "programs (a cached and a fresh executable can order collectives differently)",
           jax.process_count())


def is_main_process() -> bool:
  """Process 0 writes what there is one of: logs, metrics, TensorBoard, result.json, reports."""
  return jax.process_index() == 0
