"""The training input of a stage, from its config (the Grain loaders of data_pipelines)."""
from __future__ import annotations

import logging

import jax

from data_pipelines import loaders, tower_cache
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.stage_config import ConfigError
from hawk_jax.text.tokenizer import check_fits_vocab, load_tokenizer
from hawk_jax.workdir import load_params

log = logging.getLogger("hawk_jax.train")


def tokenizer_for(cfg):
  tok = load_tokenizer(cfg.tokenizer_path or None)
  check_fits_vocab(tok, cfg.model.llm.vocab_size)
  return tok


def train_examples(cfg, train: bool = True) -> loaders.TrainExamples:
  """The training examples a stage config describes, built once. `train=False` gives the
  held-out evaluation loss's: no augmentation, another seed."""
  config = HawkConfig.from_stage_config(cfg)
  frame_tokens_dir = cfg.data.get("frame_tokens_dir", "")
  return loaders.TrainExamples(
      stage=1 if cfg.data.source == "captions" else 2, num_frames=cfg.data.num_frames,
      image_size=cfg.data.image_size, num_visual_tokens=config.num_visual_tokens,
      max_len=cfg.data.max_len, ml_max_len=cfg.data.ml_max_len,
      max_text_tokens=cfg.data.max_text_tokens, seed=cfg.seed + (0 if train else 1),
      augment=train and cfg.data.get("augment", True) and not frame_tokens_dir,
      shared_crop=cfg.data.shared_crop, description_swap_probability=cfg.data.description_prob,
      frame_tokens_dir=frame_tokens_dir,
      # config.json of runs before the field existed: the parser they used on a machine
      # without spaCy (the only one a CI machine has)
      motion_text_backend=cfg.data.get("motion_text_backend", "rules"))


def batch_spec(cfg, batch_size: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch the train step takes (MaxText's get_shaped_batch): the loader's layout
  (`TrainExamples.batch_spec`) less the motion-language arrays when the loss has no L_ML pass.
  The loop's batch shardings, the planner's abstract batch and the benchmark's random batch
  all come from here."""
  config = HawkConfig.from_stage_config(cfg)
  spec = train_examples(cfg).batch_spec(
      int(cfg.train.batch_size if batch_size is None else batch_size),
      frame_token_shape=(config.qformer.num_query_tokens, config.qformer.hidden_size))
  if cfg.loss.ml_source != "motion_text":
    spec = {k: v for k, v in spec.items() if not k.startswith("ml_")}
  return spec


def train_iterator(cfg, split: str = "train", train: bool = True, start_step: int = 0):
  """A checkpointable Grain iterator of per-host numpy batches for stage 1 or 2, starting at
  batch `start_step` (a batch depends only on (seed, step), whatever the process count)."""
  _check_data_dir(cfg)
  if cfg.train.batch_size % jax.process_count():
    raise ConfigError(f"--config.train.batch_size={cfg.train.batch_size} is not divisible by "
                      f"the {jax.process_count()} processes; use a multiple of "
                      f"{jax.process_count()}")
  examples = train_examples(cfg, train)
  if examples.frame_tokens_dir:
    check_tower_cache(cfg, examples.frame_tokens_dir)
  ds = loaders.make_train_loader(
      cfg.data.dir, examples, tokenizer_for(cfg),
      batch_size=cfg.train.batch_size // jax.process_count(),
      worker_count=cfg.data.worker_count if train else 0, split=split, shuffle=train,
      start_step=start_step)
  return iter(ds)


def _check_data_dir(cfg) -> None:
  if not cfg.data.dir:
    raise ConfigError("--config.data.dir is empty: point it at a pre-extracted dataset "
                      "(python -m data_pipelines.extract ... --out_dir DIR)")


def check_records(cfg) -> None:
  """The training split's records against the config, before anything is written: the motion
  mode, frame count and frame size the records were extracted with must be those the config
  trains on (the error says which flag to change)."""
  _check_data_dir(cfg)
  try:
    loaders.check_records_fit(cfg.data.dir, "train", motion_mode=cfg.data.motion,
                              num_frames=int(cfg.data.num_frames),
                              image_size=int(cfg.data.image_size))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def check_tower_cache(cfg, frame_tokens_dir: str) -> None:
  """Refuses a tower cache that does not fit the run: other frame count, image size, Q-Former
  width or pixel normalisation, towers other than those of `init.from_stage` (compared by
  their image-query tokens), or a model that trains `query_tokens_motion` (the released
  variant: the motion towers' output then changes every step)."""
  config = HawkConfig.from_stage_config(cfg)
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
  q = load_params(prev, groups=[("appearance", "query_tokens"), ("motion", "query_tokens")]).params
  probe = tower_cache.towers_probe(q["appearance"]["query_tokens"], q["motion"]["query_tokens"])
  if probe != meta.towers_probe:
    raise ValueError(f"tower cache {frame_tokens_dir} was made from the towers of "
                     f"{meta.towers_workdir}, but this run's frozen towers come from {prev} and "
                     f"differ (their image-query tokens do); cache the towers of {prev}")
