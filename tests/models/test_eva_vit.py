"""EvaViT (+ ln_vision) against HF Blip2VisionModel, layer by layer and whole tower."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hawk_jax.convert.blip2_hf import (
  vision_config_from_hf,
  vision_params_from_state,
  vision_state_from_params,
)
from hawk_jax.models.eva_vit import EvaBlock, EvaViT
from hawk_jax.models.model_config import VisionConfig, hawk_config
from hawk_jax.sharding import DEFAULT_RULES, logical_to_sharding, make_mesh
from tests.blip2_hf_fixtures import hf_vision, hf_vision_out, pixels, state_numpy

TOL = 1e-4

# (HF config fields, scan): odd widths, non-default eps, image/patch sizes and head counts.
CASES = [
    (dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3,
          image_size=28, patch_size=7, layer_norm_eps=1e-6), True),
    (dict(hidden_size=30, intermediate_size=52, num_hidden_layers=3, num_attention_heads=5,
          image_size=30, patch_size=10, layer_norm_eps=1e-5), False),
    (dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
          image_size=12, patch_size=4, layer_norm_eps=3e-4), True),
]


def _convert(hf, scan):
  config = vision_config_from_hf(hf.config.to_dict(), scan_layers=scan)
  params, unused = vision_params_from_state(state_numpy(hf), config, "hf")
  assert not unused
  return config, params


def _apply(config):
  """A jitted forward: eager Flax dispatches (and compiles) op by op, far slower here."""
  return jax.jit(lambda p, x: EvaViT(config).apply({"params": p}, x))


def _layer(params, config, i):
  if config.scan_layers:
    return jax.tree.map(lambda a: a[i], params["layers"])
  return params[f"layers_{i}"]


@pytest.mark.parametrize("fields,scan", CASES)
def test_matches_hf_layer_by_layer_and_whole(fields, scan):
  hf = hf_vision(seed=len(fields) + fields["hidden_size"], **fields)
  config, params = _convert(hf, scan)
  x = pixels(hf.config)
  ref, hidden = hf_vision_out(hf, x, hidden_states=True)

  # Embeddings (through ln_vision: a zero-layer tower) against HF's post_layernorm(embeddings).
  embed_only = dataclasses.replace(config, num_layers=0)
  embed_params = {k: v for k, v in params.items() if not k.startswith("layers")}
  got = _apply(embed_only)(embed_params, x)
  import torch
  with torch.no_grad():
    want = hf.post_layernorm(torch.from_numpy(hidden[0])).numpy()
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)

  block = jax.jit(lambda p, h: EvaBlock(config).apply({"params": p}, h)[0])
  for i in range(config.num_layers):
    got = block(_layer(params, config, i), hidden[i])
    assert np.max(np.abs(np.asarray(got) - hidden[i + 1])) < TOL, f"layer {i}"

  out = _apply(config)(params, x)
  assert out.shape == (2, config.seq_len, config.hidden_size)
  assert np.max(np.abs(np.asarray(out) - ref)) < TOL
  # jax.nn.dot_product_attention in place of the einsums (what "auto" picks on GPUs, there
  # with cuDNN): the same tower.
  fused = _apply(dataclasses.replace(config, attention_impl="xla"))(params, x)
  assert np.max(np.abs(np.asarray(fused) - ref)) < TOL


def test_ln_vision_has_its_own_eps():
  """BLIP-2's ln_vision uses eps 1e-5 while the blocks use 1e-6; the model must honour both."""
  hf = hf_vision(seed=3, num_hidden_layers=1)
  config, params = _convert(hf, True)
  x = pixels(hf.config, batch=1)
  a = _apply(config)(params, x)
  b = _apply(dataclasses.replace(config, ln_vision_eps=0.5))(params, x)
  assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-3


def test_scanned_remat_gradients_match_torch():
  hf = hf_vision(seed=4, hidden_size=12, intermediate_size=20, num_attention_heads=2,
                 image_size=8, patch_size=4)
  config, params = _convert(hf, True)
  config = dataclasses.replace(config, remat_policy="full")
  x = pixels(hf.config, batch=1)

  def loss(p):
    return jnp.sum(jnp.square(EvaViT(config).apply({"params": p}, x)))
  grads = vision_state_from_params(jax.jit(jax.grad(loss))(params), config, "hf")

  import torch
  hf.zero_grad()
  out = hf(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2))).last_hidden_state
  torch.sum(out ** 2).backward()
  for name, p in hf.named_parameters():
    want = p.grad.numpy()
    if name.endswith("qkv.bias"):  # the k third is not a parameter here (EVA has no k bias)
      d = want.shape[0] // 3
      want = np.concatenate([want[:d], np.zeros(d, want.dtype), want[2 * d:]])
    np.testing.assert_allclose(grads[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_bf16_compute_stays_close():
  hf = hf_vision(seed=5)
  config, params = _convert(hf, True)
  x = pixels(hf.config, batch=1)
  ref = hf_vision_out(hf, x)
  bf16 = dataclasses.replace(config, dtype="bfloat16")
  out = _apply(bf16)(params, x)
  assert out.dtype == jnp.bfloat16
  err = np.max(np.abs(np.asarray(out, np.float32) - ref))
  assert err < 0.1, err  # ln_vision output is O(1); bf16 keeps ~3 significant digits


def test_logical_axes_and_sharded_run():
  config = hawk_config("tiny").vision
  x = jnp.asarray(np.random.RandomState(0).rand(2, config.image_size, config.image_size, 3),
                  jnp.float32)
  boxed = jax.eval_shape(lambda: EvaViT(config).init(jax.random.key(0), x))
  specs = nn.get_partition_spec(boxed)["params"]
  assert tuple(specs["layers"]["attn"]["qkv"]["kernel"]) == (
      "layers", "embed", None, "heads", "head_dim")
  assert tuple(specs["layers"]["mlp"]["fc1"]["kernel"]) == ("layers", "embed", "mlp")
  assert tuple(specs["patch_embed"]["kernel"]) == ("patch", "embed")
  assert tuple(specs["ln_vision"]["scale"]) == ("norm",)

  # Random values of the right shapes: a jitted init costs seconds of compile (truncated normal).
  rng = np.random.RandomState(1)
  params = jax.tree.map(lambda s: (rng.randn(*s.shape) * 0.2).astype(s.dtype),
                        nn.meta.unbox(boxed)["params"])
  expected = _apply(config)(params, x)
  mesh = make_mesh((2, 2, 2))
  shardings = logical_to_sharding(specs, mesh, DEFAULT_RULES)
  with mesh, nn.logical_axis_rules(DEFAULT_RULES):
    sharded = jax.device_put(params, shardings)
    out = jax.jit(lambda p, v: EvaViT(config).apply({"params": p}, v))(sharded, x)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_wrong_image_size_is_refused():
  config = VisionConfig(image_size=28, patch_size=7, hidden_size=8, num_layers=1, num_heads=2,
                        mlp_dim=8)
  with pytest.raises(ValueError, match="28x28"):
    EvaViT(config).init(jax.random.key(0), jnp.zeros((1, 21, 21, 3)))
