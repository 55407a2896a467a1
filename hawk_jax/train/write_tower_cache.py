"""Cache the frozen towers' output for a pre-extracted dataset, so training skips the ViTs.

  python -m hawk_jax.train.write_tower_cache --towers WORKDIR --data_dir DATA --out DIR \\
      [--split train,test] [--num_frames 32] [--batch_size 8] [--dtype float16]

then train with `--config.data.frame_tokens_dir=DIR` (same num_frames; augmentation is then
off). WORKDIR is any workdir holding the frozen towers in `frozen/` or referring to them with
`frozen_ref.json` (a converted-towers workdir from `python -m hawk_jax.convert from-torch`,
or any stage's); only its two ViTs, `ln_vision`s, image Q-Formers and image-query tokens
are read, not the LLM.

Every record of each split is decoded, its `num_frames` frames picked and resized to the
model's image size without augmentation (exactly the loader's evaluation view,
`loaders.plain_visual`), and `Hawk.frozen_frame_tokens` gives the two [T, Qi, Hq] arrays that
data_pipelines/tower_cache.py stores (layout, storage precision and what a cache cannot do are
described there). The batch is split over all local devices. A run that stops resumes: shards
already written are kept, and a rerun writes only the missing ones (a finished cache is left
as it is). Towers are computed in the workdir config's dtypes (bfloat16 at full size, as
training computes them) unless --compute_dtype says otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from data_pipelines import loaders, records, tower_cache
from hawk_jax import checkpoint, console
from hawk_jax.models.hawk import Hawk
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.sharding import DEFAULT_RULES, batch_sharding, make_mesh, replicated
from hawk_jax.workdir import load_params, read_config

log = logging.getLogger("hawk_jax.write_tower_cache")

# The frozen parameter groups of a branch that `Hawk.frozen_frame_tokens` reads.
TOWER_GROUPS = ("vit", "qformer", "query_tokens")
BRANCHES = ("appearance", "motion")
COMPUTE_DTYPES = ("config", "float32", "bfloat16")


@dataclasses.dataclass
class Towers:
  """The frozen towers of a workdir, ready for `Hawk.frozen_frame_tokens`."""
  workdir: str
  cfg: Any                  # the workdir's stage config (ConfigDict)
  config: HawkConfig        # its model, with the compute dtype applied
  params: dict              # {branch: {vit, qformer, query_tokens, video_query_tokens}}
  probe: str                # tower_cache.towers_probe of the two image-query token tensors
  compute_dtype: str


def load_towers(workdir: str, compute_dtype: str = "config") -> Towers:
  """The frozen towers of WORKDIR (its frozen/, or those its frozen_ref.json refers to): only
  the groups `Hawk.frozen_frame_tokens` reads, of both branches, on the first local device."""
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute dtype {compute_dtype!r}: expected one of {COMPUTE_DTYPES}")
  workdir = str(checkpoint.as_path(workdir))  # local (made absolute) or gs://
  config = HawkConfig.from_stage_config(read_config(workdir))
  if config.trainable_query_tokens_motion:
    raise ValueError(
        f"{workdir}: its config trains query_tokens_motion (variant=released), so the motion "
        f"towers' output changes during training and cannot be cached (and the token is not "
        f"among its frozen/ parameters). Cache towers whose config has "
        f"model.trainable_query_tokens_motion=False, and train with that setting.")
  loaded = load_params(workdir, parts=("frozen",), dtype=compute_dtype,
                       groups=[(b, g) for b in BRANCHES for g in TOWER_GROUPS])
  config, params = loaded.config, loaded.params
  probe = tower_cache.towers_probe(params["appearance"]["query_tokens"],
                                   params["motion"]["query_tokens"])
  # Each Branch's setup() declares its video query tokens, so applying any Branch method
  # needs that parameter present; frozen_frame_tokens never reads it.
  for b in BRANCHES:
    params[b]["video_query_tokens"] = jnp.zeros(
        (1, config.video_qformer.num_query_tokens, config.video_qformer.hidden_size),
        jnp.float32)
  return Towers(workdir, loaded.cfg, config, params, probe, compute_dtype)


def tower_function(config: HawkConfig, mesh):
  """jit((params, frames u8, motion u8) -> (appearance, motion) float32 [B, T, Qi, Hq]), the
  batch split over the mesh's batch axes and the towers replicated."""
  model = Hawk(config)
  rules = tuple(DEFAULT_RULES)

  def run(params, frames, motion):
    with nn.logical_axis_rules(rules):
      app, mot = model.apply({"params": params}, frames, motion,
                             method=Hawk.frozen_frame_tokens)
    return app.astype(jnp.float32), mot.astype(jnp.float32)

  pixels = batch_sharding(mesh, 5, rules)
  tokens = batch_sharding(mesh, 4, rules)
  return jax.jit(run, in_shardings=(replicated(mesh), pixels, pixels),
                 out_shardings=(tokens, tokens))


def _decoder(source, num_frames: int, image_size: int):

  def load(index: int):
    index = int(index)
    try:
      decoded = records.decode_record(source[index])
      frames, motion, _ = loaders.plain_visual(decoded, num_frames, image_size)
    except (ValueError, KeyError) as e:
      raise ValueError(f"record {index} of the split: {e}") from e
    return index, decoded["video"], frames, motion
  return load


def _batches(source, start: int, stop: int, batch_size: int, num_frames: int, image_size: int,
             workers: int):
  """(indices, videos, frames, motion) batches of records [start, stop), decoded in threads."""
  import grain
  ds = grain.MapDataset.range(start, stop).map(_decoder(source, num_frames, image_size))
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, workers),
                                                 prefetch_buffer_size=2 * batch_size)))
  items = []
  for item in it:
    items.append(item)
    if len(items) == batch_size:
      yield _stack(items)
      items = []
  if items:
    yield _stack(items)


def _stack(items):
  return ([i for i, *_ in items], [v for _, v, *_ in items],
          np.stack([f for *_, f, _ in items]), np.stack([m for *_, m in items]))


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  """Pads the batch axis to n rows (repeating the last), so every device gets equal rows."""
  if len(x) == n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


@dataclasses.dataclass
class SplitSummary:
  split: str
  records: int
  written: int          # records computed in this run
  skipped_shards: int   # shards found complete
  seconds: float
  bytes: int


def cache_split(towers: Towers, fn, mesh, data_dir: str, split: str, out: str, *,
                num_frames: int, batch_size: int, storage_dtype: str, shard_size: int,
                workers: int, progress: bool) -> SplitSummary:
  t0 = time.perf_counter()
  source = records.open_split(data_dir, split)
  n = len(source)
  if n == 0:
    raise ValueError(f"{data_dir}: split {split!r} is empty")
  dataset_dir = records.find_dataset_dirs(data_dir)[0]
  info = tower_cache.write_split_info(out, split, dataset_dir=dataset_dir, num_records=n,
                                      shard_size=shard_size)
  if tower_cache.remove_partial_shards(out, split):
    log.info("%s: removed half-written shards of an interrupted run", split)
  todo = tower_cache.missing_shards(out, split)
  shard_size = info["shard_size"]
  devices = mesh.devices.size
  rows = -(-batch_size // devices) * devices
  image_size = towers.config.vision.image_size

  from tqdm import tqdm
  todo_records = sum(min(n, (k + 1) * shard_size) - k * shard_size for k in todo)
  bar = tqdm(total=n, initial=n - todo_records, desc=f"towers {split}", unit="video",
             disable=not progress, dynamic_ncols=True)
  written = 0

  def encoded(k):
    nonlocal written
    start, stop = k * shard_size, min(n, (k + 1) * shard_size)
    for idx, videos, frames, motion in _batches(source, start, stop, batch_size, num_frames,
                                                image_size, workers):
      app, mot = fn(towers.params, _pad_to(frames, rows), _pad_to(motion, rows))
      app, mot = np.asarray(app)[:len(idx)], np.asarray(mot)[:len(idx)]
      for j, (i, v) in enumerate(zip(idx, videos)):
        yield tower_cache.encode_record(i, v, app[j], mot[j], storage_dtype)
      written += len(idx)
      bar.update(len(idx))

  with jax.set_mesh(mesh):
    for k in todo:
      tower_cache.write_shard(tower_cache.shard_path(out, split, k), encoded(k))
  bar.close()
  size = sum(epath.Path(tower_cache.shard_path(out, split, k)).stat().length
             for k in range(info["num_shards"]))
  return SplitSummary(split, n, written, info["num_shards"] - len(todo),
                      time.perf_counter() - t0, size)


def _dataset_splits(data_dir: str) -> list[str]:
  import tensorflow_datasets as tfds
  dirs = records.find_dataset_dirs(data_dir)
  if len(dirs) != 1:
    raise ValueError(f"{data_dir}: expected one written dataset, found {dirs or 'none'}")
  return sorted(tfds.builder_from_directory(dirs[0]).info.splits)


def _clear(out: str) -> None:
  """--overwrite: removes a previous cache's files (its meta and split folders) only."""
  root = epath.Path(out)
  if not root.is_dir():
    return
  for path in root.iterdir():
    if path.is_dir() and (path / tower_cache.SPLIT_FILE).exists():
      path.rmtree()
  if (root / tower_cache.META_FILE).exists():
    (root / tower_cache.META_FILE).unlink()


def make_parser() -> argparse.ArgumentParser:
  p = console.parser("python -m hawk_jax.train.write_tower_cache", __doc__)
  p.add_argument("--towers", required=True,
                 help="workdir holding frozen/ (or frozen_ref.json) and config.json")
  p.add_argument("--data_dir", required=True, help="pre-extracted dataset (data_pipelines.extract)")
  p.add_argument("--out", required=True, help="cache folder (config.data.frame_tokens_dir)")
  p.add_argument("--split", default="", help="comma-separated splits (default: all)")
  p.add_argument("--num_frames", type=int, default=None,
                 help="frames per video; must equal the training config's data.num_frames "
                      "(default: the towers workdir's)")
  p.add_argument("--batch_size", type=int, default=8, help="videos per tower call")
  p.add_argument("--dtype", default="float16", choices=tower_cache.STORAGE_DTYPES,
                 help="storage dtype of the cached tokens")
  p.add_argument("--compute_dtype", default="config", choices=COMPUTE_DTYPES,
                 help="dtype the towers run in (config: as training runs them)")
  p.add_argument("--devices", type=int, default=0, help="local devices to use (0: all)")
  p.add_argument("--shard_size", type=int, default=tower_cache.DEFAULT_SHARD_SIZE,
                 help="records per ArrayRecord shard (the unit of resumption)")
  p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                 help="decoding threads")
  p.add_argument("--overwrite", action="store_true", help="discard an existing cache in --out")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  return p


def run(args: argparse.Namespace) -> list[SplitSummary]:
  if args.batch_size < 1 or args.shard_size < 1:
    raise ValueError("--batch_size and --shard_size must be >= 1")
  out = str(checkpoint.as_path(args.out))  # local (made absolute) or gs://
  towers = load_towers(args.towers, args.compute_dtype)
  num_frames = args.num_frames or int(towers.cfg.data.num_frames)
  if num_frames > towers.config.max_frames:
    raise ValueError(f"--num_frames {num_frames}: the model's frame position table has "
                     f"{towers.config.max_frames} rows")
  splits = [s.strip() for s in args.split.split(",") if s.strip()] or \
      _dataset_splits(args.data_dir)
  if args.overwrite:
    _clear(out)
  qcfg = towers.config.qformer
  tower_cache.write_meta(out, tower_cache.CacheMeta(
      storage_dtype=args.dtype, num_frames=num_frames,
      image_size=towers.config.vision.image_size, num_query_tokens=qcfg.num_query_tokens,
      hidden_size=qcfg.hidden_size, normalize_pixels=towers.config.normalize_pixels,
      towers_workdir=towers.workdir, towers_probe=towers.probe,
      compute_dtype=args.compute_dtype))
  devices = jax.local_devices()
  if args.devices:
    devices = devices[:args.devices]
  mesh = make_mesh((1, len(devices), 1), devices=devices)
  fn = tower_function(towers.config, mesh)
  summaries = []
  for split in splits:
    summaries.append(cache_split(
        towers, fn, mesh, args.data_dir, split, out, num_frames=num_frames,
        batch_size=args.batch_size, storage_dtype=args.dtype, shard_size=args.shard_size,
        workers=args.workers, progress=not args.no_progress))
  return summaries


def main(argv: Sequence[str] | None = None) -> int:
  args = make_parser().parse_args(argv)
  console.setup_logging(args.log_level)
  try:
    summaries = run(args)
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f"write_tower_cache: {e}", file=sys.stderr)
    return 1
  for s in summaries:
    rate = s.written / s.seconds if s.seconds else 0.0
    print(f"{s.split}: {s.records} records, {s.written} computed now ({rate:.1f}/s), "
          f"{s.skipped_shards} shards already done, {s.bytes / 1e6:.1f} MB in "
          f"{checkpoint.as_path(args.out) / s.split}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
