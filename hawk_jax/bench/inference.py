"""Inference timings: load, video encoding, prefill and decoding speed at several batch sizes.

  python -m hawk_jax.bench.inference --checkpoint runs/stage2 --video clip.mp4
  python -m hawk_jax.bench.inference --size small --batch 1,8 --max_new_tokens 64

Without --checkpoint it writes a workdir of random weights for `--size` (the stage-2 config at
that size) into a temporary folder, laid out as training writes it. Without --video it renders
a short synthetic clip. Every timing is of a second call (the first one compiles); decoding
runs exactly --max_new_tokens tokens (no EOS stop) and reports tokens per second over all rows.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

from configs.common import base_config
from data_pipelines.synthetic import write_mp4
from hawk_jax import console
from hawk_jax.infer import generate as generate_lib
from hawk_jax.infer.engine import DEFAULT_QUESTION, Engine
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import host_random_params
from hawk_jax.stage_config import apply_overrides
from hawk_jax.workdir import DTYPE_CHOICES, write_workdir


def write_random_workdir(path: str, size: str, seed: int = 0, overrides: dict | None = None):
  """A stage-2 workdir of random weights at `size`, as hawk_jax.train writes one (config.json,
  frozen/, checkpoints/1/trainable). Weights: normal(0, 0.02), norm scales 1. Returns cfg."""
  cfg = base_config(2, f"size={size}")
  apply_overrides(cfg, overrides or {})
  params = host_random_params(HawkConfig.from_stage_config(cfg), seed)
  write_workdir(path, cfg, params, step=1)
  return cfg


def _synthetic_video(path: str) -> str:
  rng = np.random.default_rng(0)
  frames = np.repeat(rng.integers(0, 256, (1, 96, 96, 3)).astype(np.uint8), 40, axis=0)
  for t in range(40):
    frames[t, 30:60, 2 * t:2 * t + 20] = (250, 30, 30)
  write_mp4(path, frames, 10.0)
  return path


def _timed(fn, *args, repeats: int = 3, **kwargs):
  """(result, best wall seconds of `repeats` calls after a compiling one)."""
  import jax
  out = jax.block_until_ready(fn(*args, **kwargs))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    best = min(best, time.perf_counter() - t0)
  return out, best


def run(args) -> dict:
  import jax
  import jax.numpy as jnp
  tmp = tempfile.mkdtemp(prefix="hawk_infer_bench_")
  workdir = args.checkpoint
  if workdir is None:
    workdir = os.path.join(tmp, "workdir")
    t0 = time.perf_counter()
    write_random_workdir(workdir, args.size)
    print(f"[random {args.size} workdir written in {time.perf_counter() - t0:.1f}s]",
          file=sys.stderr)
  t0 = time.perf_counter()
  # one device: the figures are those of one chip, whatever this host has
  engine = Engine.from_workdir(workdir, dtype=args.dtype, layout="single")
  result = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
            "size": args.size if args.checkpoint is None else workdir,
            "llm_dtype": engine.config.llm.dtype, "load_s": time.perf_counter() - t0}
  video = engine.load_video(args.video or _synthetic_video(os.path.join(tmp, "clip.mp4")))
  prompt = engine.test_prompt(DEFAULT_QUESTION, video.timestamps)
  result["prompt_tokens"] = len(prompt)
  result["batches"] = []
  for b in args.batch:
    frames = np.repeat(video.frames[None], b, axis=0)
    motion = np.repeat(video.motion[None], b, axis=0)
    visual, encode_s = _timed(engine.encode, frames, motion)
    arrays = engine.pad_prompts([prompt] * b)
    emb = engine.embed(visual, arrays["input_ids"], arrays["visual_mask"])
    mask = jnp.asarray(arrays["attention_mask"])
    n = args.max_new_tokens

    def gen(tokens):
      return generate_lib.generate(engine.llm, engine.llm_params, inputs_embeds=emb,
                                   attention_mask=mask, max_new_tokens=tokens).tokens
    # One token = prefill + first choice; the difference to n tokens is n - 1 decode steps.
    _, first_s = _timed(gen, 1)
    _, total_s = _timed(gen, n)
    decode_s = max(total_s - first_s, 1e-9)
    row = {"batch": b, "encode_s": encode_s, "prefill_s": first_s, "generate_s": total_s,
           "decode_tokens_per_s": b * (n - 1) / decode_s, "ms_per_step": 1e3 * decode_s / (n - 1)}
    result["batches"].append(row)
    print(json.dumps(row), file=sys.stderr)
  return result


def main(argv: Sequence[str] | None = None) -> int:
  parser = console.parser("python -m hawk_jax.bench.inference", __doc__)
  parser.add_argument("--checkpoint", default=None, help="trained workdir (default: random)")
  parser.add_argument("--size", default="tiny", help="model size of the random workdir")
  parser.add_argument("--video", default=None, help="video file (default: synthetic)")
  parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
  parser.add_argument("--max_new_tokens", type=int, default=64, help="tokens generated per run")
  parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                      help="parameter dtype (auto: float32 on a CPU when it fits)")
  parser.add_argument("--out", default=None, help="write the result JSON here")
  args = parser.parse_args(argv)
  console.setup_logging(args.log_level)
  args.batch = [int(b) for b in args.batch.split(",") if b]
  if args.max_new_tokens < 2:
    parser.error("--max_new_tokens must be >= 2 (one prefill token, then decoding)")
  result = run(args)
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
