"""Smoke test of `python -m hawk_jax.bench`: every section runs at the toy size and prints its
table (figures are machine-dependent: no timing is asserted)."""
import json

import numpy as np
import pytest

from hawk_jax.bench import side_by_side as bench
from tests.bench.test_tower_cache import check_tower_cache_figures


def test_bench_runs_every_section_at_tiny_and_prints_the_tables(tmp_path, capsys):
  """Every side runs, torch.compile (default mode) included, in the train step and in the
  static-cache decoding; the FLOP counts of the two programs agree; training from the tower
  cache starts where training from pixels does (tests/bench/test_tower_cache.py checks that
  section's own command)."""
  out = tmp_path / "bench.json"
  rc = bench.main(["--sizes", "tiny", "--dtypes", "float32", "--repeats", "1",
                   "--batches", "1,2", "--workers", "1", "--loader_samples", "4",
                   "--torch_compile", "default", "--json", str(out)])
  assert rc == 0
  text = capsys.readouterr().out
  for title in ("train step (stage 2", "greedy generation", "stage-2 loader",
                "torch.compile default, same work", "HF static cache + compile",
                "from pixels against from the tower cache"):
    assert title in text
  result = json.loads(out.read_text())
  (train,) = result["train"]
  sides = {r["side"]: r for r in train["sides"]}
  assert list(sides) == ["jax", "torch eager", "torch eager, same work",
                         "torch.compile default, same work"]
  for r in sides.values():
    assert "error" not in r, r
    assert r["samples_per_s"] > 0 and 0 < r["share_of_peak"]
  assert sides["torch.compile default, same work"]["compile_s"] > 0
  assert sides["torch eager"]["compile_s"] is None
  # The same weights and batch give the same first loss on both sides (dropout aside).
  assert abs(train["first_loss_jax"] - train["first_loss_torch"]) < 0.1
  assert abs(train["first_loss_torch_same_work"] - train["first_loss_torch"]) < 0.1
  # Each side's products, counted on its own program: logits on every position cost more than
  # on the supervised ones; the JAX step (which skips 32-position chunks without a target)
  # executes the same-work products, and up to 3 more chunks of head (partly supervised ones).
  jax_flops, same = sides["jax"]["flops"], sides["torch eager, same work"]["flops"]
  assert sides["torch eager"]["flops"] > same
  assert same <= jax_flops < 1.5 * same
  assert [r["batch"] for r in result["generate"]] == [1, 2]
  for r in result["generate"]:
    assert r["tokens_agree"] == 1.0  # greedy, same weights: the same tokens
    assert r["static_tokens_agree"] == 1.0
    assert r["hf_static_compile_s"] > 0 and r["hf_static_decode_tokens_per_s"] > 0
    assert 0 < r["jax_share_of_limit"] and 0 < r["weight_bytes"]
  (loader,) = result["loader"]
  assert loader["samples_per_s"] > 0 and "frames" in loader["batch_keys"]
  (cache,) = result["tower_cache"]
  check_tower_cache_figures(cache)
  m = result["machine"]
  assert m["peak_f32_flops"] > 0 and m["peak_bf16_flops"] > 0 and m["read_bytes_per_s"] > 0


def test_same_work_step_has_the_loss_and_gradients_of_every_logit():
  """The "same work" PyTorch peer computes logits on supervised positions only: the loss and
  every trainable gradient equal those of `LlamaForCausalLM`'s full logits (dropout off)."""
  import jax
  import torch

  from hawk_jax.bench import train_step
  from hawk_jax.convert.torch_hawk import from_params
  from hawk_jax.models.hawk import merge_params
  cfg = train_step.bench_config("tiny", batch=2, frames=4, text_len=32, dtype="float32")
  setup, state, frozen, _, batch_np = train_step.build(cfg, devices=jax.devices()[:1])
  model = from_params(jax.device_get(merge_params(state["trainable"], frozen)), setup.config)
  batch = bench._torch_batch(batch_np)
  grads = {}
  for same_work in (False, True):
    step = bench.TorchTrainStep(model, setup.config, "float32", same_work=same_work)
    model.eval()  # no dropout: the two passes must see the same numbers
    loss = step.loss(batch)
    loss.backward()
    grads[same_work] = (float(loss.detach()), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    step.optimizer.zero_grad(set_to_none=True)
  (full_loss, full), (same_loss, same) = grads[False], grads[True]
  assert same_loss == pytest.approx(full_loss, rel=1e-6)
  assert full.keys() == same.keys() and len(full) > 10
  for name in full:
    torch.testing.assert_close(same[name], full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_flop_counter_counts_cpu_fused_attention():
  """FlopCounterMode of torch 2.13 counts nothing for CPU's fused attention; the bench's
  counter gives it the formula of the CUDA forms: 4 b h s s d forward, 2.5x that backward."""
  import torch
  b, h, s, d = 2, 4, 64, 32
  q = torch.randn(b, h, s, d, requires_grad=True)
  k, v = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
  counter = bench.torch_flop_counter()
  with counter:
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
  assert counter.get_total_flops() == 4 * b * h * s * s * d
  with counter:
    out.sum().backward()
  assert counter.get_total_flops() == 4 * b * h * s * s * d * 2.5


def test_decode_weight_bytes_leave_out_the_embedding_table():
  params = {"embed_tokens": {"embedding": np.zeros((10, 4), np.float32)},
            "layers_0": {"mlp": {"kernel": np.zeros((4, 6), np.float32)}},
            "lm_head": {"kernel": np.zeros((4, 10), np.float32)}}
  assert bench.decode_weight_bytes(params) == (4 * 6 + 4 * 10) * 4


def test_skipped_lm_head_flops_are_the_chunks_without_targets():
  """The bench rates both sides by the FLOPs JAX executes: the counted step minus the LM-head
  chunks `lm_loss_chunked` skips. It takes each row's positions in supervised-first order, so
  here the prompt pass (127 targets, 27 supervised per row) runs 1 of its 4 chunks and the
  motion-language pass (64 targets, 32 supervised) 1 of 2, wherever the answers lie; each
  skipped chunk is a [B, 32, E] x [E, V] product and the backward product for its input,
  counted by hawk_jax.flops on jax.vjp."""
  import jax
  import jax.numpy as jnp

  from hawk_jax import flops as flops_lib
  from hawk_jax.bench import train_step
  from hawk_jax.models.model_config import HawkConfig
  from hawk_jax.train.data import batch_spec
  cfg = train_step.bench_config("small", batch=2, frames=8, text_len=64, dtype="float32")
  config = HawkConfig.from_stage_config(cfg)
  batch_np = train_step.random_batch(batch_spec(cfg), config)
  e, v = config.llm.hidden_size, config.llm.vocab_size

  def head_fwd_bwd(h, w):
    out, vjp = jax.vjp(lambda x: x @ w, h)
    return vjp(out)

  chunk = flops_lib.count_traced(jax.jit(head_fwd_bwd).trace(
      jax.ShapeDtypeStruct((2, 32, e), jnp.float32), jax.ShapeDtypeStruct((e, v), jnp.float32)))
  assert bench.skipped_lm_head_flops(config, batch_np) == 4 * chunk.matmul
  # One row's answer moved to positions 41..67: still one chunk (in position order, rows
  # answering in different chunks would have made the pass run three).
  moved = batch_np["labels"].copy()
  moved[0] = np.roll(moved[0], -60)
  assert bench.skipped_lm_head_flops(config, dict(batch_np, labels=moved)) == 4 * chunk.matmul
  # Every target supervised: nothing skipped.
  full = dict(batch_np, labels=batch_np["input_ids"], ml_labels=batch_np["ml_input_ids"])
  assert bench.skipped_lm_head_flops(config, full) == 0
