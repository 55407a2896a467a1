"""LLaMA in Flax against transformers.LlamaForCausalLM: layer by layer, whole model, padding,
and the HF conversion both ways (state dicts, folders, errors)."""
import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hawk_jax.convert import llama_from_hf, llama_to_hf  # noqa: E402
from hawk_jax.convert.llama_hf import (  # noqa: E402
  llama_config_from_hf,
  llama_config_to_hf,
  llama_rules,
  params_from_state_dict,
  state_dict_from_params,
)
from hawk_jax.convert.table import ConversionError, flax_to_torch, torch_to_flax  # noqa: E402
from hawk_jax.models import llama as L  # noqa: E402
from hawk_jax.models import llama_decoding  # noqa: E402
from hawk_jax.models.model_config import LlamaConfig  # noqa: E402

TOL = 1e-4


def hf_llama(seed=0, **kw):
  """A tiny random HF LLaMA with weights large enough that logits are not all near zero."""
  base = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=4, attn_implementation="eager")
  base.update(kw)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**base)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.normal_(0.0, 0.15)
  return model


def state_of(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def flax_of(hf_model, **overrides):
  cfg = llama_config_from_hf(hf_model.config, **overrides)
  return L.Llama(cfg), params_from_state_dict(state_of(hf_model), cfg)


@functools.partial(jax.jit, static_argnames=("model",))
def forward(model, params, ids, mask=None):
  return model.apply({"params": params}, ids, attention_mask=mask)


def close(a, b, tol=TOL):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  assert a.shape == b.shape, (a.shape, b.shape)
  err = float(np.max(np.abs(a - b)))
  assert err < tol, f"max abs diff {err} >= {tol}"


# --- layer by layer ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gqa_layer_setup():
  hf = hf_llama(seed=1, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                rope_theta=500.0, attention_bias=True, mlp_bias=True, head_dim=12)
  model, params = flax_of(hf, scan_layers=False)
  rs = np.random.RandomState(0)
  x = rs.randn(2, 7, 32).astype(np.float32)
  pos = np.stack([np.arange(7), np.arange(3, 10)]).astype(np.int64)
  return hf, model, params, x, pos


def test_rmsnorm(gqa_layer_setup):
  hf, model, params, x, _ = gqa_layer_setup
  ref = hf.model.layers[0].input_layernorm(torch.tensor(x)).detach().numpy()
  out = L.RMSNorm(eps=model.config.rms_norm_eps).apply(
      {"params": params["layers_0"]["input_layernorm"]}, jnp.asarray(x))
  close(out, ref, 1e-5)


def test_rope(gqa_layer_setup):
  hf, model, _, _, pos = gqa_layer_setup
  d = model.config.resolved_head_dim
  cos_ref, sin_ref = hf.model.rotary_emb(torch.zeros(1), torch.tensor(pos))
  cos, sin = L.rope_cos_sin(jnp.asarray(pos), d, model.config.rope_theta)
  close(cos, cos_ref.numpy(), 1e-5)
  close(sin, sin_ref.numpy(), 1e-5)
  q = np.random.RandomState(1).randn(2, 4, 7, d).astype(np.float32)  # HF: [B, heads, T, D]
  from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
  q_ref, _ = apply_rotary_pos_emb(torch.tensor(q), torch.tensor(q), cos_ref, sin_ref)
  out = L.apply_rope(jnp.asarray(q.transpose(0, 2, 1, 3)), cos, sin)
  close(np.asarray(out).transpose(0, 2, 1, 3), q_ref.numpy(), 1e-5)


def _causal_additive(t):
  m = np.triu(np.full((t, t), -np.inf, np.float32), 1)
  return torch.tensor(m)[None, None]


def test_attention_gqa_bias_head_dim(gqa_layer_setup):
  hf, model, params, x, pos = gqa_layer_setup
  cos_ref, sin_ref = hf.model.rotary_emb(torch.zeros(1), torch.tensor(pos))
  ref, _ = hf.model.layers[0].self_attn(torch.tensor(x), position_embeddings=(cos_ref, sin_ref),
                                        attention_mask=_causal_additive(7))
  cos, sin = L.rope_cos_sin(jnp.asarray(pos), model.config.resolved_head_dim,
                            model.config.rope_theta)
  out, _ = L.LlamaAttention(model.config).apply(
      {"params": params["layers_0"]["self_attn"]}, jnp.asarray(x), cos, sin, None)
  close(out, ref.detach().numpy())


def test_mlp(gqa_layer_setup):
  hf, model, params, x, _ = gqa_layer_setup
  ref = hf.model.layers[1].mlp(torch.tensor(x)).detach().numpy()
  out = L.LlamaMLP(model.config).apply({"params": params["layers_1"]["mlp"]}, jnp.asarray(x))
  close(out, ref)


def test_decoder_layer(gqa_layer_setup):
  hf, model, params, x, pos = gqa_layer_setup
  cos_ref, sin_ref = hf.model.rotary_emb(torch.zeros(1), torch.tensor(pos))
  ref = hf.model.layers[1](torch.tensor(x), attention_mask=_causal_additive(7),
                           position_embeddings=(cos_ref, sin_ref))
  ref = (ref[0] if isinstance(ref, tuple) else ref).detach().numpy()
  cos, sin = L.rope_cos_sin(jnp.asarray(pos), model.config.resolved_head_dim,
                            model.config.rope_theta)
  (out, _, _), _ = L.LlamaDecoderLayer(model.config).apply(
      {"params": params["layers_1"]}, (jnp.asarray(x), None, 0), cos, sin, None, 0)
  close(out, ref)


# --- whole model ------------------------------------------------------------------------------

MODEL_CASES = {
    "mha_scan": (dict(), dict(scan_layers=True)),
    "gqa_eps_theta_noscan": (dict(num_key_value_heads=1, rms_norm_eps=1e-5, rope_theta=1234.0),
                             dict(scan_layers=False)),
    "hidden48_3heads": (dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=3,
                             intermediate_size=80, num_hidden_layers=3), dict(scan_layers=True)),
    "head_dim_tied_bias_remat": (
        dict(head_dim=16, num_key_value_heads=2, tie_word_embeddings=True, attention_bias=True,
             mlp_bias=True), dict(scan_layers=True, remat_policy="full")),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_model_matches_hf(case):
  hf_kw, ours = MODEL_CASES[case]
  hf = hf_llama(seed=len(case), **hf_kw)
  model, params = flax_of(hf, **ours)
  rs = np.random.RandomState(0)
  ids = rs.randint(0, hf.config.vocab_size, (2, 11))
  with torch.no_grad():
    ref = hf(torch.tensor(ids)).logits.numpy()
  out = forward(model, params, jnp.asarray(ids, jnp.int32))
  assert out.dtype == jnp.float32
  assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero numbers
  close(out, ref)

  # Left and right padding with an attention mask: real positions agree with HF given
  # HF-generation positions (cumsum(mask) - 1).
  mask = np.ones_like(ids)
  mask[0, :4] = 0   # left padded
  mask[1, -3:] = 0  # right padded
  pos = np.maximum(mask.cumsum(-1) - 1, 0)
  with torch.no_grad():
    ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
             position_ids=torch.tensor(pos)).logits.numpy()
  out = np.asarray(forward(model, params, jnp.asarray(ids), jnp.asarray(mask)))
  real = mask.astype(bool)
  close(out[real], ref[real])
  # jax.nn.dot_product_attention in place of the einsums (causal flag without a mask, the
  # padding mask with one): the same logits.
  fused_model, _ = flax_of(hf, **ours, attention_impl="xla")
  close(forward(fused_model, params, jnp.asarray(ids))[0], forward(model, params,
                                                                     jnp.asarray(ids))[0])
  close(np.asarray(forward(fused_model, params, jnp.asarray(ids), jnp.asarray(mask)))[real],
        ref[real])
  if case == "mha_scan":  # left padding changes nothing for the real tokens of a row
    alone = forward(model, params, jnp.asarray(ids[:1, 4:]))
    close(out[0, 4:], alone[0], 1e-5)


def test_attention_impl_names():
  from hawk_jax.models.common import resolve_attention_impl
  assert jax.default_backend() == "cpu"
  assert resolve_attention_impl("auto", jnp.bfloat16, 128) == "einsum"  # CPU: the einsums
  assert resolve_attention_impl("cudnn", jnp.float32, 88) == "cudnn"    # asked for: as asked
  with pytest.raises(ValueError, match="unknown attention_impl 'flash'.*einsum"):
    resolve_attention_impl("flash", jnp.float32, 64)


def test_embeds_path_and_embed_method():
  hf = hf_llama(seed=3, num_key_value_heads=2)
  model, params = flax_of(hf)
  ids = jnp.asarray(np.random.RandomState(2).randint(0, 97, (2, 6)), jnp.int32)
  emb = model.apply({"params": params}, ids, method=L.Llama.embed)
  close(emb, hf.model.embed_tokens(torch.tensor(np.asarray(ids))).detach().numpy(), 1e-6)
  by_ids = model.apply({"params": params}, ids)
  by_emb = model.apply({"params": params}, inputs_embeds=emb, attention_mask=jnp.ones((2, 6)))
  close(by_ids, by_emb, 1e-6)
  with pytest.raises(ValueError, match="exactly one"):
    model.apply({"params": params}, ids, inputs_embeds=emb)


def test_bfloat16_compute_keeps_float32_logits():
  hf = hf_llama(seed=4)
  model32, params = flax_of(hf)
  model16 = L.Llama(dataclasses.replace(model32.config, dtype="bfloat16",
                                        param_dtype="bfloat16"))
  p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 97, (1, 8)), jnp.int32)
  out16 = model16.apply({"params": p16}, ids)
  assert out16.dtype == jnp.float32
  assert model16.apply({"params": p16}, ids, method=L.Llama.embed).dtype == jnp.bfloat16
  out32 = model32.apply({"params": params}, ids)
  assert float(jnp.max(jnp.abs(out16 - out32))) < 0.1 * float(jnp.max(jnp.abs(out32)))


def test_logical_axes_on_params():
  cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2)
  shapes = jax.eval_shape(lambda: L.Llama(cfg).init(jax.random.PRNGKey(0),
                                                    jnp.zeros((1, 2), jnp.int32)))
  import flax.linen as nn
  specs = nn.get_partition_spec(shapes)["params"]
  assert tuple(specs["layers"]["self_attn"]["k_proj"]["kernel"]) == (
      "layers", "embed", "kv_heads", "head_dim")
  assert tuple(specs["layers"]["mlp"]["down_proj"]["kernel"]) == ("layers", "mlp", "embed")
  assert tuple(specs["embed_tokens"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["lm_head"]["kernel"]) == ("embed", "vocab")
  assert tuple(specs["norm"]["scale"]) == ("norm",)


def test_scan_and_unrolled_params_agree():
  cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3,
                    num_heads=4, num_kv_heads=2)
  model, params = L.init_params(cfg)
  flat = llama_decoding.unstack_layers(params, 3)
  unrolled = L.Llama(dataclasses.replace(cfg, scan_layers=False))
  ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
  close(model.apply({"params": params}, ids), unrolled.apply({"params": flat}, ids), 1e-6)
  restacked = llama_decoding.stack_layers(flat, 3)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, restacked))


# --- conversion -------------------------------------------------------------------------------

@pytest.mark.parametrize("scan", [True, False])
@pytest.mark.parametrize("tied", [False, True])
def test_state_dict_round_trip_is_exact(scan, tied):
  hf = hf_llama(seed=5, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                tie_word_embeddings=tied, head_dim=12)
  sd = state_of(hf)
  model, params = flax_of(hf, scan_layers=scan)
  back = state_dict_from_params(params, model.config)
  expected = set(sd) - ({"lm_head.weight"} if tied else set())
  assert set(back) == expected
  for k in expected:
    assert back[k].dtype == sd[k].dtype and np.array_equal(back[k], sd[k]), k


def test_prefix_for_hawk_checkpoints():
  hf = hf_llama(seed=6)
  cfg = llama_config_from_hf(hf.config)
  sd = {"llama_model." + k: v for k, v in state_of(hf).items()}
  sd["llama_model.model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
  sd["video_query_tokens"] = np.zeros((1, 32, 8), np.float32)  # another tower's key
  params = params_from_state_dict(sd, cfg, prefix="llama_model.")
  params2, used = torch_to_flax(sd, llama_rules(cfg), cfg.num_layers, scan=True,
                                prefix="llama_model.")
  assert "video_query_tokens" not in used
  out = flax_to_torch(params2, llama_rules(cfg), cfg.num_layers, scan=True, prefix="llama_model.")
  assert all(np.array_equal(out[k], sd[k]) for k in out)
  assert jax.tree.all(jax.tree.map(np.array_equal, params, params2))


def test_config_round_trip():
  cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_layers=3,
                    num_heads=4, num_kv_heads=2, head_dim=24, rms_norm_eps=1e-5,
                    rope_theta=5e5, max_position_embeddings=777, tie_word_embeddings=True,
                    attention_bias=True, mlp_bias=False)
  d = llama_config_to_hf(cfg)
  assert llama_config_from_hf(json.loads(json.dumps(d))) == cfg
  hc = transformers.LlamaConfig(**d)
  assert llama_config_from_hf(hc) == cfg
  # transformers 4.x style config.json (top-level rope_theta, no head_dim)
  plain = dataclasses.replace(cfg, head_dim=None)
  old = {k: v for k, v in llama_config_to_hf(plain).items()
         if k not in ("rope_parameters", "head_dim")}
  old["rope_scaling"] = None
  assert llama_config_from_hf(old) == plain
  with pytest.raises(NotImplementedError, match="llama3"):
    llama_config_from_hf({**d, "rope_parameters": {"rope_type": "llama3", "rope_theta": 1.0}})


def test_folder_round_trip_loads_in_transformers(tmp_path):
  hf = hf_llama(seed=7, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=2000.0)
  # HF's own folder, sharded, with an inv_freq buffer sneaked in.
  hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
  assert len(list((tmp_path / "hf").glob("*.safetensors"))) > 1
  model, params = llama_from_hf(str(tmp_path / "hf"))
  assert model.config.scan_layers and model.config.rope_theta == 2000.0
  ids = np.random.RandomState(3).randint(0, 97, (2, 9))
  with torch.no_grad():
    ref = hf(torch.tensor(ids)).logits.numpy()
  close(model.apply({"params": params}, jnp.asarray(ids, jnp.int32)), ref)

  llama_to_hf(model, params, str(tmp_path / "out"))
  back = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
  with torch.no_grad():
    close(back(torch.tensor(ids)).logits.numpy(), ref, 1e-5)
  sd, sd_back = state_of(hf), state_of(back)
  assert set(sd) == set(sd_back)
  assert all(np.array_equal(sd[k], sd_back[k]) for k in sd)

  # bf16 export and import
  model16, p16 = llama_from_hf(str(tmp_path / "out"), dtype="bfloat16", scan_layers=False)
  assert model16.config.param_dtype == "bfloat16"
  assert p16["layers_0"]["mlp"]["up_proj"]["kernel"].dtype == jnp.bfloat16
  llama_to_hf(model16, p16, str(tmp_path / "out16"))
  cfg16 = json.loads((tmp_path / "out16" / "config.json").read_text())
  assert cfg16["torch_dtype"] == "bfloat16"
  back16 = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "out16"))
  w = back16.model.layers[0].mlp.up_proj.weight
  assert w.dtype == torch.bfloat16
  assert torch.equal(w, hf.model.layers[0].mlp.up_proj.weight.to(torch.bfloat16))


def test_conversion_errors_name_the_key():
  hf = hf_llama(seed=8)
  cfg = llama_config_from_hf(hf.config)
  sd = state_of(hf)
  missing = dict(sd)
  del missing["model.layers.1.mlp.up_proj.weight"]
  with pytest.raises(ConversionError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
    params_from_state_dict(missing, cfg)
  extra = dict(sd, **{"model.layers.0.self_attn.q_norm.weight": np.ones(8, np.float32)})
  with pytest.raises(ConversionError, match="q_norm"):
    params_from_state_dict(extra, cfg)
  # A config that disagrees with the tensors: the shape error names the parameter.
  wrong = dataclasses.replace(cfg, intermediate_size=cfg.intermediate_size + 1)
  with pytest.raises(ConversionError, match="gate_proj"):
    params_from_state_dict(sd, wrong)


def test_sharded_grad_with_remat_on_a_2x2x2_mesh():
  import flax.linen as nn

  from hawk_jax import sharding as S
  from hawk_jax.models.model_config import hawk_config
  cfg = dataclasses.replace(hawk_config("tiny").llm, num_layers=2, remat_policy="full")
  model, params = L.init_params(cfg)
  mesh = S.make_mesh((2, 2, 2))
  specs = nn.get_partition_spec(jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))))["params"]
  shardings = S.logical_to_sharding(specs, mesh, S.DEFAULT_RULES)
  ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (4, 8)), jnp.int32)

  def loss(p, ids):
    with nn.logical_axis_rules(S.rules_as_list(S.DEFAULT_RULES)):
      logits = model.apply({"params": p}, ids, attention_mask=jnp.ones_like(ids))
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ids[..., None], -1))

  grad = jax.jit(jax.value_and_grad(loss), in_shardings=(shardings, S.batch_sharding(mesh, 2)),
                 out_shardings=(S.replicated(mesh), shardings))
  with jax.set_mesh(mesh):
    value, g = grad(jax.device_put(params, shardings), ids)
  ref_value, ref_g = jax.jit(jax.value_and_grad(loss))(params, ids)
  assert abs(float(value) - float(ref_value)) < 1e-5
  k = g["layers"]["self_attn"]["q_proj"]["kernel"]
  assert tuple(k.sharding.spec)[:3] == (None, "fsdp", "tensor")
  close(k, ref_g["layers"]["self_attn"]["q_proj"]["kernel"], 1e-6)
