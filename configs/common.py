"""Shared pieces of the stage configs (big_vision style: `get_config("size=tiny,variant=paper")`).

`variant` switches each numeric difference between the paper and the released code
(docs/model.md, "Paper and released code"): pixel normalisation, the motion mode,
`query_tokens_motion` trainable, stage 2's L_ML, and whether both branches share one crop.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from hawk_jax.models.model_config import HawkConfig, hawk_config
from hawk_jax.sharding import DEFAULT_RULES

SIZES = ("tiny", "small", "hawk7b", "hawk13b")
VARIANTS = ("paper", "released")


def parse_arg(arg: str | None) -> dict:
  """"size=tiny,variant=paper" -> {"size": "tiny", "variant": "paper"} (defaults filled)."""
  out = {"size": "tiny", "variant": "paper"}
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    if "=" not in part:
      raise ValueError(f"config arg {part!r}: expected key=value (e.g. size=tiny)")
    k, v = part.split("=", 1)
    out[k.strip()] = v.strip()
  if out["size"] not in SIZES:
    raise ValueError(f"size={out['size']!r}: known sizes {SIZES}")
  if out["variant"] not in VARIANTS:
    raise ValueError(f"variant={out['variant']!r}: known variants {VARIANTS}")
  return out


def model_for(size: str, variant: str) -> HawkConfig:
  """Model dims of `size` in the size's precision (HawkConfig.with_dtype: float32 throughout
  at the CPU sizes, so smoke runs and parity checks are exact; bf16 frozen towers and compute
  with float32 trainable parameters at full size), remat at full size, and the variant's
  switches."""
  cpu_size = size in ("tiny", "small")
  cfg = hawk_config(size).with_dtype("float32" if cpu_size else "bfloat16")
  remat = "none" if cpu_size else "full"
  return dataclasses.replace(
      cfg,
      vision=dataclasses.replace(cfg.vision, remat_policy=remat),
      llm=dataclasses.replace(cfg.llm, remat_policy=remat),
      normalize_pixels=variant != "released",
      trainable_query_tokens_motion=variant == "released",
  )


def base_config(stage: int, arg: str | None) -> ml_collections.ConfigDict:
  a = parse_arg(arg)
  size, variant = a["size"], a["variant"]
  tiny = size == "tiny"
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.size = size
  c.variant = variant
  c.model = HawkConfig.to_dict(model_for(size, variant))
  c.seed = 42

  # Mesh: (data, fsdp, tensor); -1 takes the remaining devices.
  c.mesh_shape = (1, -1, 1)
  c.logical_axis_rules = [list(r) for r in DEFAULT_RULES]

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""                       # pre-extracted TFDS/ArrayRecord folder
  # A tower cache of data.dir (python -m hawk_jax.train.write_tower_cache): train on the frozen
  # towers' cached output instead of pixels, skipping the ViTs; no augmentation. "" = off.
  c.data.frame_tokens_dir = ""
  c.data.num_frames = 8 if tiny else 32
  c.data.image_size = c.model.vision.image_size
  c.data.motion = "flow_mask" if variant == "released" else "flow_soft"
  c.data.shared_crop = variant != "released"
  c.data.augment = True                 # RandomResizedCrop in training (off with frame tokens)
  # tiny: 256, not 128 -- the tiny tokenizer spells the timestamps digit by digit, so with the
  # 16 visual tokens a first question as long as the yes/no anomaly question ends near token
  # 128, and a 128 cut dropped its answer from every stage-2 example (and from the LLM's
  # language pretraining).
  c.data.max_len = 256 if tiny else 512
  c.data.max_text_tokens = 32           # stage 1 caption tokens (released max_txt_len)
  c.data.ml_max_len = 64 if tiny else 96
  c.data.worker_count = 0 if tiny else 8
  c.data.description_prob = 0.5
  # The parser that makes L_ML's motion text from a caption (hawk_jax/text/motion_text.py):
  # "rules" (no model needed; the same text on every machine) or "spacy" (the released
  # behaviour; needs spaCy and en_core_web_sm installed, else the run stops at start).
  c.data.motion_text_backend = "rules"

  c.tokenizer_path = ""                 # "" -> the tiny tokenizer shipped in hawk_jax/text/assets

  c.init = ml_collections.ConfigDict()
  # A previous stage's workdir, or one written by `python -m hawk_jax.convert from-torch`
  # (pretrained towers and/or released HAWK weights): its frozen/ towers and its latest
  # trainable parameters are restored onto the mesh.
  c.init.from_stage = ""

  c.optim = ml_collections.ConfigDict()
  c.optim.peak_lr = 1e-5 if not tiny else 1e-3
  c.optim.init_lr = 1e-6 if not tiny else 1e-4
  c.optim.end_lr = 1e-6 if not tiny else 1e-4
  c.optim.warmup_steps = 1000 if not tiny else 5
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.05
  c.optim.grad_clip_norm = 0.0          # 0: no clipping (as released)
  c.optim.grad_accum_steps = 1

  c.loss = ml_collections.ConfigDict()
  c.loss.w_vl = 1.0
  c.loss.w_ml = 0.1
  c.loss.w_mv = 0.1
  # "motion_text": L_ML is a second LLM pass on the motion text (paper); "vl": the released
  # stage 2 returns L_VL in its place (total = 1.1 L_VL + 0.1 L_MV).
  c.loss.ml_source = "motion_text"

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 4                # global
  c.train.num_steps = 80 if tiny else 10000
  c.train.log_every = 1 if tiny else 50
  c.train.ckpt_every = 20 if tiny else 1000
  c.train.keep_checkpoints = 2 if tiny else 3
  # A step with a non-finite loss or gradient norm is skipped (its update dropped inside the
  # step); this many in a row stop the run, keeping the last good parameters.
  c.train.max_consecutive_skips = 5
  c.train.eval_batches = 2
  # Peak FLOP/s the logged MFU is rated against (hawk_jax/hardware.py: cpu, v4, v5e, v5p, v6e,
  # h100, h200; "auto": the chip jax.devices()[0].device_kind names), times the number of
  # devices; float32 compute is rated against the chip's f32 peak where one is listed.
  c.train.chip = "auto"
  # How this workdir keeps the frozen towers (ViTs, image Q-Formers, LLM; ~18 GB at hawk7b):
  # "copy" saves them in frozen/ (safe if init.from_stage is deleted later); "reference"
  # writes frozen_ref.json naming the workdir they were loaded from unchanged (that workdir
  # must then be kept). Without init.from_stage towers, "reference" saves a copy and warns.
  c.train.frozen = "copy"

  c.generate = ml_collections.ConfigDict()
  c.generate.max_new_tokens = 48 if tiny else 256
  c.generate.strategy = "greedy"
  c.generate.num_beams = 1
  c.generate.temperature = 1.0
  c.generate.top_p = 0.9
  return c
