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

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from hawk_jax import flops as flops_lib
from hawk_jax.hardware import chip as chip_spec
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.hawk import Hawk, split_params
from hawk_jax.sharding import DEFAULT_RULES, batch_sharding, make_mesh, replicated
from hawk_jax.train.init import param_shardings, random_init
from hawk_jax.train.optim import make_optimizer
from hawk_jax.train.step import batch_keys, make_train_step


def _optim_cfg():
  return dict(init_lr=1e-6, peak_lr=1e-5, end_lr=1e-6, warmup_steps=10, b1=0.9, b2=0.999,
              weight_decay=0.05, grad_clip_norm=0.0)


def random_batch(config: HawkConfig, batch: int, frames: int, text_len: int, seed: int = 0,
                 frame_tokens: bool = False):
  rng = np.random.default_rng(seed)
  s = config.vision.image_size
  nv, nm = config.num_visual_tokens, config.num_visual_tokens_per_branch
  length = nv + text_len
  ids = rng.integers(3, config.llm.vocab_size, size=(batch, length)).astype(np.int32)
  vm = np.zeros((batch, length), np.int32)
  vm[:, 5:5 + nv] = 1
  labels = np.where(np.arange(length)[None] >= 5 + nv + text_len // 2, ids, -100).astype(np.int32)
  ml_len = 1 + nm + 32
  ml_ids = rng.integers(3, config.llm.vocab_size, size=(batch, ml_len)).astype(np.int32)
  ml_vm = np.zeros((batch, ml_len), np.int32)
  ml_vm[:, 1:1 + nm] = 1
  ml_labels = np.where(np.arange(ml_len)[None] > nm, ml_ids, -100).astype(np.int32)
  fr = rng.integers(0, 256, size=(batch, frames, s, s, 3), dtype=np.uint8)
  mo = fr // 2
  if frame_tokens:  # cached frozen-tower output instead of pixels
    shape = (batch, frames, config.qformer.num_query_tokens, config.qformer.hidden_size)
    fr, mo = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
  return {"frames": fr, "motion": mo, "input_ids": ids,
          "attention_mask": np.ones_like(ids), "visual_mask": vm, "labels": labels,
          "ml_input_ids": ml_ids, "ml_attention_mask": np.ones_like(ml_ids),
          "ml_visual_mask": ml_vm, "ml_labels": ml_labels}


def build(config: HawkConfig, mesh, batch_np, loss_cfg, seed=0):
  model = Hawk(config)
  rules = tuple(DEFAULT_RULES)
  with jax.set_mesh(mesh):
    abstract, shardings = param_shardings(model, mesh, rules)
    params = random_init(model, seed, shardings)
  trainable, frozen = split_params(params, config)
  train_shard, frozen_shard = split_params(shardings, config)
  tx, schedule = make_optimizer(_optim_cfg(), 1000)
  import optax
  opt_shard = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, trainable),
                                    train_shard, transform_non_params=lambda _: replicated(mesh))
  opt_state = jax.jit(tx.init, out_shardings=opt_shard)(trainable)
  state = {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "opt_state": opt_state}
  state_shard = {"step": replicated(mesh), "trainable": train_shard, "opt_state": opt_shard}
  keys = batch_keys(loss_cfg["ml_source"] == "motion_text")
  b_shard = {k: batch_sharding(mesh, batch_np[k].ndim) for k in keys}
  batch = {k: jax.device_put(batch_np[k], b_shard[k]) for k in keys}
  step = make_train_step(model, tx, schedule, loss_cfg, seed, 1, rules)
  jitted = jax.jit(step, in_shardings=(state_shard, frozen_shard, b_shard),
                   out_shardings=(state_shard, replicated(mesh)), donate_argnums=(0,))
  return jitted, state, frozen, batch


def with_dtype(config: HawkConfig, dtype: str) -> HawkConfig:
  """Compute dtype everywhere; frozen towers stored in it too, trainable params in f32."""
  frozen = dict(dtype=dtype, param_dtype=dtype)
  return dataclasses.replace(
      config, vision=dataclasses.replace(config.vision, **frozen),
      qformer=dataclasses.replace(config.qformer, **frozen),
      video_qformer=dataclasses.replace(config.video_qformer, dtype=dtype, param_dtype="float32"),
      llm=dataclasses.replace(config.llm, **frozen))


def run(size: str, variant: str, batch: int, frames: int, text_len: int, dtype: str,
        mesh_shape, steps: int, chip: str, remat: str | None = None,
        frame_tokens: bool = False, attention: str | None = None) -> dict:
  from configs.common import model_for
  config = with_dtype(model_for(size, variant), dtype)
  if attention:
    config = dataclasses.replace(config, **{
        tower: dataclasses.replace(getattr(config, tower), attention_impl=attention)
        for tower in ("vision", "qformer", "video_qformer", "llm")})
  if remat:
    config = dataclasses.replace(
        config, vision=dataclasses.replace(config.vision, remat_policy=remat),
        llm=dataclasses.replace(config.llm, remat_policy=remat))
  loss_cfg = {"w_vl": 1.0, "w_ml": 0.1, "w_mv": 0.1, "ml_source": "motion_text"}
  mesh = make_mesh(mesh_shape)
  batch_np = random_batch(config, batch, frames, text_len, frame_tokens=frame_tokens)
  t0 = time.perf_counter()
  jitted, state, frozen, b = build(config, mesh, batch_np, loss_cfg)
  with jax.set_mesh(mesh):
    traced = jitted.trace(state, frozen, b)
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


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", default="small")
  p.add_argument("--variant", default="paper")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--text_len", type=int, default=64)
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  p.add_argument("--mesh", default="1,1,1")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--remat", default=None)
  p.add_argument("--chip", default="cpu")
  p.add_argument("--frame_tokens", action="store_true",
                 help="cached frozen-tower output in place of pixels (no ViT in the step)")
  p.add_argument("--attention", default=None, choices=["auto", "einsum", "xla", "cudnn"],
                 help="attention_impl of every tower (default: the size's, 'auto')")
  a = p.parse_args()
  r = run(a.size, a.variant, a.batch, a.frames, a.text_len, a.dtype,
          tuple(int(x) for x in a.mesh.split(",")), a.steps, a.chip, a.remat,
          frame_tokens=a.frame_tokens, attention=a.attention)
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
  main()
