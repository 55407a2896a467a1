"""Plan a pod before booking it: compile the training step ahead of time for N devices and
report per-device memory, FLOPs, an estimated step time / MFU on a chip, and what to change
when it does not fit.

  python -m hawk_jax.plan --config configs/stage2_finetune.py:size=hawk7b --devices 64 \
      --chip v5e [--batch 64] [--mesh 1,-1,1] [--remat full] [--config.x=...]

N fake CPU devices stand in for the slice (set here, before JAX starts a backend); nothing
is allocated: parameters, optimizer state and batch are abstract arrays with their shardings
(hawk_jax.plan.estimate). With libtpu installed (`pip install "libtpu==0.0.42.*"`, the version
jax[tpu]==0.10.2 pins), `--tpu_topology v5e:8x8` compiles for the real TPU slice instead
(jax.experimental.topologies: the TPU compiler, on this CPU), and the memory printed is what the
TPU compiler assigns, tile padding included; without libtpu the flag falls back to fake devices.
A topology libtpu cannot describe is an error, not a fallback.

Options beyond the usual: --hbm_gib (override the chip's memory), --usable (fraction of HBM
the step may use, default 0.9), --temp_scale (accelerator/CPU temporaries ratio), --efficiency
(achieved fraction of peak FLOP/s, default 1: a roofline), --overlap (fraction of collective time
hidden behind compute), --search K (when it does not fit, compile up to K alternatives),
--no_generate, --gen_batch, --json PATH (every number, machine-readable).

The last line is `fits=<true|false> per_device_gib=<float> step_tflop=<float>`; the exit status
is 0 when the step fits, 3 when it does not, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import resource
import sys
import time

import jax

from hawk_jax import compile_cache, console
from hawk_jax import flops as flops_lib
from hawk_jax.hardware import chip as chip_spec
from hawk_jax.models.common import remat_names
from hawk_jax.plan import estimate as planner
from hawk_jax.stage_config import ConfigError, load_config, split_config_args

EXIT_DOES_NOT_FIT = 3


def _parser() -> argparse.ArgumentParser:
  p = console.parser(
      "python -m hawk_jax.plan",
      "Ahead-of-time compile of the HAWK train step for N devices: per-device memory, FLOPs, "
      "step time and MFU estimates, and what would make it fit.",
      epilog="Config overrides: --config.KEY=VALUE (e.g. --config.data.num_frames=16).")
  p.add_argument("--config", required=True, help="stage config file[:size=..,variant=..]")
  p.add_argument("--devices", type=int, help="number of devices (fake CPU devices stand in)")
  p.add_argument("--chip", default=None, help="chip for memory and time (default v5e, or the "
                 "--tpu_topology's)")
  p.add_argument("--batch", type=int, help="global batch (train.batch_size)")
  p.add_argument("--mesh", help="data,fsdp,tensor (one may be -1), e.g. 1,-1,1")
  p.add_argument("--remat", help="remat policy of the ViT and the LLM: none, full, dots, ...")
  p.add_argument("--hbm_gib", type=float, help="override the chip's memory per device (GiB)")
  p.add_argument("--usable", type=float, default=0.9,
                 help="fraction of device memory the step may use (default 0.9)")
  p.add_argument("--temp_scale", type=float, default=None,
                 help="accelerator temporaries / CPU-compiled temporaries (default 0.5 on fake "
                      "CPU devices, 1 for a TPU topology)")
  p.add_argument("--efficiency", type=float, default=1.0,
                 help="achieved fraction of peak FLOP/s (default 1.0: roofline)")
  p.add_argument("--overlap", type=float, default=1.0,
                 help="fraction of collective time hidden behind compute (default 1.0)")
  p.add_argument("--search", type=int, default=3,
                 help="when it does not fit, compile up to this many alternatives (default 3)")
  p.add_argument("--no_generate", action="store_true", help="skip the generation plan")
  p.add_argument("--gen_batch", type=int, help="generation batch (default: the train batch)")
  p.add_argument("--tpu_topology", help="e.g. v5e:8x8 or v5p:4x4x4 (needs libtpu)")
  p.add_argument("--json", help="also write every number to this JSON file")
  return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
  """The planner's own flags, and the `--config.KEY=VALUE` overrides (hawk_jax.stage_config)."""
  try:
    rest, spec, overrides = split_config_args(argv)
  except ConfigError as e:
    raise SystemExit(str(e)) from None
  if spec is not None:
    rest = ["--config", spec] + rest
  return _parser().parse_args(rest), overrides


def topology_size(name: str) -> int:
  """"v5e:8x8" -> 64 chips."""
  m = re.fullmatch(r"[\w-]+:(\d+(?:x\d+)*)", name)
  if not m:
    raise SystemExit(f"--tpu_topology {name!r}: expected e.g. v5e:8x8 or v5p:4x4x4")
  return math.prod(int(d) for d in m.group(1).split("x"))


def set_device_env(devices: int) -> None:
  """`devices` fake CPU devices stand in for the slice; must run before JAX starts a backend."""
  try:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", devices)
  except RuntimeError:  # a backend is already running (the planner was imported, not run)
    if jax.device_count() != devices:
      raise RuntimeError(f"JAX already started with {jax.device_count()} devices; the planner "
                         f"needs {devices}: run it as its own process "
                         f"(python -m hawk_jax.plan)") from None


def _mem(n: float) -> str:
  """Bytes of device memory, binary units, right-aligned."""
  if n >= 0.1 * (1 << 30):
    return f"{n / (1 << 30):8.3f} GiB"
  if n >= 0.1 * (1 << 20):
    return f"{n / (1 << 20):8.2f} MiB"
  return f"{n / (1 << 10):8.2f} KiB"


def _traffic(n: float) -> str:
  """Bytes moved, decimal units."""
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if n >= 0.1 * scale:
      return f"{n / scale:.1f} {unit}"
  return f"{n:.0f} B"


def _tflop(n: float) -> str:
  """FLOPs in TFLOP, or GFLOP when that would print as zero."""
  return f"{n / 1e12:,.1f} TFLOP" if n >= 1e11 else f"{n / 1e9:,.2f} GFLOP"


def _seconds(s: float) -> str:
  if s < 1e-3:
    return f"{s * 1e6:.1f} us"
  return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main(argv: list[str] | None = None) -> int:
  args, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
  console.setup_logging(args.log_level)
  if args.tpu_topology:
    n = topology_size(args.tpu_topology)
    if args.devices and args.devices != n:
      raise SystemExit(f"--devices {args.devices} but --tpu_topology {args.tpu_topology} has "
                       f"{n} chips")
    args.devices = n
    args.chip = args.chip or args.tpu_topology.split(":")[0]
  if not args.devices or args.devices < 1:
    raise SystemExit("--devices N (N >= 1) is required (or --tpu_topology)")
  args.chip = args.chip or "v5e"
  set_device_env(args.devices)
  return _run(args, overrides)


def _load(args, overrides):
  try:
    cfg = load_config(args.config, overrides)
  except ConfigError as e:
    raise SystemExit(str(e)) from None
  if args.batch is not None:
    cfg.train.batch_size = args.batch
  if args.mesh:
    try:
      mesh = tuple(int(x) for x in args.mesh.split(","))
    except ValueError:
      raise SystemExit(f"--mesh {args.mesh!r}: expected data,fsdp,tensor integers") from None
    if len(mesh) != 3:
      raise SystemExit(f"--mesh {args.mesh!r}: expected three sizes (data,fsdp,tensor)")
    cfg.mesh_shape = mesh
  if args.remat:
    if args.remat not in remat_names():
      raise SystemExit(f"--remat {args.remat!r}: known policies {remat_names()}")
    cfg.model.vision.remat_policy = args.remat
    cfg.model.llm.remat_policy = args.remat
  return cfg


def _devices(args, out):
  """The TPU topology's devices when libtpu is installed, else the fake CPU devices."""
  if args.tpu_topology:
    if importlib.util.find_spec("libtpu") is None:
      out(f"note: --tpu_topology {args.tpu_topology}: libtpu is not installed (pip install "
          f"\"libtpu==0.0.42.*\"); compiling for {args.devices} fake CPU devices instead")
    else:
      from jax.experimental import topologies
      try:
        topo = topologies.get_topology_desc(args.tpu_topology, "tpu")
      except Exception as e:  # noqa: BLE001 — libtpu's own words name what is wrong
        # With libtpu there to compile for the slice asked for, a silent CPU plan would
        # answer another question.
        raise SystemExit(f"--tpu_topology {args.tpu_topology}: libtpu cannot describe it: "
                         f"{type(e).__name__}: {e}") from None
      if len(topo.devices) != args.devices:
        # libtpu describes a v4 slice with one device per TensorCore (two per chip), and
        # jax.make_mesh builds TPU meshes of one device per chip ("megacore") only.
        raise SystemExit(f"--tpu_topology {args.tpu_topology}: libtpu describes "
                         f"{len(topo.devices)} devices ({topo.devices[0].device_kind}) on "
                         f"{args.devices} chips, and JAX meshes need one device per chip; plan "
                         f"it with fake devices: --devices {args.devices} --chip {args.chip}")
      return list(topo.devices), True
  return jax.devices()[:args.devices], False


def _run(args, overrides) -> int:

  out = print
  chip = chip_spec(args.chip)
  cfg = _load(args, overrides)
  compile_cache.enable()
  devices, on_tpu = _devices(args, out)
  capacity = planner.capacity_bytes(chip, args.hbm_gib, args.usable)
  t_start = time.perf_counter()

  setup = planner.train_setup(cfg, devices=devices)
  on_cpu = setup.mesh.devices.flat[0].platform == "cpu"
  temp_scale = args.temp_scale if args.temp_scale is not None else (
      planner.default_temp_scale(setup.config, on_cpu=on_cpu))
  comp = planner.compile_train_step(setup)
  mem = planner.memory_plan(setup, comp.compiled, temp_scale)
  executed = flops_lib.count_traced(comp.traced)
  policies = {setup.config.llm.remat_policy, setup.config.vision.remat_policy}
  model = executed if policies == {"none"} else planner.model_flops(cfg, devices)
  traffic = planner.step_traffic(setup)
  est = planner.estimate_step(chip, setup.num_devices, executed.total, model.total, traffic,
                              args.efficiency, args.overlap)
  fits = mem.total <= capacity
  report = {"config": args.config, "overrides": dict(overrides), "devices": setup.num_devices,
            "chip": args.chip, "mesh": dict(setup.mesh.shape), "global_batch": setup.global_batch,
            "compiled_for": "tpu topology" if on_tpu else setup.mesh.devices.flat[0].platform,
            "tpu_topology": args.tpu_topology if on_tpu else None,
            "seconds": comp.seconds, "memory": _memory_json(mem), "capacity_bytes": capacity,
            "fits": fits, "flops": {"executed": executed.total, "model": model.total,
                                    "transcendental": executed.transcendental},
            "traffic": {"weight_read": traffic.weight_read, "gather": traffic.gather,
                        "grad_sync": traffic.grad_sync, "tensor_act": traffic.tensor_act},
            "estimate": {"compute_s": est.compute_s, "hbm_s": est.hbm_s,
                         "collective_s": est.collective_s, "step_s": est.step_s,
                         "serial_s": est.serial_s, "mfu": est.mfu, "mfu_serial": est.mfu_serial}}

  _print_header(out, args, cfg, setup, chip, on_tpu, comp)
  _print_memory(out, setup, mem, capacity, chip, args, fits, on_tpu)
  _print_flops_and_time(out, chip, setup, executed, model, traffic, est, args)
  if not fits:
    report["alternatives"] = _print_alternatives(out, setup, mem, capacity, args, devices,
                                                 temp_scale)
  if not args.no_generate:
    report["generation"] = _print_generation(out, setup, chip, args, temp_scale)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
  out(f"planner: {time.perf_counter() - t_start:.1f} s, peak host RSS {rss:.2f} GB")
  report["planner_seconds"] = time.perf_counter() - t_start
  report["peak_rss_gb"] = rss
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2, default=str)
  out(f"fits={'true' if fits else 'false'} per_device_gib={mem.total / (1 << 30):.4g} "
      f"step_tflop={executed.total / 1e12:.6g}")
  return 0 if fits else EXIT_DOES_NOT_FIT


def _memory_json(mem) -> dict:
  return {"trainable": mem.trainable, "frozen": mem.frozen, "opt_state": mem.opt_state,
          "batch": mem.batch, "other_args": mem.other_args, "argument": mem.argument,
          "unaliased_output": mem.unaliased_output, "temp_compiled": mem.temp_compiled,
          "temp_scale": mem.temp_scale, "temp": mem.temp, "total": mem.total,
          "total_compiled": mem.total_compiled}


def _print_header(out, args, cfg, setup, chip, on_tpu, comp):
  c = setup.config
  mesh = " ".join(f"{k}={v}" for k, v in setup.mesh.shape.items())
  platform = setup.mesh.devices.flat[0].platform
  where = (f"TPU topology {args.tpu_topology}" if on_tpu else
           f"{setup.num_devices} fake CPU devices" if platform == "cpu" else
           f"{setup.num_devices} {platform} device(s)")
  rows = setup.global_batch // setup.batch_shards
  out(f"== plan: {args.config} (stage {cfg.stage}, {cfg.size}, variant {cfg.variant})")
  out(f"devices  {setup.num_devices} x {chip.name}, compiled for {where}; mesh {mesh}")
  out(f"batch    global {setup.global_batch} ({rows} per device, grad accumulation "
      f"{cfg.optim.grad_accum_steps}); {cfg.data.num_frames} frames of {cfg.data.image_size} px, "
      f"text {cfg.data.max_len}" + (f", motion text {cfg.data.ml_max_len}"
                                    if cfg.loss.ml_source == "motion_text" else ""))
  out(f"model    remat vit={c.vision.remat_policy} llm={c.llm.remat_policy}; scan layers "
      f"vit={c.vision.scan_layers} llm={c.llm.scan_layers}; frozen {c.llm.param_dtype}, "
      f"compute {c.llm.dtype}")
  if cfg.data.get("frame_tokens_dir"):
    out("note     data.frame_tokens_dir is set; this plans the step from pixels (the ViTs run)")
  s = comp.seconds
  out(f"compile  trace {s['trace']:.1f} s, lower {s['lower']:.1f} s, compile {s['compile']:.1f} s")


def _print_memory(out, setup, mem, capacity, chip, args, fits, on_tpu=False):
  n_train = planner.num_params(setup.state["trainable"])
  n_frozen = planner.num_params(setup.frozen)
  hbm = args.hbm_gib if args.hbm_gib is not None else chip.hbm_gib
  out("per-device memory")
  out(f"  trainable parameters    {_mem(mem.trainable)}   {n_train:,} parameters")
  out(f"  frozen parameters       {_mem(mem.frozen)}   {n_frozen:,} parameters")
  out(f"  optimizer state         {_mem(mem.opt_state)}")
  out(f"  batch                   {_mem(mem.batch)}")
  if mem.other_args:
    # The TPU compiler stores arrays in tiles ((8, 128) for bf16, (32, 128) for uint8): a
    # [39, 1408] bf16 stack takes 40 rows, a frame batch's 224-pixel rows take 256. The
    # shardings above count logical bytes only, so on a TPU the difference is that padding.
    label = "tile padding/other args" if on_tpu else "other arguments        "
    out(f"  {label} {_mem(mem.other_args)}")
  if mem.unaliased_output:
    out(f"  outputs (not donated)   {_mem(mem.unaliased_output)}")
  note = ("" if mem.temp_scale == 1 else
          f"   compiled {_mem(mem.temp_compiled).strip()} x {mem.temp_scale:g}: a CPU compile "
          f"runs bf16 matmuls in f32")
  out(f"  activations/temporaries {_mem(mem.temp)}{note}")
  verdict = "fits" if fits else "DOES NOT FIT"
  out(f"  total                   {_mem(mem.total)}   of {hbm:g} GiB, {args.usable:.0%} usable "
      f"= {_mem(capacity).strip()} -> {verdict}")
  if mem.temp_scale != 1:
    raw_fit = "fits" if mem.total_compiled <= capacity else "does not fit"
    out(f"  (uncorrected CPU figure {_mem(mem.total_compiled).strip()} {raw_fit})")


def _print_flops_and_time(out, chip, setup, executed, model, traffic, est, args):
  n = setup.num_devices
  out("FLOPs per step (global, counted on the traced program, scanned layers x their count)")
  out(f"  executed {_tflop(executed.total)} (matmul {_tflop(executed.matmul)}), remat "
      f"recomputation included; model {_tflop(model.total)} (without it)")
  bw = planner.ingress_bandwidth(chip, n)
  out(f"time model on {chip.name}: {chip.peak_bf16_flops / 1e12:g} TFLOP/s bf16 x "
      f"{args.efficiency:g} efficiency, HBM {chip.hbm_gbps:g} GB/s, collectives "
      f"{bw / 1e9:g} GB/s in per device, overlap {args.overlap:g}")
  out(f"  compute      {_seconds(est.compute_s)}")
  out(f"  HBM weights  {_seconds(est.hbm_s)}   ({_traffic(traffic.weight_read)} read per device)")
  out(f"  collectives  {_seconds(est.collective_s)}   (FSDP all-gathers "
      f"{_traffic(traffic.gather)}, gradients {_traffic(traffic.grad_sync)}, tensor-parallel "
      f"activations {_traffic(traffic.tensor_act)} per device)")
  bound = "compute" if est.compute_s >= max(est.hbm_s, est.collective_s) else (
      "HBM" if est.hbm_s >= est.collective_s else "collectives")
  tokens = setup.global_batch * setup.cfg.data.max_len
  out(f"  step         {_seconds(est.step_s)} ({bound}-bound): estimated MFU {est.mfu:.1%}, "
      f"{setup.global_batch / est.step_s:,.1f} samples/s, {tokens / est.step_s:,.0f} tokens/s")
  out(f"  no overlap   {_seconds(est.serial_s)}: MFU {est.mfu_serial:.1%}")
  if args.efficiency == 1.0:
    for name, eff in planner.MEASURED_EFFICIENCY.items():
      cal = planner.estimate_step(chip, n, est.executed_flops, est.model_flops, traffic, eff,
                                  args.overlap)
      out(f"  at the efficiency measured on one {name.upper()} ({eff:g}): step "
          f"{_seconds(cal.step_s)}, MFU {cal.mfu:.1%} (--efficiency to set another)")


def _print_alternatives(out, setup, mem, capacity, args, devices, temp_scale) -> list:
  over = mem.total - capacity
  big = max([("parameters + optimizer state", mem.state),
             ("activations/temporaries", mem.temp), ("batch", mem.batch)], key=lambda x: x[1])
  out(f"does not fit: {_mem(over).strip()} over; the largest part is {big[0]} "
      f"({_mem(big[1]).strip()} per device)")
  cands = planner.candidates(setup, mem, capacity)
  if not cands:
    out("  no knob left on this mesh: use more devices or a chip with more memory")
    return []
  out("knobs, most promising first (predicted per-device total, rough; ? = compile to see):")
  for c in cands:
    if c.predicted_bytes is None:
      pred, mark = f"{'?':>12}", "try it"
    else:
      pred = _mem(c.predicted_bytes)
      mark = "fits" if c.predicted_bytes <= capacity else "not enough"
    out(f"  {c.args:<40} {pred}  ({mark}) {c.knob}")
  results = []
  tried = 0
  for c in cands:
    if tried >= args.search:
      break
    tried += 1
    try:
      cfg2 = planner.with_overrides(setup.cfg, c.overrides)
      s2 = planner.train_setup(cfg2, devices=devices)
      comp2 = planner.compile_train_step(s2)
      m2 = planner.memory_plan(s2, comp2.compiled, temp_scale)
    except ValueError as e:
      out(f"  tried {c.args}: {e}")
      continue
    ok = m2.total <= capacity
    results.append({"args": c.args, "knob": c.knob, "per_device_bytes": m2.total, "fits": ok})
    out(f"  tried {c.args}: {_mem(m2.total).strip()} per device -> "
        f"{'fits' if ok else 'does not fit'}")
    if ok:
      out(f"suggestion: {c.args}  ({c.knob})")
      break
  return results


def _print_generation(out, setup, chip, args, temp_scale) -> list:
  cfg = setup.cfg
  batch = args.gen_batch or setup.global_batch
  prompt, new = int(cfg.data.max_len), int(cfg.generate.max_new_tokens)
  if batch % setup.batch_shards:
    out(f"generation: skipped (batch {batch} does not split over {setup.batch_shards} devices)")
    return []
  try:
    parts = planner.plan_generation(setup, batch, prompt, new, temp_scale)
  except Exception as e:  # the generation API is another module's; the train plan stands
    out(f"generation: skipped ({type(e).__name__}: {e})")
    return []
  out(f"generation (batch {batch}, prompt {prompt} + {new} new tokens, KV cache "
      f"{cfg.model.llm.dtype})")
  results = []
  n = setup.num_devices
  for p in parts:
    t, compute, hbm, comm = planner.generation_time(p, chip, n, args.efficiency, args.overlap)
    out(f"  {p.name:<28} {_mem(p.memory.total).strip()} per device "
        f"(args {_mem(p.memory.argument).strip()}, temp {_mem(p.memory.temp).strip()}), "
        f"{_tflop(p.flops)}, ~{_seconds(t)} (compute {_seconds(compute)}, HBM "
        f"{_seconds(hbm)}, gathers {_seconds(comm)})")
    results.append({"name": p.name, "per_device_bytes": p.memory.total, "flops": p.flops,
                    "seconds": t, "compute_s": compute, "hbm_s": hbm, "collective_s": comm})
  decode = results[-1]
  out(f"  decode: ~{batch / decode['seconds']:,.0f} tokens/s over the batch; "
      + ("FSDP all-gathers of the LLM dominate each token: for serving use a mesh without fsdp "
         "(replicated or tensor-parallel weights)" if decode["collective_s"] > max(
             decode["compute_s"], decode["hbm_s"]) else "weights and cache stream from HBM"))
  return results


if __name__ == "__main__":
  sys.exit(main())
