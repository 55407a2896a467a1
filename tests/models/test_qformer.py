"""QFormer against HF Blip2QFormerModel, layer by layer and whole; dropout and bad input."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hawk_jax.convert.blip2_hf import qformer_config_from_hf, qformer_params_from_state
from hawk_jax.models.model_config import hawk_config
from hawk_jax.models.qformer import QFormer, QFormerLayer, has_cross_attention
from tests.blip2_hf_fixtures import hf_qformer, hf_qformer_out, qformer_inputs, state_numpy

TOL = 1e-4

# HF config fields: cross-attention every 2nd / every layer, encoder widths, heads, eps.
CASES = [
    dict(hidden_size=20, num_hidden_layers=3, num_attention_heads=4, intermediate_size=36,
         cross_attention_frequency=2, encoder_hidden_size=24, layer_norm_eps=1e-12),
    dict(hidden_size=18, num_hidden_layers=2, num_attention_heads=3, intermediate_size=26,
         cross_attention_frequency=1, encoder_hidden_size=18, layer_norm_eps=1e-6),
    dict(hidden_size=12, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
         cross_attention_frequency=1, encoder_hidden_size=30, layer_norm_eps=1e-3),
]


def _convert(hf, **overrides):
  config = qformer_config_from_hf(hf.config.to_dict(), num_query_tokens=5, **overrides)
  params, unused = qformer_params_from_state(state_numpy(hf), config, "hf")
  assert not unused
  return config, params


def _apply(config):
  return jax.jit(lambda p, q, e, m: QFormer(config).apply({"params": p}, q, e, m))


@pytest.mark.parametrize("fields", CASES)
def test_matches_hf_layer_by_layer_and_whole(fields):
  hf = hf_qformer(seed=fields["hidden_size"], **fields)
  config, params = _convert(hf)
  q, enc = qformer_inputs(config)
  mask = np.ones(enc.shape[:2], np.int64)
  mask[1, 4:] = 0  # the second example's last encoder tokens are padding
  ref, hidden = hf_qformer_out(hf, q, enc, mask, hidden_states=True)

  for i in range(config.num_layers):
    layer = QFormerLayer(config, has_cross_attention(config, i))
    got = jax.jit(lambda p, h: layer.apply({"params": p}, h, enc, mask))(
        params[f"layers_{i}"], hidden[i])
    assert np.max(np.abs(np.asarray(got) - hidden[i + 1])) < TOL, f"layer {i}"

  out = _apply(config)(params, q, enc, mask)
  assert out.shape == q.shape
  assert np.max(np.abs(np.asarray(out) - ref)) < TOL
  fused = _apply(dataclasses.replace(config, attention_impl="xla"))(params, q, enc, mask)
  assert np.max(np.abs(np.asarray(fused) - ref)) < TOL  # padded keys masked there too
  # The mask matters: without it the second example attends to the padding too.
  unmasked = _apply(config)(params, q, enc, np.ones_like(mask))
  assert np.max(np.abs(np.asarray(unmasked[1]) - ref[1])) > 1e-3
  np.testing.assert_allclose(unmasked[0], ref[0], atol=TOL)


def test_cross_attention_layers_follow_the_frequency():
  shapes = jax.eval_shape(
      lambda: QFormer(hawk_config("hawk7b").qformer).init(
          jax.random.key(0), jnp.zeros((1, 32, 768)), jnp.zeros((1, 257, 1408))))["params"]
  with_cross = [i for i in range(12) if "cross_attention" in shapes[f"layers_{i}"]]
  assert with_cross == [0, 2, 4, 6, 8, 10]
  kernel = shapes["layers_0"]["cross_attention"]["key"]["kernel"]
  assert kernel.value.shape == (1408, 12, 64)
  assert tuple(kernel.names) == ("kv_embed", "heads", "head_dim")
  video = hawk_config("hawk7b").video_qformer
  shapes = jax.eval_shape(lambda: QFormer(video).init(
      jax.random.key(0), jnp.zeros((1, 32, 768)), jnp.zeros((1, 64, 768))))["params"]
  assert all("cross_attention" in shapes[f"layers_{i}"] for i in range(2))


def test_dropout_only_when_not_deterministic():
  hf = hf_qformer(seed=7, **CASES[1])
  config, params = _convert(hf, dropout=0.3)
  q, enc = qformer_inputs(config)
  model = QFormer(config)

  @jax.jit
  def run(p, seed):
    # "rbg" keys compile in a fraction of the time threefry's bit generation takes on CPU.
    return model.apply({"params": p}, q, enc, deterministic=False,
                       rngs={"dropout": jax.random.key(seed, impl="rbg")})
  a, b, a_again = run(params, 0), run(params, 1), run(params, 0)
  np.testing.assert_array_equal(a, a_again)
  assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-2
  # Deterministic with dropout configured equals HF in eval mode (dropout off).
  out = jax.jit(lambda p: model.apply({"params": p}, q, enc))(params)
  np.testing.assert_allclose(out, hf_qformer_out(hf, q, enc), atol=TOL)


def test_bf16_compute_stays_close():
  hf = hf_qformer(seed=8, **CASES[2])
  config, params = _convert(hf, dtype="bfloat16")
  q, enc = qformer_inputs(config)
  out = jax.jit(lambda p: QFormer(config).apply({"params": p}, q, enc))(params)
  assert out.dtype == jnp.bfloat16
  err = np.max(np.abs(np.asarray(out, np.float32) - hf_qformer_out(hf, q, enc)))
  assert err < 0.1, err


def test_bad_input_shapes_are_refused():
  config = dataclasses.replace(hawk_config("tiny").qformer)
  model = QFormer(config)
  q = jnp.zeros((2, config.num_query_tokens, config.hidden_size))
  with pytest.raises(ValueError, match="encoder_hidden_states"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), q, jnp.zeros((2, 5, 3))))
  with pytest.raises(ValueError, match="query_embeds"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), q[..., :3],
                                      jnp.zeros((2, 5, config.encoder_hidden_size))))
  with pytest.raises(ValueError, match="attention mask"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), q,
                                      jnp.zeros((2, 5, config.encoder_hidden_size)),
                                      jnp.ones((2, 4))))


def test_param_axes_are_named():
  config = hawk_config("tiny").qformer
  boxed = jax.eval_shape(lambda: QFormer(config).init(
      jax.random.key(0), jnp.zeros((1, 8, 64)), jnp.zeros((1, 5, 64))))
  specs = nn.get_partition_spec(boxed)["params"]
  assert tuple(specs["layers_0"]["self_attention"]["query"]["kernel"]) == (
      "embed", "heads", "head_dim")
  assert tuple(specs["layers_0"]["self_attention"]["out"]["kernel"]) == (
      "heads", "head_dim", "embed")
  assert tuple(specs["layers_1"]["mlp"]["wi"]["kernel"]) == ("embed", "mlp")
  assert tuple(specs["input_norm"]["scale"]) == ("norm",)
