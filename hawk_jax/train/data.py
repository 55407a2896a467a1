"""The training input of a stage, from its config (the Grain loaders of data_pipelines)."""
from __future__ import annotations

import logging

import jax

from hawk_jax.stage_config import hawk_model_config
from hawk_jax.text.tokenizer import check_fits_vocab, load_tokenizer

log = logging.getLogger("hawk_jax.train")


def tokenizer_for(cfg):
  tok = load_tokenizer(cfg.tokenizer_path or None)
  check_fits_vocab(tok, cfg.model.llm.vocab_size)
  return tok


def train_iterator(cfg, split: str = "train", train: bool = True):
  """A checkpointable Grain iterator of per-host numpy batches for stage 1 or 2."""
  from data_pipelines import loaders
  if not cfg.data.dir:
    raise ValueError("config.data.dir is empty: point it at a pre-extracted dataset "
                     "(python -m data_pipelines.extract ... --out_dir DIR)")
  if cfg.train.batch_size % jax.process_count():
    raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")
  config = hawk_model_config(cfg)
  stage = 1 if cfg.data.source == "captions" else 2
  frame_tokens_dir = cfg.data.get("frame_tokens_dir", "")
  if frame_tokens_dir:
    check_tower_cache(cfg, frame_tokens_dir)
  ds = loaders.make_train_loader(
      cfg.data.dir, stage=stage, tokenizer=tokenizer_for(cfg), num_frames=cfg.data.num_frames,
      image_size=cfg.data.image_size, num_visual_tokens=config.num_visual_tokens,
      max_len=cfg.data.max_len, ml_max_len=cfg.data.ml_max_len,
      batch_size=cfg.train.batch_size // jax.process_count(), seed=cfg.seed + (0 if train else 1),
      worker_count=cfg.data.worker_count if train else 0, split=split,
      shuffle=train,
      augment=train and cfg.data.get("augment", True) and not frame_tokens_dir,
      shared_crop=cfg.data.shared_crop,
      max_text_tokens=cfg.data.max_text_tokens,
      description_swap_probability=cfg.data.description_prob, frame_tokens_dir=frame_tokens_dir)
  return iter(ds)


def check_tower_cache(cfg, frame_tokens_dir: str) -> None:
  """Refuses a tower cache that does not fit the run: other frame count, image size, Q-Former
  width or pixel normalisation, towers other than those of `init.from_stage` (compared by
  their image-query tokens), or a model that trains `query_tokens_motion` (the released
  variant: the motion towers' output then changes every step)."""
  from data_pipelines import tower_cache
  config = hawk_model_config(cfg)
  if config.trainable_query_tokens_motion:
    raise ValueError(
        f"data.frame_tokens_dir={frame_tokens_dir!r}: this model trains query_tokens_motion "
        f"(variant=released), so the motion towers' output changes during training and cannot "
        f"come from a cache; set model.trainable_query_tokens_motion=False or train on pixels")
  meta = tower_cache.read_meta(frame_tokens_dir)
  tower_cache.check_fits(
      meta, num_frames=int(cfg.data.num_frames), image_size=int(cfg.data.image_size),
      num_query_tokens=config.qformer.num_query_tokens, hidden_size=config.qformer.hidden_size,
      normalize_pixels=config.normalize_pixels, where=f"tower cache {frame_tokens_dir}")
  prev = cfg.init.get("from_stage", "")
  if not prev:
    log.warning("data.frame_tokens_dir: init.from_stage is empty, so the frozen towers are "
                "randomly initialised and cannot be checked against the cache's (made from "
                "%s)", meta.towers_workdir)
    return
  from hawk_jax.train.write_tower_cache import read_towers
  _, _, q = read_towers(prev, groups=("query_tokens",))
  probe = tower_cache.towers_probe(q["appearance"]["query_tokens"], q["motion"]["query_tokens"])
  if probe != meta.towers_probe:
    raise ValueError(f"tower cache {frame_tokens_dir} was made from the towers of "
                     f"{meta.towers_workdir}, but this run's frozen towers come from {prev} and "
                     f"differ (their image-query tokens do); cache the towers of {prev}")
