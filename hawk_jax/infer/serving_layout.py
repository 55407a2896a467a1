"""Where the weights of describe, chat and evaluate live: the serving layout and its mesh.

Generation is a loop of decode steps that each read every LLM weight once. A layout with FSDP
(the training layout, `embed` over `fsdp`) would all-gather every weight for every generated
token -- the planner says as much for serving (hawk_jax/plan/cli.py: "for serving use a mesh
without fsdp (replicated or tensor-parallel weights)"). So serving uses a mesh of the project's
axes (`hawk_jax.sharding.MESH_AXES`) with `fsdp` of size 1:

  single      one device of one process, as a plain jax.Array (the model and batch there);
  replicated  data=N, tensor=1: every device holds all weights, batches split over devices;
  tensor      data=N/T, tensor=T: the weights the logical rules put on `tensor` (heads, kv
              heads, MLP, vocabulary of the LLM and the towers: `hawk_jax.sharding.
              DEFAULT_RULES`, or the run config's `logical_axis_rules`) are split T ways
              (Megatron-style: the column products need no communication, the row products
              one all-reduce); rows of a batch are split over `data`;
  auto        single on one device; else replicated when the weights fit a device
              comfortably (at most WEIGHT_FRACTION of its memory: the rest is for the KV
              cache, activations and the loading copy), else tensor with the smallest T that
              fits (preferring T within a process's devices, whose interconnect is fastest).

Parameter shardings come from `models.params.param_shardings` under the rules, keeping only the
`tensor` axis (no weight is split over `data` or `fsdp`, so nothing is gathered per token) and
only where T divides the width (e.g. 2 kv heads over T=4 stay whole). `load_params(...,
shardings=...)` reads every leaf straight onto its shard. The LLM decodes through a twin
(models/llama_decoding.py): replicated, the CPU-tuned twin (fused q/k/v and gate/up, [out, in]
kernels); tensor-parallel, the unrolled twin with separate projections, because a fused q/k/v
split T ways would put q on some devices and k/v on others.

Activations are left to XLA's sharding propagation from the weights and the inputs, not to the
model's logical activation constraints (no rules are active here): the constraints would pin
the batch axis to `data`, which a describe or chat batch of one row cannot be split over. A
batch is split over `data` when its rows divide evenly, else replicated (every data slice then
computes it). Calls run inside `jax.set_mesh(mesh)`, so arrays JAX creates on the way (options,
PRNG keys, a chat token) are replicated over the mesh rather than left on one device.

Several processes (`--distributed`): the mesh spans every device of every process, so the
weights are split over a host's devices -- and, when needed, over several hosts -- and every
process runs the same jitted programs on global arrays (SPMD). Rows of a global batch of
`rows` rows belong to the processes whose devices hold them (`process_rows`); each process
supplies its rows (`put_local`, jax.make_array_from_process_local_data) and reads results
with `gather` (multihost_utils.process_allgather). Processes whose devices share a data slice
(T across hosts) supply the same rows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hawk_jax.hardware import CHIPS, chip_of_device_kind
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import abstract_params, param_shardings
from hawk_jax.sharding import DEFAULT_RULES, MESH_AXES, logical_to_sharding, rules_as_list
from hawk_jax.workdir import available_memory_bytes

log = logging.getLogger("hawk_jax.infer.serving_layout")

LAYOUTS = ("auto", "single", "replicated", "tensor")
# "auto" replicates while the weights take at most this fraction of a device's memory; the
# rest holds the KV cache (hawk7b, 8 rows of ~200 slots: ~1 GB in bf16), activations and the
# reading copy of a leaf.
WEIGHT_FRACTION = 0.5
TENSOR_AXIS = "tensor"


@dataclasses.dataclass(frozen=True)
class LayoutRequest:
  """A parsed --layout: its kind and, for "tensor", the tensor-axis size (None: choose)."""
  kind: str = "auto"
  tensor: int | None = None

  def __str__(self) -> str:
    return f"tensor:{self.tensor}" if self.tensor else self.kind


def parse_layout(text: str) -> LayoutRequest:
  """"auto" | "single" | "replicated" | "tensor" | "tensor:N" -> LayoutRequest."""
  text = str(text).strip()
  m = re.fullmatch(r"tensor:(\d+)", text)
  if m:
    size = int(m.group(1))
    if size < 1:
      raise ValueError(f"layout {text!r}: the tensor-axis size must be >= 1")
    return LayoutRequest("tensor", size)
  if text not in LAYOUTS:
    raise ValueError(f"layout {text!r}: expected one of {', '.join(LAYOUTS)} or tensor:N")
  return LayoutRequest(text)


def device_memory_bytes(device=None) -> float | None:
  """Memory one device offers: the runtime's limit (accelerators), the chip table's HBM for a
  known chip, a process's share of the available host memory for CPU devices (fake CPU
  devices share one host), None when unknown."""
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # some backends do not implement it
    stats = None
  if stats and stats.get("bytes_limit"):
    return float(stats["bytes_limit"])
  if device.platform == "cpu":
    available = available_memory_bytes()
    return None if available is None else available / jax.local_device_count()
  chip = chip_of_device_kind(device.device_kind)
  return CHIPS[chip].hbm_gib * (1 << 30) if chip else None


def per_device_bytes(abstract, shardings) -> int:
  """Bytes of parameters the most loaded device holds (every leaf's shard shape)."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(
      shardings, is_leaf=lambda x: isinstance(x, NamedSharding))):
    shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
    total += int(math.prod(shape)) * jnp.dtype(leaf.dtype).itemsize
  return total


def serving_mesh(tensor: int, devices: Sequence | None = None) -> Mesh:
  """A (data, fsdp=1, tensor) mesh over `devices` (default: every device of every process).

  Across processes each process's devices form whole data slices when `tensor` divides its
  device count (a hybrid mesh with the process as the outer granule), so the rows of a batch a
  process supplies live on its own devices."""
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  if tensor < 1 or n % tensor:
    raise ValueError(f"a tensor axis of {tensor} does not divide the {n} devices")
  processes = sorted({d.process_index for d in devices})
  local = n // len(processes)
  if len(processes) > 1 and local % tensor == 0 and all(
      sum(d.process_index == p for d in devices) == local for p in processes):
    grid = mesh_utils.create_hybrid_device_mesh(
        (local // tensor, 1, tensor), (len(processes), 1, 1), devices, process_is_granule=True)
  else:
    grid = mesh_utils.create_device_mesh((n // tensor, 1, tensor), devices,
                                         allow_split_physical_axes=True)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _serving_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """`spec` keeping only the tensor axis, and only on dimensions it divides."""
  out = []
  for dim, entry in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (entry,) if isinstance(entry, str) else tuple(entry or ())
    if TENSOR_AXIS in names and shape[dim] % mesh.shape[TENSOR_AXIS] == 0:
      out.append(TENSOR_AXIS)
    else:
      out.append(None)
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def serving_shardings(abstract, logical_shardings, mesh: Mesh):
  """NamedShardings of a tree for serving: the logical rules' shardings restricted to the
  tensor axis where it divides (`_serving_spec`)."""
  return jax.tree.map(
      lambda leaf, s: NamedSharding(mesh, _serving_spec(s.spec, leaf.shape, mesh)),
      abstract, logical_shardings)


@dataclasses.dataclass
class ServingLayout:
  """A chosen layout: its kind, mesh (None for "single"), tensor-axis size, the rules that
  place parameters, and the bytes of weights one device holds."""
  kind: str
  mesh: Mesh | None
  tensor: int = 1
  rules: tuple = tuple(DEFAULT_RULES)
  weight_bytes: int = 0          # per device
  capacity_bytes: float | None = None
  reason: str = ""

  # --- parameters ------------------------------------------------------------------------------

  def param_shardings(self, config: HawkConfig):
    """The NamedShardings of `Hawk(config)`'s parameter tree (None for "single")."""
    if self.mesh is None:
      return None
    abstract, logical = param_shardings(config, self.mesh, self.rules)
    return serving_shardings(abstract, logical, self.mesh)

  def tree_shardings(self, boxed):
    """Serving shardings of any boxed abstract tree (flax Partitioned leaves)."""
    abstract = nn.unbox(boxed)
    logical = logical_to_sharding(nn.get_partition_spec(boxed), self.mesh, self.rules)
    return serving_shardings(abstract, logical, self.mesh)

  # --- batches ---------------------------------------------------------------------------------

  @property
  def batch_shards(self) -> int:
    """Data slices a batch is split over (1 for "single")."""
    return 1 if self.mesh is None else int(self.mesh.shape["data"])

  def global_rows(self, rows: int) -> int:
    """`rows` rounded up to a multiple of the data slices (so a batch splits evenly)."""
    return -(-rows // self.batch_shards) * self.batch_shards

  def batch_sharding(self, ndim: int, rows: int) -> NamedSharding:
    """Rows over `data` when they divide evenly, else replicated."""
    if rows % self.batch_shards == 0:
      return NamedSharding(self.mesh, P("data", *([None] * (ndim - 1))))
    return NamedSharding(self.mesh, P())

  def process_rows(self, rows: int) -> tuple[int, int]:
    """[start, stop) of the rows of a `rows`-row batch that this process's devices hold."""
    if self.mesh is None:
      return 0, rows
    held = self.batch_sharding(1, rows).addressable_devices_indices_map((rows,)).values()
    spans = sorted({(idx[0].start or 0, rows if idx[0].stop is None else idx[0].stop)
                    for idx in held})
    start, stop = spans[0][0], spans[0][1]
    for a, b in spans[1:]:
      if a > stop:
        raise ValueError(f"the mesh gives this process rows {spans} of a batch of {rows}: not "
                         "one contiguous block")
      stop = max(stop, b)
    return start, stop

  def put(self, x) -> jax.Array:
    """Host data every process holds whole -> a global array (rows split when they divide)."""
    x = np.asarray(x)
    if self.mesh is None:
      return jnp.asarray(x)
    sharding = self.batch_sharding(x.ndim, x.shape[0]) if x.ndim else NamedSharding(
        self.mesh, P())
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  def put_local(self, x, rows: int) -> jax.Array:
    """This process's rows (`process_rows(rows)`) of a batch of `rows` rows -> the global
    array; every process calls it with its own rows."""
    x = np.asarray(x)
    if self.mesh is None:
      return jnp.asarray(x)
    start, stop = self.process_rows(rows)
    if x.shape[0] != stop - start:
      raise ValueError(f"{x.shape[0]} local rows for rows [{start}, {stop}) of a batch of "
                       f"{rows}")
    return jax.make_array_from_process_local_data(self.batch_sharding(x.ndim, rows), x,
                                                  (rows,) + x.shape[1:])

  def gather(self, x) -> np.ndarray:
    """A (global) array as numpy on every process (a collective when the array spans
    processes: every process must call it)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  def local_rows(self, x: jax.Array, rows: int) -> np.ndarray:
    """This process's rows (`process_rows(rows)`) of a global [rows, ...] array, read from its
    own devices. Every process must call it: an array laid out otherwise is first resharded
    onto the batch sharding (a collective)."""
    start, stop = self.process_rows(rows)
    if self.mesh is None or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))[start:stop]
    sharding = self.batch_sharding(x.ndim, rows)
    if not x.sharding.is_equivalent_to(sharding, x.ndim):
      x = jax.jit(lambda a: a, out_shardings=sharding)(x)
    pieces = {}
    for shard in x.addressable_shards:
      index = shard.index[0] if shard.index else slice(None)
      pieces.setdefault(index.start or 0, shard)
    first = min(pieces)
    data = np.concatenate([np.asarray(pieces[k].data) for k in sorted(pieces)])
    return data[start - first:stop - first]

  def allgather_ints(self, values: Sequence[int]) -> np.ndarray:
    """[processes, len(values)] int64: every process's `values` (one collective)."""
    if jax.process_count() == 1:
      return np.asarray([values], np.int64)
    return np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int64)))

  def allgather_json(self, value: Any) -> list[Any]:
    """Every process's JSON-serialisable `value`, in process order (two collectives)."""
    if jax.process_count() == 1:
      return [value]
    data = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)
    sizes = self.allgather_ints([data.size])[:, 0]
    padded = np.zeros((int(sizes.max()),), np.uint8)
    padded[:data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:size]).decode("utf-8")) for row, size in zip(gathered, sizes)]

  # --- context ---------------------------------------------------------------------------------

  def activate(self):
    """The mesh as JAX's current mesh (a no-op for "single"): arrays created eagerly inside it
    are replicated over the mesh, which keeps every process's calls global."""
    return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

  def describe(self) -> str:
    gib = self.weight_bytes / (1 << 30)
    where = ("1 device" if self.mesh is None else
             f"mesh data={self.mesh.shape['data']} tensor={self.mesh.shape[TENSOR_AXIS]} over "
             f"{self.mesh.devices.size} devices, {jax.process_count()} process(es)")
    cap = (f" of {self.capacity_bytes / (1 << 30):.2f} GiB" if self.capacity_bytes else "")
    return (f"layout {self.kind} ({where}): {gib:.3f} GiB of weights per device{cap}"
            + (f"; {self.reason}" if self.reason else ""))


def _weights_bytes(config: HawkConfig) -> int:
  return sum(int(math.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(abstract_params(config)))


def _tensor_layout(config, tensor, rules, devices, capacity, reason="") -> ServingLayout:
  mesh = serving_mesh(tensor, devices)
  layout = ServingLayout("tensor", mesh, tensor, rules, capacity_bytes=capacity, reason=reason)
  layout.weight_bytes = per_device_bytes(abstract_params(config), layout.param_shardings(config))
  return layout


def _tensor_sizes(n: int, local: int) -> list[int]:
  """Tensor-axis sizes to try, smallest first: divisors of a process's device count (fast
  interconnect), then whole multiples of it that divide all devices."""
  within = [t for t in range(2, local + 1) if local % t == 0 and n % t == 0]
  across = [t for t in range(2 * local, n + 1, local) if n % t == 0]
  return within + across


def plan_layout(config: HawkConfig, request: LayoutRequest | str = "auto", *, rules=None,
                devices: Sequence | None = None, capacity: float | None = None
                ) -> ServingLayout:
  """The serving layout of `config` (its dtypes as they will be loaded) for `request`.

  `devices`: default every device of every process; `capacity`: bytes per device (default
  `device_memory_bytes()`)."""
  if isinstance(request, str):
    request = parse_layout(request)
  rules = tuple(tuple(r) for r in rules_as_list(rules if rules is not None else DEFAULT_RULES))
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  processes = len({d.process_index for d in devices})
  local = n // processes
  if capacity is None:
    capacity = device_memory_bytes()
    if jax.process_count() > 1:
      # Every process must choose the same layout: the smallest memory decides (a CPU host's
      # available memory differs from process to process).
      mine = -1 if capacity is None else int(capacity)
      every = np.asarray(multihost_utils.process_allgather(np.asarray([mine], np.int64)))
      capacity = None if (every < 0).any() else float(every.min())
  total = _weights_bytes(config)
  budget = None if capacity is None else WEIGHT_FRACTION * capacity

  if request.kind == "single":
    if processes > 1:
      raise ValueError("layout single holds the model on one device of one process; with "
                       "several processes use auto, replicated or tensor")
    return ServingLayout("single", None, 1, rules, total, capacity)
  if request.kind == "auto" and n == 1:
    return ServingLayout("single", None, 1, rules, total, capacity, "one device")
  if request.kind == "replicated":
    return ServingLayout("replicated", serving_mesh(1, devices), 1, rules, total, capacity)
  if request.kind == "auto" and (budget is None or total <= budget):
    why = ("device memory unknown" if budget is None else
           f"the weights fit in {WEIGHT_FRACTION:.0%} of a device")
    return ServingLayout("replicated", serving_mesh(1, devices), 1, rules, total, capacity, why)
  if request.tensor is not None:
    return _tensor_layout(config, request.tensor, rules, devices, capacity)
  sizes = _tensor_sizes(n, local)
  if not sizes:
    raise ValueError(f"no tensor axis over {n} device(s): tensor parallelism needs >= 2")
  for t in sizes:
    layout = _tensor_layout(config, t, rules, devices, capacity)
    if budget is None or layout.weight_bytes <= budget:
      layout.reason = ("the smallest tensor axis whose shards fit in "
                       f"{WEIGHT_FRACTION:.0%} of a device" if budget is not None else "")
      return layout
  layout.reason = (f"no tensor axis brings the weights under {WEIGHT_FRACTION:.0%} of a "
                   "device; the largest is used")
  log.warning("%s", layout.reason)
  return layout
