"""The assembled HAWK model: splicing, trainable split, parameter counts, and sharded == single
device on a fake 2x2x2 mesh."""
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.common import model_for
from hawk_jax.models.hawk import Hawk, check_visual_mask, merge_params, splice_visual, split_params
from hawk_jax.models.params import dummy_inputs
from hawk_jax.plan.param_summary import summarize
from hawk_jax.sharding import DEFAULT_RULES, batch_sharding, logical_to_sharding, make_mesh


def _inputs(config, batch=4, frames=3, seq=24, seed=0):
  rng = np.random.default_rng(seed)
  s = config.vision.image_size
  n = config.num_visual_tokens
  fr = rng.integers(0, 256, size=(batch, frames, s, s, 3), dtype=np.uint8)
  mo = (fr * (rng.random((batch, frames, s, s, 1)) > 0.5)).astype(np.uint8)
  ids = rng.integers(3, config.llm.vocab_size, size=(batch, seq)).astype(np.int32)
  vm = np.zeros((batch, seq), np.int32)
  for b in range(batch):
    start = 1 + b  # different placeholder offsets per row
    vm[b, start:start + n] = 1
  am = np.ones((batch, seq), np.int32)
  am[0, -3:] = 0  # right padding on one row
  return fr, mo, ids, am, vm


def test_splice_visual_places_tokens_in_order():
  emb = jnp.zeros((2, 7, 3))
  vis = jnp.arange(2 * 3 * 3, dtype=jnp.float32).reshape(2, 3, 3) + 1
  mask = jnp.array([[0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0]])
  out = np.asarray(splice_visual(emb, mask, vis))
  np.testing.assert_array_equal(out[0, 1:4], np.asarray(vis[0]))
  np.testing.assert_array_equal(out[1, 3:6], np.asarray(vis[1]))
  assert not out[0, 0].any() and not out[0, 4:].any() and not out[1, :3].any()
  with pytest.raises(ValueError, match="rows \\[1\\]"):
    check_visual_mask(np.array([[1, 1, 1, 0], [1, 1, 0, 0]]), 3)


def test_hawk7b_trainable_count_from_shapes_alone():
  rows = summarize(model_for("hawk7b", "paper"))
  assert sum(r[1] for r in rows if r[2]) == 113_431_040
  rows = summarize(model_for("hawk7b", "released"))  # query_tokens_motion trained by accident
  assert sum(r[1] for r in rows if r[2]) == 113_455_616


def test_summary_cli_prints_total_and_trainable():
  out = subprocess.run([sys.executable, "-m", "hawk_jax.plan.param_summary", "--config",
                        "configs/stage2_finetune.py:size=hawk7b"], capture_output=True, text=True,
                       timeout=300, check=True).stdout
  last = out.strip().splitlines()[-1]
  assert last.startswith("total=") and last.endswith("trainable=113431040"), last


@pytest.fixture(scope="module")
def tiny():
  config = model_for("tiny", "paper")
  model = Hawk(config)
  boxed = jax.jit(lambda r: model.init(r, *dummy_inputs(config))["params"])(jax.random.key(1))
  return config, model, boxed, nn.unbox(boxed)


def test_split_merge_and_only_groups_trainable(tiny):
  config, model, _, params = tiny
  train, frozen = split_params(params, config)
  assert set(train) == {"appearance", "motion"}
  assert set(train["appearance"]) == {"video_qformer", "video_query_tokens",
                                      "frame_position_embedding", "proj"}
  assert "query_tokens" not in train["motion"]
  merged = merge_params(train, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  cfg_rel = model_for("tiny", "released")
  train_rel, _ = split_params(params, cfg_rel)
  assert "query_tokens" in train_rel["motion"] and "query_tokens" not in train_rel["appearance"]


def test_tiny_hawk_on_2x2x2_mesh_equals_single_device(tiny):
  assert jax.device_count() >= 8, "conftest sets 8 fake CPU devices"
  config, model, boxed, params = tiny
  inputs = _inputs(config)
  ml_ids = np.asarray(inputs[2][:, :12])
  ml_vm = np.zeros_like(ml_ids)
  ml_vm[:, 1:1 + config.num_visual_tokens_per_branch] = 1
  kwargs = dict(ml_input_ids=ml_ids, ml_attention_mask=np.ones_like(ml_ids), ml_visual_mask=ml_vm)

  single = jax.jit(lambda p, *a, **k: model.apply({"params": p}, *a, **k))(params, *inputs,
                                                                            **kwargs)

  mesh = make_mesh((2, 2, 2))
  shardings = logical_to_sharding(nn.get_partition_spec(boxed), mesh, DEFAULT_RULES)
  # The rules really shard something: the LLM embedding is split over fsdp and vocab over tensor.
  assert any(len(s.spec) and any(a is not None for a in s.spec)
             for s in jax.tree.leaves(shardings))
  sharded_params = jax.device_put(params, shardings)
  in_sh = [batch_sharding(mesh, np.ndim(x)) for x in inputs]
  sharded_inputs = [jax.device_put(x, s) for x, s in zip(inputs, in_sh)]
  kw_sh = {k: jax.device_put(v, batch_sharding(mesh, 2)) for k, v in kwargs.items()}

  def fwd(p, *a, **k):
    with nn.logical_axis_rules(DEFAULT_RULES):
      return model.apply({"params": p}, *a, **k)
  with jax.set_mesh(mesh):
    multi = jax.jit(fwd)(sharded_params, *sharded_inputs, **kw_sh)
  assert multi["logits"].sharding.mesh.shape == mesh.shape
  for k in single:
    np.testing.assert_allclose(np.asarray(multi[k]), np.asarray(single[k]), atol=1e-4, rtol=1e-4,
                               err_msg=k)
  assert single["logits"].shape == (4, 24, config.llm.vocab_size)
  assert single["ml_logits"].shape == (4, 12, config.llm.vocab_size)
  assert single["tight_appearance"].shape == (4, config.video_qformer.num_query_tokens,
                                              config.tight_size)


def test_visual_tokens_change_only_through_placeholders(tiny):
  """Changing the frames changes the logits; the text embedding at non-placeholder positions
  is the LLM's own token embedding."""
  config, model, _, params = tiny
  fr, mo, ids, am, vm = _inputs(config, batch=2)
  enc = jax.jit(lambda p, f, m: model.apply({"params": p}, f, m, method=Hawk.encode_video))(
      params, fr, mo)
  emb = jax.jit(lambda p, i, v, e: model.apply({"params": p}, i, v, e,
                                               method=Hawk.prompt_embeddings))(
      params, ids, vm, enc["visual"])
  tok = np.asarray(params["llm"]["embed_tokens"]["embedding"])[ids]
  m = vm.astype(bool)
  np.testing.assert_allclose(np.asarray(emb)[~m], tok[~m], atol=0)
  np.testing.assert_allclose(np.asarray(emb)[0][m[0]], np.asarray(enc["visual"][0]), atol=0)
  fwd = jax.jit(lambda p, *a: model.apply({"params": p}, *a)["logits"])
  out1 = fwd(params, fr, mo, ids, am, vm)
  out2 = fwd(params, 255 - fr, mo, ids, am, vm)
  assert np.abs(np.asarray(out1) - np.asarray(out2)).max() > 1e-4


def test_cached_frozen_frame_tokens_give_the_same_outputs(tiny):
  """Training on the frozen towers' cached output equals training on the pixels."""
  config, model, _, params = tiny
  fr, mo, ids, am, vm = _inputs(config, batch=2)
  fwd = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
  app, mot = jax.jit(lambda p, f, m: model.apply({"params": p}, f, m,
                                                 method=Hawk.frozen_frame_tokens))(params, fr, mo)
  assert app.shape == (2, fr.shape[1], config.qformer.num_query_tokens, config.qformer.hidden_size)
  a = fwd(params, fr, mo, ids, am, vm)
  b = fwd(params, app, mot, ids, am, vm)
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=1e-5, rtol=1e-5)
