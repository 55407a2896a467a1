"""Train-step throughput of the JAX HAWK on whatever devices are present (prints figures).

  python -m hawk_jax.bench.train_step --size small --batch 2 --frames 8 --text_len 64 \
      [--variant paper] [--dtype bfloat16|float32] [--mesh 1,1,1] [--steps 10] [--chip cpu] \
      [--frame_tokens] [--attention auto|einsum|xla|cudnn]

Random parameters and a random batch of the stage-2 shapes (the full loss: L_VL, L_ML, L_MV);
the step is the one training uses (jit, shardings, donated state). FLOPs are counted on the
step's jaxpr (hawk_jax/flops.py: scan bodies times their length, recomputation included; equal
to XLA's count of an unrolled lowering within 3%, and available on GPUs, where XLA's is not),
so achieved FLOP/s and MFU against the chip's peak are printed beside the wall-clock figures.
--frame_tokens feeds the frozen towers' output [B, T, Qi, Hq] in place of pixels (training
from a tower cache, hawk_jax.train.write_tower_cache), so the step runs no ViT.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np

from configs import stage2_finetune
from hawk_jax import console
from hawk_jax import flops as flops_lib
from hawk_jax.hardware import chip as chip_spec
from hawk_jax.models.hawk import split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import random_params
from hawk_jax.train.state import train_setup

# The motion-language pass's text tokens after [BOS][motion tokens].
ML_TEXT_LEN = 32


def bench_config(size: str, variant: str = "paper", batch: int = 2, frames: int = 8,
                 text_len: int = 64, dtype: str = "bfloat16", mesh_shape=(1, 1, 1),
                 remat: str | None = None, frame_tokens: bool = False,
                 attention: str | None = None) -> ml_collections.ConfigDict:
  """The stage-2 config the benchmark steps: the size's model in `dtype`
  (HawkConfig.with_dtype), the full loss (L_VL + 0.1 L_ML + 0.1 L_MV, whatever the variant),
  `frames` frames and `text_len` text tokens after the visual ones."""
  cfg = stage2_finetune.get_config(f"size={size},variant={variant}")
  config = HawkConfig.from_stage_config(cfg).with_dtype(dtype)
  if attention:
    config = dataclasses.replace(config, **{
        tower: dataclasses.replace(getattr(config, tower), attention_impl=attention)
        for tower in ("vision", "qformer", "video_qformer", "llm")})
  if remat:
    config = dataclasses.replace(
        config, vision=dataclasses.replace(config.vision, remat_policy=remat),
        llm=dataclasses.replace(config.llm, remat_policy=remat))
  cfg.model = ml_collections.ConfigDict(config.to_dict())
  cfg.seed = 0
  cfg.mesh_shape = tuple(mesh_shape)
  cfg.data.num_frames = frames
  cfg.data.max_len = config.num_visual_tokens + text_len
  cfg.data.ml_max_len = 1 + config.num_visual_tokens_per_branch + ML_TEXT_LEN
  # Any non-empty path: the step then takes frame tokens (nothing is read from it here).
  cfg.data.frame_tokens_dir = "<random frame tokens>" if frame_tokens else ""
  cfg.train.batch_size = batch
  cfg.train.num_steps = 1000
  cfg.loss.ml_source = "motion_text"
  cfg.loss.w_vl, cfg.loss.w_ml, cfg.loss.w_mv = 1.0, 0.1, 0.1
  cfg.optim.update(init_lr=1e-6, peak_lr=1e-5, end_lr=1e-6, warmup_steps=10, b1=0.9, b2=0.999,
                   weight_decay=0.05, grad_clip_norm=0.0, grad_accum_steps=1)
  return cfg


def random_batch(spec: dict, config: HawkConfig, seed: int = 0) -> dict[str, np.ndarray]:
  """A random global batch of the layout `spec` (hawk_jax.train.data.batch_spec): random token
  ids, the visual placeholders after 5 tokens, the second half of the text supervised; pixels
  uniform (motion = frames // 2) or, from a tower cache, normal frame tokens."""
  rng = np.random.default_rng(seed)
  batch, length = spec["input_ids"].shape
  nv, nm = config.num_visual_tokens, config.num_visual_tokens_per_branch
  text_len = length - nv
  ids = rng.integers(3, config.llm.vocab_size, size=(batch, length)).astype(np.int32)
  vm = np.zeros((batch, length), np.int32)
  vm[:, 5:5 + nv] = 1
  labels = np.where(np.arange(length)[None] >= 5 + nv + text_len // 2, ids, -100).astype(np.int32)
  out = {"input_ids": ids, "attention_mask": np.ones_like(ids), "visual_mask": vm,
         "labels": labels}
  if "ml_input_ids" in spec:
    ml_len = spec["ml_input_ids"].shape[1]
    ml_ids = rng.integers(3, config.llm.vocab_size, size=(batch, ml_len)).astype(np.int32)
    ml_vm = np.zeros((batch, ml_len), np.int32)
    ml_vm[:, 1:1 + nm] = 1
    out.update(ml_input_ids=ml_ids, ml_attention_mask=np.ones_like(ml_ids), ml_visual_mask=ml_vm,
               ml_labels=np.where(np.arange(ml_len)[None] > nm, ml_ids, -100).astype(np.int32))
  video = spec["frames"]
  if video.dtype == np.uint8:
    out["frames"] = rng.integers(0, 256, size=video.shape, dtype=np.uint8)
    out["motion"] = out["frames"] // 2
  else:  # cached frozen-tower output instead of pixels
    out["frames"], out["motion"] = (rng.normal(size=video.shape).astype(np.float32)
                                    for _ in range(2))
  return out


def build(cfg: ml_collections.ConfigDict, devices=None, seed: int = 0):
  """(setup, state, frozen, batch, batch_np): the train step of `cfg` (hawk_jax.train.state,
  the program training runs) with random parameters on its mesh and a random batch there."""
  setup = train_setup(cfg, devices=devices)
  with jax.set_mesh(setup.mesh):
    params = random_params(setup.config, seed, setup.param_shardings)
  trainable, frozen = split_params(params, setup.config)
  batch_np = random_batch(setup.batch, setup.config, seed)
  batch = {k: jax.device_put(v, setup.batch_shardings[k]) for k, v in batch_np.items()}
  return setup, setup.init_state(trainable), frozen, batch, batch_np


def run(size: str, variant: str, batch: int, frames: int, text_len: int, dtype: str,
        mesh_shape, steps: int, chip: str, remat: str | None = None,
        frame_tokens: bool = False, attention: str | None = None) -> dict:
  cfg = bench_config(size, variant, batch, frames, text_len, dtype, mesh_shape, remat,
                     frame_tokens, attention)
  t0 = time.perf_counter()
  setup, state, frozen, b, batch_np = build(cfg)
  mesh = setup.mesh
  with jax.set_mesh(mesh):
    traced = setup.jit_step.trace(state, frozen, b)
    compiled = traced.lower().compile()
  compile_s = time.perf_counter() - t0
  # Counted on the jaxpr (scan bodies x their length, remat recomputation included): XLA's
  # cost analysis returns nothing on GPUs and counts a scan body once.
  flops = flops_lib.count_traced(traced).total
  state, m = compiled(state, frozen, b)  # warm-up
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, frozen, b)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t0) / steps
  peak = (chip_spec(chip).peak_f32_flops if dtype == "float32" and chip_spec(chip).peak_f32_flops
          else chip_spec(chip).peak_bf16_flops) * mesh.size
  return {"size": size, "dtype": dtype, "batch": batch, "frames": frames,
          "input": "frame_tokens" if frame_tokens else "pixels",
          "attention": attention or "auto",
          "tokens": batch_np["input_ids"].shape[1], "devices": mesh.size,
          "device": jax.devices()[0].device_kind, "step_s": dt, "samples_per_s": batch / dt,
          "compile_s": compile_s, "step_tflop": flops / 1e12,
          "tflops_per_s": flops / dt / 1e12, "mfu": flops / dt / peak if flops else 0.0,
          "loss": float(m["loss"])}


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m hawk_jax.bench.train_step", __doc__)
  p.add_argument("--size", default="small", help="model size (configs/common.py SIZES)")
  p.add_argument("--variant", default="paper", help="paper or released")
  p.add_argument("--batch", type=int, default=2, help="global batch")
  p.add_argument("--frames", type=int, default=8, help="frames per video")
  p.add_argument("--text_len", type=int, default=64, help="text tokens per example")
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                 help="compute dtype")
  p.add_argument("--mesh", default="1,1,1", help="data,fsdp,tensor")
  p.add_argument("--steps", type=int, default=5, help="timed steps")
  p.add_argument("--remat", default=None, help="remat policy (default: the size's)")
  p.add_argument("--chip", default="cpu", help="chip the MFU is rated against")
  p.add_argument("--frame_tokens", action="store_true",
                 help="cached frozen-tower output in place of pixels (no ViT in the step)")
  p.add_argument("--attention", default=None, choices=["auto", "einsum", "xla", "cudnn"],
                 help="attention_impl of every tower (default: the size's, 'auto')")
  a = p.parse_args(argv)
  console.setup_logging(a.log_level)
  r = run(a.size, a.variant, a.batch, a.frames, a.text_len, a.dtype,
          tuple(int(x) for x in a.mesh.split(",")), a.steps, a.chip, a.remat,
          frame_tokens=a.frame_tokens, attention=a.attention)
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
