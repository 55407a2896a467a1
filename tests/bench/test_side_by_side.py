"""Smoke test of `python -m hawk_jax.bench`: every section runs at the toy size and prints its
table (figures are machine-dependent: no timing is asserted)."""
import json

import numpy as np

from hawk_jax.bench import side_by_side as bench


def test_bench_runs_every_section_at_tiny_and_prints_the_tables(tmp_path, capsys):
  out = tmp_path / "bench.json"
  rc = bench.main(["--sizes", "tiny", "--dtypes", "float32", "--repeats", "1",
                   "--batches", "1,2", "--workers", "1", "--loader_samples", "4",
                   "--json", str(out)])
  assert rc == 0
  text = capsys.readouterr().out
  for title in ("train step (stage 2", "greedy generation", "stage-2 loader"):
    assert title in text
  result = json.loads(out.read_text())
  (train,) = result["train"]
  assert train["size"] == "tiny" and train["step_flops"] > 0
  assert train["jax_samples_per_s"] > 0 and train["torch_samples_per_s"] > 0
  # The same weights and batch give the same first loss on both sides (dropout aside).
  assert abs(train["first_loss_jax"] - train["first_loss_torch"]) < 0.1
  assert [r["batch"] for r in result["generate"]] == [1, 2]
  for r in result["generate"]:
    assert r["tokens_agree"] == 1.0  # greedy, same weights: the same tokens
    assert 0 < r["jax_share_of_limit"] and 0 < r["weight_bytes"]
  (loader,) = result["loader"]
  assert loader["samples_per_s"] > 0 and "frames" in loader["batch_keys"]
  m = result["machine"]
  assert m["peak_f32_flops"] > 0 and m["peak_bf16_flops"] > 0 and m["read_bytes_per_s"] > 0


def test_decode_weight_bytes_leave_out_the_embedding_table():
  params = {"embed_tokens": {"embedding": np.zeros((10, 4), np.float32)},
            "layers_0": {"mlp": {"kernel": np.zeros((4, 6), np.float32)}},
            "lm_head": {"kernel": np.zeros((4, 10), np.float32)}}
  assert bench.decode_weight_bytes(params) == (4 * 6 + 4 * 10) * 4


def test_skipped_lm_head_flops_are_the_chunks_without_targets():
  """The bench rates both sides by the FLOPs JAX executes: the counted step minus the LM-head
  chunks `lm_loss_chunked` skips. Here: 3 of the prompt pass's 4 chunks and 1 of the
  motion-language pass's 2 have no target; each skipped chunk is a [B, 32, E] x [E, V] product
  and the backward product for its input, counted by hawk_jax.flops on jax.vjp."""
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
  # Every target supervised: nothing skipped.
  full = dict(batch_np, labels=batch_np["input_ids"], ml_labels=batch_np["ml_input_ids"])
  assert bench.skipped_lm_head_flops(config, full) == 0
