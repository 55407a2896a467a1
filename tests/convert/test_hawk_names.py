"""HAWK <-> PyTorch: the original-named PyTorch HAWK against the JAX model, exact round trips,
the released .pth layout (hawk7b names and shapes from eval_shape alone), bad files, the CLI."""
import os
import tracemalloc

import jax
import numpy as np
import pytest
import torch

from configs import stage2_finetune
from configs.common import model_for
from hawk_jax.convert import hawk_names as ht
from hawk_jax.convert.cli import main as convert_main
from hawk_jax.convert.cli import read_for_export
from hawk_jax.convert.table import ConversionError
from hawk_jax.convert.torch_hawk import HawkTorch, from_params, state_numpy, to_torch_state
from hawk_jax.models.hawk import TRAINABLE_GROUPS, Hawk, normalize_frames
from hawk_jax.models.params import flatten_paths as flatten
from hawk_jax.tensor_files import UnsafeCheckpointError
from hawk_jax.workdir import write_workdir


def original_trainable_names() -> set[str]:
  """The 129 names a released `.pth["model"]` holds (docs/model.md, "Checkpoints and
  conversion"), written out by hand."""
  names = {"query_tokens_motion"}
  for s in ("", "_motion"):
    qf = f"video_Qformer{s}.bert."
    names |= {qf + f"embeddings.LayerNorm.{p}" for p in ("weight", "bias")}
    for i in (0, 1):
      for block in ("attention", "crossattention"):
        stems = [f"{block}.self.{x}" for x in ("query", "key", "value")]
        stems += [f"{block}.output.dense", f"{block}.output.LayerNorm"]
        names |= {f"{qf}encoder.layer.{i}.{st}.{p}" for st in stems for p in ("weight", "bias")}
      for st in ("intermediate_query.dense", "output_query.dense", "output_query.LayerNorm"):
        names |= {f"{qf}encoder.layer.{i}.{st}.{p}" for p in ("weight", "bias")}
    names |= {f"video_query_tokens{s}", f"video_frame_position_embedding{s}.weight"}
    proj = "llama_proj_motion" if s else "llama_proj"
    names |= {f"{proj}_0.{p}" for p in ("weight", "bias")}
    names |= {f"{proj}_last.{h}.{p}" for h in ("encoder_0", "encoder_1", "decoder_2")
              for p in ("weight", "bias")}
  return names


def released_buffers() -> dict[str, np.ndarray]:
  """The 36 buffers of a released file (4 Q-Former position_ids, 32 LLaMA inv_freq)."""
  out = {f"{q}.bert.embeddings.position_ids": np.arange(512)[None]
         for q in ("Qformer", "Qformer_motion", "video_Qformer", "video_Qformer_motion")}
  for i in range(32):
    out[f"llama_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = np.ones(64, np.float32)
  return out


def randomize(model: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
  """Every tensor redrawn (init's ones/zeros would hide a swapped scale or a dropped bias)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
      if "norm" in name.lower() and name.endswith(".weight"):
        p.add_(1.0)
  return model


class NotATensor:
  """A custom class: a .pth holding it needs arbitrary unpickling."""

  def __init__(self):
    self.payload = "code could run here"


@pytest.fixture(scope="module")
def tiny():
  config = model_for("tiny", "released")
  torch.manual_seed(0)
  source = randomize(HawkTorch(config), seed=0)
  params = ht.assemble(ht.hawk_params_from_torch(state_numpy(source), config))
  return config, params


def _inputs(config, batch=2, frames=3, seed=0):
  rng = np.random.default_rng(seed)
  s, n = config.vision.image_size, config.num_visual_tokens
  fr = rng.integers(0, 256, (batch, frames, s, s, 3), dtype=np.uint8)
  mo = (fr * (rng.random((batch, frames, s, s, 1)) > 0.5)).astype(np.uint8)
  length = n + 10
  ids = rng.integers(3, config.llm.vocab_size, (batch, length)).astype(np.int32)
  vm = np.zeros((batch, length), np.int32)
  vm[0, 2:2 + n] = 1
  vm[1, 4:4 + n] = 1
  ids[vm == 1] = config.llm.vocab_size + 7  # a placeholder id outside the vocabulary, as released
  am = np.ones((batch, length), np.int32)
  am[1, -3:] = 0  # right padding
  return fr, mo, ids, am, vm


def _equal_trees(a, b):
  fa, fb = flatten(a), flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    x, y = np.asarray(fa[k]), np.asarray(fb[k])
    assert x.dtype == y.dtype and x.shape == y.shape, k
    assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f"{k} differs"


# ----------------------------------------------------------------------------- the torch model

def test_torch_state_dict_speaks_original_names(tiny):
  config, params = tiny
  model = from_params(params, config)
  state = model.state_dict()
  want = ht.hawk_torch_shapes(config)
  assert {k: tuple(v.shape) for k, v in state.items()} == want
  for key in ("visual_encoder.blocks.1.attn.q_bias", "visual_encoder_motion.cls_token",
              "ln_vision.weight", "ln_vision_motion.bias",
              "Qformer.bert.embeddings.LayerNorm.weight",
              "Qformer_motion.bert.encoder.layer.0.crossattention.self.key.weight",
              "video_Qformer_motion.bert.encoder.layer.1.output_query.LayerNorm.bias",
              "query_tokens", "video_frame_position_embedding_motion.weight",
              "llama_proj_last.encoder_1.weight", "llama_model.model.layers.1.mlp.up_proj.weight",
              "llama_model.lm_head.weight"):
    assert key in state, key
  # EVA's q and v biases sit around a zero k third inside transformers' fused qkv.bias.
  fused = model.visual_encoder.encoder.layers[1].self_attn.qkv.bias.detach()
  d = config.vision.hidden_size
  assert torch.equal(fused[:d], state["visual_encoder.blocks.1.attn.q_bias"])
  assert not fused[d:2 * d].any()
  assert torch.equal(fused[2 * d:], state["visual_encoder.blocks.1.attn.v_bias"])
  # A released-style full state dict (with its buffers) loads strictly.
  other = HawkTorch(config)
  with_buffers = dict(state, **{k: torch.from_numpy(v) for k, v in released_buffers().items()})
  assert not other.load_state_dict(with_buffers, strict=True).missing_keys
  assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())


def test_pixel_normalisation_switch_matches_jax():
  frames = np.random.default_rng(1).integers(0, 256, (1, 2, 8, 8, 3), dtype=np.uint8)
  for normalize in (False, True):
    cfg = model_for("tiny", "paper" if normalize else "released")
    model = torch.nn.Module()
    model.normalize_pixels = cfg.normalize_pixels
    x = HawkTorch.pixels(model, torch.from_numpy(frames)).numpy()  # [B, 3, T, H, W]
    want = np.asarray(normalize_frames(frames, normalize)).transpose(0, 4, 1, 2, 3)
    np.testing.assert_allclose(x, want, atol=1e-6)


def test_jax_and_exported_torch_give_same_embeddings_and_logits(tiny):
  config, params = tiny
  model = Hawk(config)
  fr, mo, ids, am, vm = _inputs(config)

  @jax.jit
  def forward(p):
    v = {"params": p}
    enc = model.apply(v, fr, mo, method=Hawk.encode_video)
    emb = model.apply(v, ids, vm, enc["visual"], method=Hawk.prompt_embeddings)
    logits = model.apply(v, inputs_embeds=emb, attention_mask=am,
                         method=lambda m, **kw: m.llm(**kw))
    return emb, logits, enc["tight_appearance"], enc["tight_motion"]

  emb, logits, tight_app, tight_mot = (np.asarray(x) for x in forward(params))
  torch_model = from_params(params, config)
  with torch.no_grad():
    out = torch_model(torch.from_numpy(fr), torch.from_numpy(mo), torch.from_numpy(ids).long(),
                      torch.from_numpy(am).long(), torch.from_numpy(vm))
  real = am.astype(bool)
  assert np.abs(out["inputs_embeds"].numpy() - emb).max() < 1e-4
  assert np.abs(out["logits"].numpy()[real] - logits[real]).max() < 1e-4
  assert np.abs(out["tight_appearance"].numpy() - tight_app).max() < 1e-4
  assert np.abs(out["tight_motion"].numpy() - tight_mot).max() < 1e-4
  assert np.abs(logits).max() > 0.1  # not a degenerate comparison


def test_jax_torch_jax_round_trip_is_bit_exact(tiny):
  config, params = tiny
  assert sorted(flatten(params)) == sorted(flatten(ht.abstract_params(config)))
  torch_model = from_params(params, config)
  back = ht.assemble(ht.hawk_params_from_torch(torch_model.state_dict(), config))
  _equal_trees(back, params)


# ----------------------------------------------------------------------------- .pth files

@pytest.mark.parametrize("variant", ["released", "paper"])
def test_hawk7b_export_names_and_shapes_from_eval_shape_alone(variant):
  config = model_for("hawk7b", variant)
  ht.abstract_params(config)  # the eval_shape itself, outside the measurement
  tracemalloc.start()
  shapes = ht.hawk_torch_shapes(config, trainable_only=True)
  full = ht.hawk_torch_shapes(config)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated for shapes"
  assert set(shapes) == original_trainable_names() and len(shapes) == 129
  assert shapes["llama_proj_0.weight"] == (4096, 768)
  assert shapes["llama_proj_motion_last.encoder_1.weight"] == (256, 4096)
  assert shapes["llama_proj_last.decoder_2.weight"] == (4096, 4096)
  assert shapes["video_query_tokens"] == shapes["query_tokens_motion"] == (1, 32, 768)
  assert shapes["video_frame_position_embedding_motion.weight"] == (32, 768)
  assert shapes["video_Qformer.bert.encoder.layer.1.crossattention.self.key.weight"] == (768, 768)
  assert sum(int(np.prod(s)) for s in shapes.values()) == 113_455_616
  assert full["visual_encoder.blocks.38.attn.qkv.weight"] == (3 * 1408, 1408)
  assert "visual_encoder.blocks.39.norm1.weight" not in full
  assert full["visual_encoder_motion.patch_embed.proj.weight"] == (1408, 3, 14, 14)
  assert full["llama_model.model.layers.31.mlp.gate_proj.weight"] == (11008, 4096)
  assert full["Qformer.bert.encoder.layer.10.crossattention.self.key.weight"] == (768, 1408)
  assert "Qformer.bert.encoder.layer.11.crossattention.self.key.weight" not in full


def test_exported_pth_loads_weights_only_with_the_129_names(tiny, tmp_path):
  config, params = tiny
  trainable, full = ht.hawk_to_torch(params, config)
  path = tmp_path / "hawk.pth"
  torch.save({"model": to_torch_state(trainable)}, path)
  loaded = torch.load(path, map_location="cpu", weights_only=True)
  assert set(loaded) == {"model"}
  assert set(loaded["model"]) == original_trainable_names()
  assert all(v.dtype == torch.float32 for v in loaded["model"].values())
  # As the original code loads it: strict=False, the frozen towers reported missing.
  result = HawkTorch(config).load_state_dict(loaded["model"], strict=False)
  assert not result.unexpected_keys
  assert set(result.missing_keys) == set(full) - original_trainable_names()


def test_released_style_file_with_buffers_imports(tiny, tmp_path):
  config, params = tiny
  trainable, _ = ht.hawk_to_torch(params, config)
  state = dict(trainable, **released_buffers())
  assert len(state) == 129 + 36
  path = tmp_path / "finetuned.pth"
  torch.save({"model": to_torch_state(state)}, path)
  groups = ht.hawk_params_from_torch(str(path), config)
  assert set(groups) == set(ht.EXPORTED_TRAINABLE)
  for group_path, tree in groups.items():
    want = params
    for p in group_path:
      want = want[p]
    _equal_trees({"x": tree}, {"x": want})


def test_bad_keys_are_named(tiny):
  config, params = tiny
  trainable, _ = ht.hawk_to_torch(params, config)
  with pytest.raises(ConversionError, match=r"llama_proj\.weight"):
    ht.hawk_params_from_torch(dict(trainable, **{"llama_proj.weight": np.zeros((4, 4))}), config)
  gone = "video_Qformer.bert.encoder.layer.1.output_query.LayerNorm.bias"
  with pytest.raises(ConversionError, match=r"incomplete.*" + gone.replace(".", r"\.")):
    ht.hawk_params_from_torch({k: v for k, v in trainable.items() if k != gone}, config)
  bad = dict(trainable, **{"llama_proj_0.weight": trainable["llama_proj_0.weight"].T})
  with pytest.raises(ConversionError, match=r"llama_proj_0\.weight has shape"):
    ht.hawk_params_from_torch(bad, config)


def test_unsafe_pickle_is_refused(tmp_path, capsys):
  path = tmp_path / "evil.pth"
  torch.save({"model": {"query_tokens_motion": torch.zeros(1, 8, 64)}, "extra": NotATensor()},
             path)
  with pytest.raises(UnsafeCheckpointError, match="weights_only"):
    ht.hawk_params_from_torch(str(path), model_for("tiny", "released"))
  code = convert_main(["from-torch", "--hawk", str(path), "--size", "tiny", "--variant",
                       "released", "--out", str(tmp_path / "wd")])
  assert code == 2
  assert "refused" in capsys.readouterr().err
  assert not (tmp_path / "wd" / "frozen").exists()


# ----------------------------------------------------------------------------- the CLI

def _write_workdir(workdir, params, step=3, variant="released"):
  """A tiny stage-2 workdir as training writes it: config.json, frozen/, checkpoints/<step>."""
  write_workdir(workdir, stage2_finetune.get_config(f"size=tiny,variant={variant}"), params,
                step=step)


def test_cli_round_trip(tiny, tmp_path, capsys):
  from transformers import LlamaForCausalLM
  config, params = tiny
  workdir, out = str(tmp_path / "run"), str(tmp_path / "export" / "hawk.pth")
  _write_workdir(workdir, params)

  hf_dir = str(tmp_path / "llama_hf")
  assert convert_main(["to-torch", "--checkpoint", workdir, "--out", out, "--full",
                       "--hf_llama", hf_dir]) == 0
  model = torch.load(out, weights_only=True)["model"]
  assert set(model) == original_trainable_names()
  full = torch.load(str(tmp_path / "export" / "hawk_full.pth"), weights_only=True)["model"]
  assert set(full) == set(ht.hawk_torch_shapes(config))
  llama = LlamaForCausalLM.from_pretrained(hf_dir)
  assert torch.equal(llama.lm_head.weight, full["llama_model.lm_head.weight"])

  # The full state dict comes back bit-exact.
  back = str(tmp_path / "back")
  assert convert_main(["from-torch", "--hawk", str(tmp_path / "export" / "hawk_full.pth"),
                       "--size", "tiny", "--variant", "released", "--out", back]) == 0
  back_config, back_params = read_for_export(back)
  assert back_config == config
  _equal_trees(back_params, params)

  # A released-style .pth + HF towers: the rest is random, and said to be.
  towers = from_params(params, config)
  vision_dir, qformer_dir = str(tmp_path / "vision_hf"), str(tmp_path / "qformer_hf")
  towers.visual_encoder.save_pretrained(vision_dir)
  towers.Qformer.save_pretrained(qformer_dir)
  capsys.readouterr()
  rel = str(tmp_path / "released")
  assert convert_main(["from-torch", "--hawk", out, "--llama_hf", hf_dir, "--vision_hf",
                       vision_dir, "--qformer_hf", qformer_dir, "--size", "tiny", "--variant",
                       "released", "--out", rel]) == 0
  printed = capsys.readouterr().out
  assert "never loads BLIP-2 into Qformer_motion" in printed
  assert "appearance/query_tokens" in printed and "random init" in printed
  _, rel_params = read_for_export(rel)
  for group in ht.EXPORTED_TRAINABLE + (("llm",), ("appearance", "vit"),
                                        ("appearance", "qformer")):
    got, want = rel_params, params
    for p in group:
      got, want = got[p], want[p]
    _equal_trees({"x": got}, {"x": want})
  app_vit, mot_vit = params["appearance"]["vit"], rel_params["motion"]["vit"]
  _equal_trees({k: v for k, v in mot_vit.items() if k != "ln_vision"},
               {k: v for k, v in app_vit.items() if k != "ln_vision"})
  # As released: ln_vision_motion is never loaded (identity), Qformer_motion is random.
  assert np.all(np.asarray(mot_vit["ln_vision"]["scale"]) == 1)
  assert not np.any(np.asarray(mot_vit["ln_vision"]["bias"]))
  assert not np.array_equal(np.asarray(rel_params["motion"]["qformer"]["input_norm"]["bias"]),
                            np.asarray(params["appearance"]["qformer"]["input_norm"]["bias"]))


def test_to_torch_without_full_reads_the_trainable_part_and_frozen_motion_tokens(tiny, tmp_path):
  config, params = tiny
  workdir, out = str(tmp_path / "run"), str(tmp_path / "hawk.pth")
  _write_workdir(workdir, params, variant="paper")  # query_tokens_motion frozen here
  _, part = read_for_export(workdir, include_frozen=False)
  assert set(part["motion"]) == {"query_tokens", *TRAINABLE_GROUPS}
  assert "vit" not in part["appearance"] and "llm" not in part
  assert convert_main(["to-torch", "--checkpoint", workdir, "--out", out]) == 0
  model = torch.load(out, weights_only=True)["model"]
  assert set(model) == original_trainable_names()
  np.testing.assert_array_equal(model["query_tokens_motion"].numpy(),
                                np.asarray(params["motion"]["query_tokens"]))
  assert not os.path.exists(str(tmp_path / "hawk_full.pth"))


def test_cli_from_lavis_towers_paper_variant(tiny, tmp_path, capsys):
  """LAVIS eva_vit_g.pth (40th block dropped) + BLIP-2 (text parts ignored) feed both branches
  in the paper variant; the HAWK file's query_tokens_motion wins over BLIP-2's."""
  config, params = tiny
  state = from_params(params, config).state_dict()
  eva = {k[len("visual_encoder."):]: v for k, v in state.items()
         if k.startswith("visual_encoder.")}
  eva.update({k.replace("blocks.1.", "blocks.2."): v for k, v in eva.items() if ".1." in k})
  blip2 = {k: v for k, v in state.items()
           if k.startswith(("Qformer.", "ln_vision.")) or k == "query_tokens"}
  blip2["Qformer.bert.embeddings.word_embeddings.weight"] = torch.zeros(5, 64)
  trainable, _ = ht.hawk_to_torch(params, config)
  files = {name: str(tmp_path / f"{name}.pth") for name in ("eva", "blip2", "hawk")}
  torch.save(eva, files["eva"])
  torch.save({"model": blip2}, files["blip2"])
  torch.save({"model": to_torch_state(trainable)}, files["hawk"])
  llama_dir = str(tmp_path / "llama")
  from hawk_jax.convert.llama_hf import llama_to_hf
  llama_to_hf(config.llm, params["llm"], llama_dir)

  out = str(tmp_path / "paper")
  assert convert_main(["from-torch", "--hawk", files["hawk"], "--llama_hf", llama_dir,
                       "--eva_vit_lavis", files["eva"], "--blip2_lavis", files["blip2"],
                       "--size", "tiny", "--variant", "paper", "--out", out]) == 0
  printed = capsys.readouterr().out
  assert "random init" not in printed and "motion/query_tokens from" in printed
  got_config, got = read_for_export(out)
  assert got_config == model_for("tiny", "paper")
  for branch in ("appearance", "motion"):
    for group in ("vit", "qformer"):
      _equal_trees({"x": got[branch][group]}, {"x": params["appearance"][group]})
    for group in TRAINABLE_GROUPS + ("query_tokens",):
      _equal_trees({"x": got[branch][group]}, {"x": params[branch][group]})
  _equal_trees(got["llm"], params["llm"])
