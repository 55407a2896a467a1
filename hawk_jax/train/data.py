"""The training input of a stage, from its config (the Grain loaders of data_pipelines)."""
from __future__ import annotations

import jax

from hawk_jax.config_io import hawk_model_config
from hawk_jax.text.tokenizer import check_fits_vocab, load_tokenizer


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
  ds = loaders.make_train_loader(
      cfg.data.dir, stage=stage, tokenizer=tokenizer_for(cfg), num_frames=cfg.data.num_frames,
      image_size=cfg.data.image_size, num_visual_tokens=config.num_visual_tokens,
      max_len=cfg.data.max_len, ml_max_len=cfg.data.ml_max_len,
      batch_size=cfg.train.batch_size // jax.process_count(), seed=cfg.seed + (0 if train else 1),
      worker_count=cfg.data.worker_count if train else 0, split=split,
      shuffle=train, augment=train, shared_crop=cfg.data.shared_crop,
      max_text_tokens=cfg.data.max_text_tokens,
      description_swap_probability=cfg.data.description_prob)
  return iter(ds)
