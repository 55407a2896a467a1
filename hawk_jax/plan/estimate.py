"""Ahead-of-time planning of the training and generation steps for a device mesh.

Everything here is abstract: parameters, optimizer state, batch and KV cache are
`jax.ShapeDtypeStruct`s that carry their shardings, so a 7B-parameter step for 64 or 256
devices is traced, lowered and compiled on one CPU (with fake devices) without allocating it.
The train step is the one `hawk_jax.train.loop` runs (`hawk_jax.train.state`), traced inside
`jax.set_mesh` so the model's logical activation constraints apply.

What comes out:
- per-device memory: parameters (trainable / frozen), optimizer state and batch from the
  shardings (exact), activations and temporaries from `compiled.memory_analysis()`. Compiled
  for a real accelerator this is what the device holds: on one H200 the hawk7b stage-2 step
  (batch 16) used 25,750,969,600 bytes at peak, argument + temp to the kilobyte. A CPU compile
  keeps bf16 matmuls in f32 (operands converted, f32 results, FSDP gathers of the converted
  weights), so its temp is too high; `temp_scale` (default CPU_TEMP_SCALE) corrects it and the
  raw figure is reported beside the corrected one.
- FLOPs per step, counted on the traced program (hawk_jax.flops: scan bodies times their
  length; agrees with the unrolled lowering's cost analysis), with remat recomputation
  ("executed") and without it ("model", from a trace with remat_policy="none").
- a step-time model for a chip (hawk_jax.hardware):
    compute     = executed FLOPs / (devices * peak bf16 FLOP/s * efficiency)
    hbm         = weight bytes each device streams from HBM / HBM bandwidth
    collectives = (FSDP all-gather + gradient reduce-scatter + tensor-parallel activation
                   all-reduce bytes received per device) / interconnect ingress bandwidth
    step        = max(compute, hbm) + max(0, collectives - overlap * max(compute, hbm))
    MFU         = model FLOPs / (step * devices * peak)
  With efficiency = overlap = 1 this is a roofline: a bound, not a forecast. Measured on one
  H200 (MEASURED_EFFICIENCY) the hawk7b step reached 0.43 of it.
  Weight traffic is counted per use: every device reads (and, for FSDP-sharded weights,
  all-gathers) a whole layer each time a pass uses it (`weight_uses`), all of it per
  gradient-accumulation micro-batch. Activation HBM traffic is not modelled (the matmuls here
  are large enough to be compute-bound at a per-device batch >= 1).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding

from hawk_jax import flops as flops_lib
from hawk_jax.hardware import Chip
from hawk_jax.infer import generate
from hawk_jax.models.hawk import Hawk, merge_params
from hawk_jax.models.kv_cache import cache_logical_axes, init_cache
from hawk_jax.models.llama import Llama
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.stage_config import apply_overrides
from hawk_jax.train.state import TrainSetup, train_setup  # noqa: F401 (the planner's setup)

GIB = float(1 << 30)
# The planner never runs what it compiles: skip LLVM's optimisations (a third of the CPU
# compile time here; buffer assignment, hence memory_analysis, is unchanged).
PLAN_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                         "xla_llvm_disable_expensive_passes": True}
# An accelerator's temporaries over a CPU compile's for the same bf16 program (docs/model.md,
# "Scale": a CPU compile's temp is about 2x real); the hawk7b stage-2 step at batch 16 on one
# device had 42.07 GiB of CPU temp against 5.96 GiB compiled for an H200 (0.14), so 0.5 errs
# on the safe side there. Not on a TPU: compiled for a v5e:8x8 topology (libtpu 0.0.42.1) the
# same step on 64 devices had 0.538 (batch 64) and 0.499 (batch 128) of the CPU temp, and the
# fake-device total came out 6.5% and 1.1% under the TPU compiler's (1.383 vs 1.479 GiB, 1.786
# vs 1.806 GiB): keep --usable's margin, or plan with --tpu_topology. Override with
# --temp_scale; a TPU topology compile and an all-f32 model use 1.
CPU_TEMP_SCALE = 0.5
# Roofline step time (efficiency = overlap = 1) over the measured one for the hawk7b stage-2
# step on one H200 (jax 0.11.2, random weights, `hawk_jax.bench.train_step --size hawk7b
# --batch 8 --frames 32 --text_len 448 --remat full`): 456.4 TFLOP executed / 989 TFLOP/s =
# 0.461 s roofline, 1.068 s measured with cuDNN attention (`attention_impl=auto`). The history
# of this figure is in BENCHMARKS.md ("On a GPU").
MEASURED_EFFICIENCY = {"h200": 0.43}


def default_temp_scale(config: HawkConfig, on_cpu: bool) -> float:
  bf16 = any(str(d) == "bfloat16" for d in (config.llm.dtype, config.vision.dtype,
                                             config.qformer.dtype))
  return CPU_TEMP_SCALE if (on_cpu and bf16) else 1.0


# --- the abstract train step (hawk_jax.train.state.train_setup) ------------------------------

@dataclasses.dataclass
class Compiled:
  traced: Any
  compiled: Any
  seconds: dict[str, float]


def compile_train_step(setup: TrainSetup, compiler_options: dict | None = None) -> Compiled:
  """Trace, lower and compile the step for the setup's mesh (nothing is allocated)."""
  if compiler_options is None and setup.mesh.devices.flat[0].platform == "cpu":
    compiler_options = PLAN_COMPILER_OPTIONS
  t0 = time.perf_counter()
  with jax.set_mesh(setup.mesh):
    traced = setup.jit_step.trace(setup.state, setup.frozen, setup.batch)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile(compiler_options)
  t3 = time.perf_counter()
  return Compiled(traced, compiled, {"trace": t1 - t0, "lower": t2 - t1, "compile": t3 - t2})


def trace_train_step(setup: TrainSetup):
  return setup.trace()


# --- memory -----------------------------------------------------------------------------------

def per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.shape
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None:
      shape = sharding.shard_shape(shape)
    total += int(math.prod(shape)) * jnp.dtype(leaf.dtype).itemsize
  return total


def num_params(tree) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


@dataclasses.dataclass
class MemoryPlan:
  """Per-device bytes. The first five come from the shardings; the rest from the compiler."""
  trainable: int
  frozen: int
  opt_state: int
  batch: int
  other_args: int
  argument: int
  output: int
  alias: int
  temp_compiled: int
  temp_scale: float

  @property
  def temp(self) -> float:
    return self.temp_compiled * self.temp_scale

  @property
  def unaliased_output(self) -> int:
    return max(self.output - self.alias, 0)

  @property
  def total(self) -> float:
    return self.argument + self.unaliased_output + self.temp

  @property
  def total_compiled(self) -> float:
    return self.argument + self.unaliased_output + self.temp_compiled

  @property
  def state(self) -> int:
    """Bytes that shrink with more parameter sharding (params + optimizer state)."""
    return self.trainable + self.frozen + self.opt_state


def memory_plan(setup: TrainSetup, compiled, temp_scale: float) -> MemoryPlan:
  ma = compiled.memory_analysis()
  trainable = per_device_bytes(setup.state["trainable"])
  opt = per_device_bytes(setup.state["opt_state"])
  frozen = per_device_bytes(setup.frozen)
  batch = per_device_bytes(setup.batch)
  argument = int(ma.argument_size_in_bytes)
  other = max(argument - trainable - opt - frozen - batch, 0)
  return MemoryPlan(trainable, frozen, opt, batch, other, argument,
                    int(ma.output_size_in_bytes), int(ma.alias_size_in_bytes),
                    int(ma.temp_size_in_bytes), temp_scale)


# --- FLOPs ------------------------------------------------------------------------------------

def with_overrides(cfg: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `cfg` with dotted-key overrides (values already typed)."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  apply_overrides(out, overrides)
  return out


def remat_overrides(policy: str) -> dict:
  return {"model.vision.remat_policy": policy, "model.llm.remat_policy": policy}


def model_flops(cfg, devices=None) -> flops_lib.FlopCount:
  """FLOPs of the step without remat recomputation (the MFU numerator)."""
  setup = train_setup(with_overrides(cfg, remat_overrides("none")), devices=devices)
  return flops_lib.count_traced(trace_train_step(setup))


# --- weight and collective traffic ------------------------------------------------------------

@dataclasses.dataclass
class Traffic:
  """Bytes per device per step."""
  weight_read: float = 0.0   # weights streamed from HBM
  gather: float = 0.0        # received by FSDP all-gathers
  grad_sync: float = 0.0     # gradient reduce-scatter / all-reduce
  tensor_act: float = 0.0    # tensor-parallel activation all-reduces
  by_group: dict = dataclasses.field(default_factory=dict)

  @property
  def collective(self) -> float:
    return self.gather + self.grad_sync + self.tensor_act


def weight_uses(setup: TrainSetup) -> dict[str, tuple[float, float]]:
  """(HBM reads, all-gathers) of each parameter group in one step (module docstring).

  The LLM is read and all-gathered forward, backward and -- with full remat -- once more to
  recompute, per pass (two passes with the motion-language loss); the hawk7b step compiled for
  64 CPU devices gathers 2.7 LLM copies per pass (its recompute and backward share some
  gathers), so this errs ~10% high. Unscanned parts (Q-Formers, projections) are gathered once
  per micro-batch: XLA reuses that gather in the backward pass."""
  cfg, config = setup.cfg, setup.config
  accum = int(cfg.optim.grad_accum_steps)
  llm_passes = 2 if cfg.loss.ml_source == "motion_text" else 1
  llm_recompute = 1 if config.llm.remat_policy == "full" else 0
  sweeps = llm_passes * (2 + llm_recompute)
  uses = {"llm": (sweeps, sweeps)}
  for branch in ("appearance", "motion"):
    uses[f"{branch}/vit"] = (1, 1)
    # Gradients flow back through the frozen motion image Q-Former only when the released
    # code's trainable motion query tokens sit in front of it.
    back = branch == "motion" and config.trainable_query_tokens_motion
    uses[f"{branch}/image_qformer"] = (2 if back else 1, 1)
    uses[f"{branch}/trainable"] = (2, 1)
  return {k: (r * accum, g * accum) for k, (r, g) in uses.items()}


def _group_of(path: tuple[str, ...], trainable: bool) -> str:
  if path[0] == "llm":
    return "llm"
  if trainable:
    return f"{path[0]}/trainable"
  if path[1] == "vit":
    return f"{path[0]}/vit"
  return f"{path[0]}/image_qformer"


def _leaf_factors(mesh: Mesh, sharding: NamedSharding) -> tuple[int, int]:
  """(tensor-axis shards, other shards) of a parameter: tensor shards stay split while
  computing (tensor parallelism); the others (fsdp, data) are all-gathered before use."""
  tensor = other = 1
  for entry in sharding.spec:
    if entry is None:
      continue
    for name in ((entry,) if isinstance(entry, str) else entry):
      if name == "tensor":
        tensor *= mesh.shape[name]
      else:
        other *= mesh.shape[name]
  return tensor, other


def _paths(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [(tuple(str(getattr(k, "key", k)) for k in p), leaf) for p, leaf in flat]


def step_traffic(setup: TrainSetup) -> Traffic:
  uses = weight_uses(setup)
  mesh = setup.mesh
  traffic = Traffic()
  batch_shards = setup.batch_shards
  for tree, trainable in ((setup.state["trainable"], True), (setup.frozen, False)):
    for path, leaf in _paths(tree):
      group = _group_of(path, trainable)
      nbytes = math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
      tensor, gathered = _leaf_factors(mesh, leaf.sharding)
      local = nbytes / tensor
      reads, gathers = uses[group]
      g = traffic.by_group.setdefault(group, {"bytes": 0.0, "reads": reads, "gathers": gathers,
                                              "gather": 0.0})
      g["bytes"] += nbytes
      traffic.weight_read += reads * local
      gather = gathers * local * (gathered - 1) / gathered
      g["gather"] += gather
      traffic.gather += gather
      if trainable:
        traffic.grad_sync += local * (batch_shards - 1) / batch_shards
  traffic.tensor_act = _tensor_parallel_bytes(setup)
  return traffic


def _tensor_parallel_bytes(setup: TrainSetup) -> float:
  """All-reduces of the residual stream that tensor parallelism adds: two per transformer
  layer per sweep (after attention and after the MLP), each about 2 (t-1)/t of its bytes. The
  LLM sweeps each of its passes forward, backward and (with full remat) once more; the ViTs
  run forward only."""
  t = int(setup.mesh.shape.get("tensor", 1))
  if t == 1:
    return 0.0
  cfg, config = setup.cfg, setup.config
  rows = setup.global_batch / setup.batch_shards  # per device, all micro-batches
  per_byte = 2 * (t - 1) / t
  act = 2  # bytes of a bf16 activation
  llm = config.llm
  sweeps = 2 + (1 if llm.remat_policy == "full" else 0)
  tokens = cfg.data.max_len + (cfg.data.ml_max_len if cfg.loss.ml_source == "motion_text" else 0)
  llm_bytes = 2 * llm.num_layers * llm.hidden_size * act * per_byte * rows * tokens * sweeps
  vis = config.vision
  images = rows * cfg.data.num_frames * 2  # both branches
  vit_bytes = 2 * vis.num_layers * vis.seq_len * vis.hidden_size * act * per_byte * images
  return llm_bytes + vit_bytes


# --- time model -------------------------------------------------------------------------------

@dataclasses.dataclass
class StepEstimate:
  compute_s: float
  hbm_s: float
  collective_s: float
  step_s: float
  serial_s: float
  executed_flops: float
  model_flops: float
  peak_flops: float  # of all devices together

  @property
  def mfu(self) -> float:
    return self.model_flops / (self.step_s * self.peak_flops)

  @property
  def mfu_serial(self) -> float:
    return self.model_flops / (self.serial_s * self.peak_flops)


def ingress_bandwidth(chip: Chip, devices: int) -> float:
  """Bytes/s one device can receive in a collective over `devices` chips: half the chip's
  bidirectional interconnect bandwidth inside its fast domain (a TPU slice, an NVLink node),
  its share of the data-centre network beyond it."""
  if devices <= chip.ici_domain or not chip.dcn_gbps:
    return chip.ici_gbps * 1e9 / 2
  return chip.dcn_gbps * 1e9


def estimate_step(chip: Chip, devices: int, executed: float, model: float, traffic: Traffic,
                  efficiency: float = 1.0, overlap: float = 1.0) -> StepEstimate:
  peak = chip.peak_bf16_flops * devices
  compute = executed / (peak * efficiency)
  hbm = traffic.weight_read / (chip.hbm_gbps * 1e9)
  comm = traffic.collective / ingress_bandwidth(chip, devices)
  busy = max(compute, hbm)
  step = busy + max(0.0, comm - overlap * busy)
  return StepEstimate(compute, hbm, comm, step, busy + comm, executed, model, peak)


# --- does it fit, and what would make it fit --------------------------------------------------

def capacity_bytes(chip: Chip, hbm_gib: float | None, usable: float) -> float:
  return (hbm_gib if hbm_gib is not None else chip.hbm_gib) * GIB * usable


@dataclasses.dataclass
class Candidate:
  knob: str                      # what to change, in words
  args: str                      # the planner arguments that make the change
  overrides: dict                # config overrides
  predicted_bytes: float | None  # None: no simple prediction (compile it: --search)


def candidates(setup: TrainSetup, mem: MemoryPlan, capacity: float) -> list[Candidate]:
  """Changes that should bring the per-device total under `capacity`, most promising first:
  those predicted to fit, then those without a prediction, then the rest. Predictions are
  rough: activations and temporaries scale with the per-device micro-batch, parameters and
  optimizer state with 1 / (their shards). A stronger remat policy and tensor parallelism
  (which splits heads and MLP but multiplies the rows per device) get no prediction."""
  cfg, config, mesh = setup.cfg, setup.config, setup.mesh
  out: list[Candidate] = []
  act = mem.temp + mem.batch + mem.unaliased_output
  fixed = mem.total - act
  b = setup.global_batch
  accum = int(cfg.optim.grad_accum_steps)
  rows = b // accum // setup.batch_shards  # per-device micro-batch
  if config.llm.remat_policy != "full" or config.vision.remat_policy != "full":
    out.append(Candidate('a stronger remat policy ("full": keep only each layer\'s input and '
                         'recompute the layer in the backward pass)', "--remat full",
                         remat_overrides("full"), None))
  k = 2
  while k <= rows:
    if rows % k == 0:
      pred = fixed + mem.batch + (mem.temp + mem.unaliased_output) / k
      out.append(Candidate(f"gradient accumulation over {k * accum} micro-batches (same global "
                           f"batch, {rows // k} row(s) per device at a time)",
                           f"--config.optim.grad_accum_steps={k * accum}",
                           {"optim.grad_accum_steps": k * accum}, pred))
      if pred <= capacity:
        break
    k *= 2
  shards = setup.batch_shards * accum
  k = 2
  while b // k >= shards and (b // k) % shards == 0:
    pred = fixed + act / k
    out.append(Candidate(f"a smaller global batch ({b // k}: {rows // k} row(s) per device)",
                         f"--batch {b // k}", {"train.batch_size": b // k}, pred))
    if pred <= capacity:
      break
    k *= 2
  data, fsdp, tensor = (int(mesh.shape[a]) for a in ("data", "fsdp", "tensor"))
  if data > 1:
    pred = mem.state / data + (mem.total - mem.state)
    out.append(Candidate(f"more FSDP (fold the data axis into fsdp: parameters and optimizer "
                         f"state split {data * fsdp} ways)", f"--mesh 1,{data * fsdp},{tensor}",
                         {"mesh_shape": (1, data * fsdp, tensor)}, pred))
  n = data * fsdp * tensor
  for t in (2, 4, 8):
    if t > tensor and n % t == 0 and t <= _max_tensor(config) and b % (n // t) == 0:
      out.append(Candidate(f"tensor parallelism over {t} devices (heads and MLP split {t} "
                           f"ways, gathered weights {t}x smaller)", f"--mesh 1,{n // t},{t}",
                           {"mesh_shape": (1, n // t, t)}, None))

  # Among those predicted to fit, prefer what keeps the training recipe (the global batch).
  keeps_recipe = ("--config.optim.grad_accum_steps", "--mesh", "--remat")

  def rank(c: Candidate):
    if c.predicted_bytes is None:
      return (1, 0, 0.0)
    fits = c.predicted_bytes <= capacity
    return (0 if fits else 2, 0 if c.args.startswith(keeps_recipe) else 1, c.predicted_bytes)
  return sorted(out, key=rank)


def _max_tensor(config: HawkConfig) -> int:
  """The largest tensor-axis size that divides every sharded width (heads, kv heads, MLP)."""
  widths = [config.llm.num_heads, config.llm.num_kv_heads, config.vision.num_heads,
            config.qformer.num_heads, config.video_qformer.num_heads]
  return math.gcd(*widths)


# --- generation -------------------------------------------------------------------------------

@dataclasses.dataclass
class GenerationPart:
  name: str
  memory: MemoryPlan | None
  flops: float
  weight_read: float      # bytes per device per call
  cache_read: float       # KV-cache bytes per device per call
  gather: float           # FSDP all-gather bytes received per device per call
  seconds: dict


def _sharding_of_logical(mesh, rules, names):
  return NamedSharding(mesh, nn.logical_to_mesh_axes(names, rules))


def plan_generation(setup: TrainSetup, batch: int, prompt_len: int, new_tokens: int,
                    temp_scale: float, compiler_options: dict | None = None
                    ) -> list[GenerationPart]:
  """Compile what one generation request runs: video encoding + prompt embedding, the LLM
  prefill of the prompt into a KV cache of prompt + `new_tokens` slots, and one decode step
  (hawk_jax.infer.generate's jitted functions)."""
  cfg, config, mesh, rules, model = setup.cfg, setup.config, setup.mesh, setup.rules, setup.model
  params = merge_params(setup.state["trainable"], setup.frozen)
  llm = Llama(config.llm)
  llm_params = params["llm"]
  batch_axes = ("activation_batch",)
  t, s = int(cfg.data.num_frames), int(cfg.data.image_size)

  def sds(shape, dtype, names):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=_sharding_of_logical(
        mesh, rules, names + (None,) * (len(shape) - len(names))))

  frames = sds((batch, t, s, s, 3), jnp.uint8, batch_axes)
  ids = sds((batch, prompt_len), jnp.int32, batch_axes)
  embeds = sds((batch, prompt_len, config.llm.hidden_size), jnp.dtype(config.llm.dtype),
               batch_axes)
  tokens = sds((batch,), jnp.int32, batch_axes)
  max_len = prompt_len + new_tokens
  cache_abs = jax.eval_shape(lambda: init_cache(config.llm, batch, max_len))
  cache_axes = cache_logical_axes()
  cache = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=_sharding_of_logical(
      mesh, rules, cache_axes[k])) for k, v in cache_abs.items()}

  def encode(p, f, m, input_ids, visual_mask):
    with nn.logical_axis_rules(rules):
      enc = model.apply({"params": p}, f, m, method=Hawk.encode_video)
      return model.apply({"params": p}, input_ids, visual_mask, enc["visual"],
                         method=Hawk.prompt_embeddings)

  def prefill(p, x, mask):
    with nn.logical_axis_rules(rules):
      return generate.prefill(llm, p, x, mask, max_len)

  def decode(p, tok, c):
    with nn.logical_axis_rules(rules):
      return generate.decode_step(llm, p, tok, c)

  llm_tensor_bytes = 0.0
  llm_gather = 0.0
  for _, leaf in _paths(llm_params):
    nbytes = math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
    tensor, other = _leaf_factors(mesh, leaf.sharding)
    llm_tensor_bytes += nbytes / tensor
    llm_gather += nbytes / tensor * (other - 1) / other
  all_bytes = all_gather = 0.0
  for _, leaf in _paths(params):
    nbytes = math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
    tensor, other = _leaf_factors(mesh, leaf.sharding)
    all_bytes += nbytes / tensor
    all_gather += nbytes / tensor * (other - 1) / other
  cache_bytes = per_device_bytes(cache)

  if compiler_options is None and mesh.devices.flat[0].platform == "cpu":
    compiler_options = PLAN_COMPILER_OPTIONS
  parts = []
  jobs = [("encode video + embed prompt", encode, (params, frames, frames, ids, ids),
           all_bytes - llm_tensor_bytes, 0.0, all_gather - llm_gather),
          ("prefill", prefill, (llm_params, embeds, ids), llm_tensor_bytes, 0.0, llm_gather),
          ("decode step", decode, (llm_params, tokens, cache), llm_tensor_bytes, cache_bytes,
           llm_gather)]
  for name, fn, args, weights, cache_read, gather in jobs:
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
      traced = jax.jit(fn).trace(*args)
      t1 = time.perf_counter()
      compiled = traced.lower().compile(compiler_options)
    t2 = time.perf_counter()
    ma = compiled.memory_analysis()
    argument = int(ma.argument_size_in_bytes)
    mem = MemoryPlan(0, 0, 0, 0, argument, argument, int(ma.output_size_in_bytes),
                     int(ma.alias_size_in_bytes), int(ma.temp_size_in_bytes), temp_scale)
    count = flops_lib.count_traced(traced)
    parts.append(GenerationPart(name, mem, count.total, weights, cache_read, gather,
                                {"trace": t1 - t0, "compile": t2 - t1}))
  return parts


def generation_time(part: GenerationPart, chip: Chip, devices: int, efficiency: float = 1.0,
                    overlap: float = 1.0) -> tuple[float, float, float, float]:
  """(seconds, compute s, hbm s, collective s) of one call under the same model as a step."""
  compute = part.flops / (chip.peak_bf16_flops * devices * efficiency)
  hbm = (part.weight_read + part.cache_read) / (chip.hbm_gbps * 1e9)
  comm = part.gather / ingress_bandwidth(chip, devices)
  busy = max(compute, hbm)
  return busy + max(0.0, comm - overlap * busy), compute, hbm, comm
