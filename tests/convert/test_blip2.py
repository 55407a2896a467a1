"""BLIP-2 tower conversion: HF folders both ways, LAVIS/HAWK names, and the errors they raise."""
import dataclasses
import os
import re

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import Blip2Config, Blip2Model, Blip2QFormerModel, Blip2VisionModel, OPTConfig

from hawk_jax.convert import qformer_from_hf, qformer_to_hf, vision_from_hf, vision_to_hf
from hawk_jax.convert.blip2_hf import (
  qformer_config_from_hf,
  qformer_params_from_state,
  vision_config_from_hf,
  vision_params_from_state,
  vision_state_from_params,
)
from hawk_jax.convert.lavis import MOTION_TWINS, blip2_from_lavis, vision_from_lavis
from hawk_jax.convert.table import ConversionError
from hawk_jax.models.params import flatten_paths as flatten
from tests.blip2_hf_fixtures import (
  hf_qformer,
  hf_qformer_out,
  hf_vision,
  hf_vision_out,
  pixels,
  qformer_inputs,
  randomize,
  state_numpy,
)

TOL = 1e-4


def _save_hf(model, folder):
  model.save_pretrained(folder)
  return folder


def _assert_same_tree(a, b):
  fa, fb = flatten(a), flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


# ------------------------------------------------------------------ LAVIS names, mapped by hand

def _hf_vision_to_lavis(hf_state, prefix="", ln_key=None):
  """Blip2VisionModel keys -> LAVIS EVA keys, written independently of the converter's table."""
  out = {}
  for k, v in hf_state.items():
    if k.startswith("post_layernorm."):
      if ln_key:
        out[ln_key + k[len("post_layernorm"):]] = v
      continue
    if k.endswith("self_attn.qkv.bias"):
      d = v.shape[0] // 3
      stem = prefix + k.replace("encoder.layers.", "blocks.").replace("self_attn.qkv.bias", "attn.")
      out[stem + "q_bias"], out[stem + "v_bias"] = v[:d], v[2 * d:]
      continue
    k = (k.replace("embeddings.class_embedding", "cls_token")
         .replace("embeddings.position_embedding", "pos_embed")
         .replace("embeddings.patch_embedding", "patch_embed.proj")
         .replace("encoder.layers.", "blocks.").replace("layer_norm1", "norm1")
         .replace("layer_norm2", "norm2").replace("self_attn.projection", "attn.proj")
         .replace("self_attn.qkv", "attn.qkv"))
    out[prefix + k] = v
  return out


def _hf_qformer_to_lavis(hf_state, prefix="Qformer."):
  out = {}
  for k, v in hf_state.items():
    k = k.replace("layernorm.", "embeddings.LayerNorm.").replace(".attention.attention.",
                                                                 ".attention.self.")
    k = k.replace(".crossattention.attention.", ".crossattention.self.")
    out[prefix + "bert." + k] = v
  return out


def _text_only_extras(config, prefix="Qformer."):
  """What a real BLIP-2 checkpoint also holds for its text side (ignored by the converter)."""
  h = config.hidden_size
  extras = {f"{prefix}bert.embeddings.word_embeddings.weight": (11, h),
            f"{prefix}bert.embeddings.position_embeddings.weight": (9, h),
            f"{prefix}cls.predictions.bias": (11,), "vision_proj.weight": (4, h)}
  for i in range(config.num_layers):
    extras[f"{prefix}bert.encoder.layer.{i}.intermediate.dense.weight"] = (7, h)
    extras[f"{prefix}bert.encoder.layer.{i}.output.dense.weight"] = (h, 7)
  out = {k: np.ones(shape, np.float32) for k, shape in extras.items()}
  out[f"{prefix}bert.embeddings.position_ids"] = np.arange(9)[None]
  return out


def _torch_save(state, path):
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
             if "model" not in state else
             {"model": {k: torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in state["model"].items()}}, path)
  return path


# ------------------------------------------------------------------ HF folders

@pytest.mark.parametrize("scan", [True, False])
def test_vision_hf_folder_round_trip(tmp_path, scan):
  hf = hf_vision(seed=11, num_hidden_layers=3)
  src = _save_hf(hf, str(tmp_path / "hf"))
  model, params = vision_from_hf(src, scan_layers=scan)
  assert model.config.scan_layers is scan and model.config.ln_vision_eps == 1e-6
  x = pixels(hf.config)
  out = jax.jit(lambda p, v: model.apply({"params": p}, v))(params, x)
  assert np.max(np.abs(np.asarray(out) - hf_vision_out(hf, x))) < TOL

  dst = str(tmp_path / "back")
  vision_to_hf(model, params, dst)
  back, info = Blip2VisionModel.from_pretrained(dst, output_loading_info=True)
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  assert back.config.layer_norm_eps == hf.config.layer_norm_eps
  original, written = load_file(os.path.join(src, "model.safetensors")), state_numpy(back)
  assert sorted(original) == sorted(written)
  for k in original:
    np.testing.assert_array_equal(original[k], written[k], err_msg=k)


def test_qformer_hf_folder_round_trip_ignores_text_ffn(tmp_path):
  hf = hf_qformer(seed=12, use_qformer_text_input=True)
  src = _save_hf(hf, str(tmp_path / "hf"))
  model, params = qformer_from_hf(src, num_query_tokens=5)
  q, enc = qformer_inputs(model.config)
  out = jax.jit(lambda p: model.apply({"params": p}, q, enc))(params)
  assert np.max(np.abs(np.asarray(out) - hf_qformer_out(hf, q, enc))) < TOL

  dst = str(tmp_path / "back")
  qformer_to_hf(model, params, dst)
  back, info = Blip2QFormerModel.from_pretrained(dst, output_loading_info=True)
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  original, written = state_numpy(hf), state_numpy(back)
  text_only = [k for k in original if re.match(r"encoder\.layer\.\d+\.(intermediate|output)\.", k)]
  assert text_only and not set(text_only) & set(written)
  assert sorted(set(original) - set(text_only)) == sorted(written)
  for k in written:
    np.testing.assert_array_equal(original[k], written[k], err_msg=k)


def test_full_blip2_folder(tmp_path):
  hv, hq = hf_vision(seed=13), hf_qformer(seed=13)
  config = Blip2Config(vision_config=hv.config.to_dict(), qformer_config=hq.config.to_dict(),
                       text_config=OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                             ffn_dim=16, num_attention_heads=2,
                                             word_embed_proj_dim=16).to_dict(),
                       num_query_tokens=6)
  blip2 = randomize(Blip2Model(config), seed=13)
  folder = _save_hf(blip2, str(tmp_path / "blip2"))
  vmodel, vparams = vision_from_hf(folder)
  qmodel, qparams = qformer_from_hf(folder)
  assert qmodel.config.num_query_tokens == 6
  assert qmodel.config.encoder_hidden_size == hv.config.hidden_size
  want_v, _ = vision_params_from_state(state_numpy(blip2.vision_model), vmodel.config, "hf")
  want_q, _ = qformer_params_from_state(state_numpy(blip2.qformer), qmodel.config, "hf")
  _assert_same_tree(vparams, want_v)
  _assert_same_tree(qparams, want_q)


def _vision_state_and_config(**kwargs):
  hf = hf_vision(seed=14, **kwargs)
  return state_numpy(hf), vision_config_from_hf(hf.config.to_dict())


def test_nonzero_k_bias_is_refused():
  state, config = _vision_state_and_config()
  key = "encoder.layers.1.self_attn.qkv.bias"
  d = config.hidden_size
  state[key][d + 2] = 0.5
  with pytest.raises(ConversionError, match=rf"{key}.*non-zero k third"):
    vision_params_from_state(state, config, "hf")


def test_missing_and_misshapen_tensors_are_named(tmp_path):
  state, config = _vision_state_and_config()
  missing = dict(state)
  del missing["encoder.layers.1.mlp.fc2.bias"]
  with pytest.raises(ConversionError, match=r"encoder\.layers\.1\.mlp\.fc2\.bias"):
    vision_params_from_state(missing, config, "hf")

  transposable = dict(state, **{"encoder.layers.0.mlp.fc1.weight": np.zeros((3, 5), np.float32)})
  wrong = r"encoder\.layers\.0\.mlp\.fc1\.weight has shape \(3, 5\), the model wants \(40, 24\)"
  with pytest.raises(ConversionError, match=wrong):
    vision_params_from_state(transposable, config, "hf")
  unrolled = dataclasses.replace(config, scan_layers=False)
  with pytest.raises(ConversionError, match=wrong):
    vision_params_from_state(transposable, unrolled, "hf")

  bad_qkv = dict(state, **{"encoder.layers.0.self_attn.qkv.weight": np.zeros((7, 5), np.float32)})
  with pytest.raises(ConversionError, match=r"self_attn\.qkv\.weight has shape \(7, 5\)"):
    vision_params_from_state(bad_qkv, config, "hf")

  # An HF folder with a tensor the model has no place for.
  hq = hf_qformer(seed=15)
  folder = _save_hf(hq, str(tmp_path / "q"))
  weights = load_file(os.path.join(folder, "model.safetensors"))
  weights["encoder.layer.0.surprise.weight"] = np.zeros((2,), np.float32)
  save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(ConversionError, match=r"encoder\.layer\.0\.surprise\.weight"):
    qformer_from_hf(folder)


# ------------------------------------------------------------------ LAVIS / HAWK names

def test_lavis_files_40_blocks_into_39(tmp_path):
  """eva_vit_g.pth (one block more than the model, no ln_vision) + a BLIP-2 checkpoint."""
  hv = hf_vision(seed=16, num_hidden_layers=3)
  hq = hf_qformer(seed=16, encoder_hidden_size=hv.config.hidden_size)
  eva_path = _torch_save(_hf_vision_to_lavis(state_numpy(hv)), str(tmp_path / "eva_vit_g.pth"))
  qconfig = qformer_config_from_hf(hq.config.to_dict(), num_query_tokens=5)
  tokens = np.random.RandomState(3).randn(1, 5, qconfig.hidden_size).astype(np.float32)
  blip2_state = {**_hf_qformer_to_lavis(state_numpy(hq)), **_text_only_extras(qconfig),
                 "ln_vision.weight": state_numpy(hv)["post_layernorm.weight"],
                 "ln_vision.bias": state_numpy(hv)["post_layernorm.bias"],
                 "query_tokens": tokens}
  blip2_path = _torch_save({"model": blip2_state}, str(tmp_path / "blip2_pretrained.pth"))

  vconfig = vision_config_from_hf(hv.config.to_dict(), num_layers=2)
  out = blip2_from_lavis(blip2_path, vconfig, qconfig, eva_vit=eva_path)
  np.testing.assert_array_equal(out["query_tokens"], tokens)

  hv.encoder.layers = hv.encoder.layers[:2]  # what BLIP-2 builds from a 40-block file
  x = pixels(hv.config)
  image_embeds = jax.jit(lambda p, v: _vision(vconfig).apply({"params": p}, v))(out["vision"], x)
  want = hf_vision_out(hv, x)
  assert np.max(np.abs(np.asarray(image_embeds) - want)) < TOL

  q, _ = qformer_inputs(qconfig)
  got = jax.jit(lambda p, e: _qformer(qconfig).apply({"params": p}, q, e))(out["qformer"], want)
  assert np.max(np.abs(np.asarray(got) - hf_qformer_out(hq, q, want))) < TOL

  # eva_vit_g.pth alone: the same ViT, ln_vision left as the identity.
  alone = vision_from_lavis(eva_path, vconfig)
  np.testing.assert_array_equal(alone["ln_vision"]["scale"], np.ones(vconfig.hidden_size))
  alone["ln_vision"] = out["vision"]["ln_vision"]
  _assert_same_tree(alone, out["vision"])


def _vision(config):
  from hawk_jax.models.eva_vit import EvaViT
  return EvaViT(config)


def _qformer(config):
  from hawk_jax.models.qformer import QFormer
  return QFormer(config)


def test_hawk_names_motion_twins_and_video_qformer():
  hv = hf_vision(seed=17)
  hq = hf_qformer(seed=17, cross_attention_frequency=1, num_hidden_layers=2,
                  encoder_hidden_size=20)
  vconfig = vision_config_from_hf(hv.config.to_dict())
  qconfig = qformer_config_from_hf(hq.config.to_dict(), num_query_tokens=5)
  want_v, _ = vision_params_from_state(state_numpy(hv), vconfig, "hf")
  want_q, _ = qformer_params_from_state(state_numpy(hq), qconfig, "hf")

  motion_vit = MOTION_TWINS["visual_encoder."]
  hawk_state = {**_hf_vision_to_lavis(state_numpy(hv), motion_vit, MOTION_TWINS["ln_vision"]),
                **_hf_qformer_to_lavis(state_numpy(hq), "video_Qformer_motion.")}
  got_v = vision_from_lavis(hawk_state, vconfig, prefix=motion_vit,
                            ln_vision_key=MOTION_TWINS["ln_vision"])
  _assert_same_tree(got_v, want_v)
  got_q, unused = qformer_params_from_state(hawk_state, qconfig, "lavis", "video_Qformer_motion.")
  _assert_same_tree(got_q, want_q)
  assert all(k.startswith(motion_vit) or k.startswith("ln_vision_motion") for k in unused)

  # LAVIS names back out: exactly the hand-mapped state.
  lavis = vision_state_from_params(got_v, vconfig, "lavis", motion_vit, "ln_vision_motion")
  expected = {k: v for k, v in hawk_state.items() if not k.startswith("video_Qformer")}
  assert sorted(lavis) == sorted(expected)
  for k in lavis:
    np.testing.assert_array_equal(lavis[k], expected[k], err_msg=k)


def test_blip2_checkpoint_errors():
  hq = hf_qformer(seed=18)
  qconfig = qformer_config_from_hf(hq.config.to_dict(), num_query_tokens=5)
  vconfig = vision_config_from_hf(hf_vision(seed=18).config.to_dict())
  state = {**_hf_qformer_to_lavis(state_numpy(hq)),
           "query_tokens": np.zeros((1, 4, qconfig.hidden_size), np.float32),
           "ln_vision.weight": np.ones(vconfig.hidden_size, np.float32),
           "ln_vision.bias": np.zeros(vconfig.hidden_size, np.float32)}
  with pytest.raises(ConversionError, match=r"query_tokens has shape \(1, 4, 20\)"):
    blip2_from_lavis({"model": state}, None, qconfig)
  state["query_tokens"] = np.zeros((1, 5, qconfig.hidden_size), np.float32)
  with pytest.raises(ConversionError, match="eva_vit="):
    blip2_from_lavis({"model": state}, vconfig, qconfig)
  out = blip2_from_lavis({"model": state}, None, qconfig)
  assert set(out) == {"qformer", "query_tokens"}
  del state["Qformer.bert.encoder.layer.2.crossattention.self.key.bias"]
  with pytest.raises(ConversionError,
                     match=r"Qformer\.bert\.encoder\.layer\.2\.crossattention\.self\.key\.bias"):
    blip2_from_lavis({"model": state}, None, qconfig)


def test_released_sizes_have_the_released_tensor_shapes():
  """hawk7b's towers against the shapes of eva_vit_g.pth / blip2_pretrained_flant5xxl.pth."""
  from hawk_jax.convert.blip2_hf import _torch_shapes, qformer_param_shapes, vision_param_shapes
  from hawk_jax.convert.blip2_tables import qformer_rules, vision_rules
  from hawk_jax.models.model_config import hawk_config
  config = hawk_config("hawk7b")
  vision = _torch_shapes(vision_rules(config.vision, "lavis", ""),
                         vision_param_shapes(config.vision), scan=True)
  assert vision["cls_token"] == (1, 1, 1408) and vision["pos_embed"] == (1, 257, 1408)
  assert vision["patch_embed.proj.weight"] == (1408, 3, 14, 14)
  assert vision["blocks.{i}.attn.qkv.weight"] == (4224, 1408)
  assert vision["blocks.{i}.attn.q_bias"] == (1408,)
  assert vision["blocks.{i}.mlp.fc1.weight"] == (6144, 1408)
  qformer = _torch_shapes(qformer_rules(config.qformer, "lavis", "Qformer."),
                          qformer_param_shapes(config.qformer), scan=False)
  assert qformer["Qformer.bert.encoder.layer.10.crossattention.self.key.weight"] == (768, 1408)
  assert "Qformer.bert.encoder.layer.11.crossattention.self.key.weight" not in qformer
  assert qformer["Qformer.bert.encoder.layer.11.intermediate_query.dense.weight"] == (3072, 768)
  assert len(qformer) == 2 + 12 * 16 + 6 * 10  # embeddings LN; per layer SA + FFN; CA in 6
  video = _torch_shapes(qformer_rules(config.video_qformer, "lavis", "video_Qformer."),
                        qformer_param_shapes(config.video_qformer), scan=False)
  assert video["video_Qformer.bert.encoder.layer.1.crossattention.self.value.weight"] == (768, 768)
