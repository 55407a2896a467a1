"""A cache of the frozen towers' output per record, so training can skip the frozen ViT.

The appearance and motion branches each run a frozen EVA ViT, `ln_vision` and a frozen image
Q-Former over every frame before anything trainable happens (docs/model.md, "The model").
Their output, [T, Qi, Hq] per branch and video (Qi query tokens of width Hq per frame),
depends only on the frozen parameters and the pixels, so it can be computed once
(`python -m hawk_jax.train.write_tower_cache`) and read back by the training loader in place
of the pixels (`TrainExamples(frame_tokens_dir=DIR, augment=False)`, or
`--config.data.frame_tokens_dir=DIR` for `python -m hawk_jax.train`). A training step then
runs no ViT at all (what that saves: BENCHMARKS.md, "Training from the tower cache").

What it costs:
- No pixel augmentation. The cache holds the towers' output for the plain resize of the stored
  frames (the evaluation view), so the paper's RandomResizedCrop cannot apply: a cropped frame
  has other features. Training with cached tokens trains on one fixed view per video. A run
  that wants both would need several cached crops per video (and a loader picking one per
  epoch); that is not built.
- The cache belongs to one set of frozen towers. Training must use the same ones (the workdir
  the cache was made from, or a stage started from it); the loader checks the query tokens of
  the towers (`towers_probe`) when the config names the towers' workdir. The released variant,
  which trains `query_tokens_motion` (whose output the motion cache holds), cannot use a cache.
- Storage precision: float16 by default. The tokens are LayerNorm outputs of modest size, so
  float16 keeps them to a relative error of at most 2^-11 (about 5e-4) and holds bfloat16
  tower outputs (hawk7b computes the towers in bfloat16) exactly; values beyond float16's
  range (65504) are an error, not an infinity. bfloat16 storage (relative error 2^-8) and
  float32 (exact, twice the size) are options. At hawk7b a video's cache is
  2 x 32 x 32 x 768 x 2 bytes = 3.1 MB in float16, against ~0.6 MB of JPEG/PNG frames.

Layout of a cache folder (local or gs://; ArrayRecord files; records hold only arrays, numbers
and text):
  DIR/tower_cache.json                  what the cache is: towers workdir and probe, storage
                                        dtype, [T, Qi, Hq], image size, pixel normalisation
  DIR/<split>/split.json                the dataset folder it was made from, record count,
                                        shard size
  DIR/<split>/tokens-00000.array_record shard k holds records [k * shard_size, ...) in the
                                        split's order; a shard appears (atomic rename) only
                                        once complete, so an interrupted run resumes by
                                        writing the missing shards
Each record is an uncompressed `.npz` (numpy's own zip of .npy arrays, read with
allow_pickle=False): `appearance` and `motion` [T, Qi, Hq] (float16 or float32, or bfloat16
bits as uint16), `record` (its index in the split) and `video` (the record's path), which the
loader checks against the original record it joins.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from typing import Any, Iterable

import numpy as np
from etils import epath

from hawk_jax.tensor_files import is_remote

FORMAT_VERSION = 1
META_FILE = "tower_cache.json"
SPLIT_FILE = "split.json"
STORAGE_DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_SHARD_SIZE = 256
# Keys under which a joined record carries the cached arrays (float32 [T, Qi, Hq]).
APPEARANCE_KEY = "frame_tokens_appearance"
MOTION_KEY = "frame_tokens_motion"
# The meta fields two runs writing into one folder must agree on.
_IDENTITY_FIELDS = ("format", "storage_dtype", "num_frames", "image_size", "num_query_tokens",
                    "hidden_size", "normalize_pixels", "towers_probe", "compute_dtype")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class CacheError(ValueError):
  """A cache folder that is missing, incomplete, or does not fit the data or the model."""


@dataclasses.dataclass(frozen=True)
class CacheMeta:
  """What a cache folder holds (DIR/tower_cache.json)."""
  storage_dtype: str
  num_frames: int
  image_size: int
  num_query_tokens: int
  hidden_size: int
  normalize_pixels: bool
  towers_workdir: str
  towers_probe: str
  compute_dtype: str
  format: int = FORMAT_VERSION

  def __post_init__(self):
    if self.storage_dtype not in STORAGE_DTYPES:
      raise CacheError(f"storage dtype {self.storage_dtype!r}: expected one of {STORAGE_DTYPES}")

  @property
  def token_shape(self) -> tuple[int, int, int]:
    return (self.num_frames, self.num_query_tokens, self.hidden_size)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str, where: str) -> "CacheMeta":
    try:
      d = json.loads(text)
      names = {f.name for f in dataclasses.fields(cls)}
      missing = names - set(d) - {"format"}
      if missing:
        raise CacheError(f"{where}: lacks {sorted(missing)}")
      return cls(**{k: v for k, v in d.items() if k in names})
    except (json.JSONDecodeError, TypeError) as e:
      raise CacheError(f"{where}: not a tower-cache description ({e})") from e


def towers_probe(query_tokens_appearance, query_tokens_motion) -> str:
  """A short identity of a set of frozen towers: the hash of both branches' image-query tokens.

  These are pretrained (appearance) or seeded random (motion) tensors that differ between any
  two sets of towers in practice; reading them from a workdir takes kilobytes, so the loader
  can check a cache against the towers a run trains with. It is an identity check, not a hash
  of every weight."""
  h = hashlib.sha256()
  for x in (query_tokens_appearance, query_tokens_motion):
    x = np.asarray(x, np.float32)
    h.update(str(x.shape).encode())
    h.update(np.ascontiguousarray(x).tobytes())
  return h.hexdigest()[:16]


# --------------------------------------------------------------------------- one record

def to_storage(x: np.ndarray, dtype: str, what: str) -> np.ndarray:
  """float [T, Qi, Hq] -> the stored array (bfloat16 as its uint16 bits)."""
  x = np.asarray(x, np.float32)
  if not np.isfinite(x).all():
    raise CacheError(f"{what}: the towers produced non-finite values")
  if dtype == "float16":
    peak = float(np.abs(x).max(initial=0.0))
    if peak > _FLOAT16_MAX:
      raise CacheError(f"{what}: a value of magnitude {peak:.4g} exceeds float16's range; cache "
                       f"with --dtype bfloat16 or float32")
    return x.astype(np.float16)
  if dtype == "bfloat16":
    import ml_dtypes
    return x.astype(ml_dtypes.bfloat16).view(np.uint16)
  if dtype == "float32":
    return x
  raise CacheError(f"storage dtype {dtype!r}: expected one of {STORAGE_DTYPES}")


def from_storage(x: np.ndarray, dtype: str) -> np.ndarray:
  """The stored array -> float32."""
  if dtype == "bfloat16":
    import ml_dtypes
    return np.asarray(x, np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
  return np.asarray(x, np.float32)


def encode_record(index: int, video: str, appearance: np.ndarray, motion: np.ndarray,
                  dtype: str) -> bytes:
  where = f"record {index} ({video!r})"
  buf = io.BytesIO()
  np.savez(buf, appearance=to_storage(appearance, dtype, where),
           motion=to_storage(motion, dtype, where), record=np.int64(index),
           video=np.str_(video))
  return buf.getvalue()


def decode_record(data: bytes, dtype: str, where: str = "cache record") -> dict[str, Any]:
  """{record, video, appearance, motion} with float32 arrays."""
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      return {"record": int(z["record"]), "video": str(z["video"]),
              "appearance": from_storage(z["appearance"], dtype),
              "motion": from_storage(z["motion"], dtype)}
  except (ValueError, KeyError, OSError) as e:
    raise CacheError(f"{where}: unreadable tower-cache record ({e})") from e


# ----------------------------------------------------------------------- folder and meta
# The folder is local or gs:// (etils.epath). Local files are written to a temporary name and
# renamed into place; on gs:// an object appears whole when its upload ends, so it is written
# directly (JSON) or uploaded from a finished local file (shards: ArrayRecord writes local
# files only). Shards on gs:// are read by ArrayRecord itself, which reads gs:// natively.

def _abs(path) -> str:
  """A folder as stored in split.json: gs:// as it is, a local path made absolute."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def split_dir(cache_dir: str, split: str) -> str:
  return os.fspath(epath.Path(cache_dir) / split)


def shard_path(cache_dir: str, split: str, shard: int) -> str:
  return os.fspath(epath.Path(split_dir(cache_dir, split)) / f"tokens-{shard:05d}.array_record")


def num_shards(num_records: int, shard_size: int) -> int:
  return -(-num_records // shard_size)


def _write_text_atomic(path: str, text: str) -> None:
  if is_remote(path):
    epath.Path(path).write_text(text, encoding="utf-8")
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def read_meta(cache_dir: str) -> CacheMeta:
  path = epath.Path(cache_dir) / META_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path}: no tower cache here (make one with python -m "
                            f"hawk_jax.train.write_tower_cache)")
  return CacheMeta.from_json(path.read_text(encoding="utf-8"), os.fspath(path))


def write_meta(cache_dir: str, meta: CacheMeta) -> None:
  """Writes DIR/tower_cache.json, or checks that the one there describes the same cache (so a
  rerun resumes, and a run with other towers or settings does not mix into it)."""
  epath.Path(cache_dir).mkdir(parents=True, exist_ok=True)
  path = epath.Path(cache_dir) / META_FILE
  if path.exists():
    old = read_meta(cache_dir)
    diff = {k: (getattr(old, k), getattr(meta, k)) for k in _IDENTITY_FIELDS
            if getattr(old, k) != getattr(meta, k)}
    if diff:
      raise CacheError(f"{cache_dir} holds a tower cache made with other settings "
                       f"(field: cached vs now) {diff}; use another --out, or --overwrite")
    return
  _write_text_atomic(os.fspath(path), meta.to_json())


def write_split_info(cache_dir: str, split: str, *, dataset_dir: str, num_records: int,
                     shard_size: int) -> dict:
  """DIR/<split>/split.json; an existing one must agree (same source size and sharding)."""
  info = {"split": split, "dataset_dir": _abs(dataset_dir),
          "num_records": int(num_records), "shard_size": int(shard_size),
          "num_shards": num_shards(num_records, shard_size)}
  epath.Path(split_dir(cache_dir, split)).mkdir(parents=True, exist_ok=True)
  path = epath.Path(split_dir(cache_dir, split)) / SPLIT_FILE
  if path.exists():
    old = read_split_info(cache_dir, split)
    for k in ("num_records", "shard_size"):
      if old[k] != info[k]:
        raise CacheError(f"{path}: {k} {old[k]} cached, {info[k]} now (was the dataset "
                         f"rewritten?); use another --out, or --overwrite")
    return old
  _write_text_atomic(os.fspath(path), json.dumps(info, indent=2))
  return info


def read_split_info(cache_dir: str, split: str) -> dict:
  path = epath.Path(split_dir(cache_dir, split)) / SPLIT_FILE
  if not path.exists():
    root = epath.Path(cache_dir)
    have = sorted(d.name for d in root.iterdir() if (d / SPLIT_FILE).exists()) \
        if root.is_dir() else []
    raise FileNotFoundError(f"{cache_dir}: the tower cache has no split {split!r} (it has "
                            f"{have}); run python -m hawk_jax.train.write_tower_cache "
                            f"--split {split}")
  return json.loads(path.read_text(encoding="utf-8"))


def missing_shards(cache_dir: str, split: str) -> list[int]:
  info = read_split_info(cache_dir, split)
  return [k for k in range(info["num_shards"])
          if not epath.Path(shard_path(cache_dir, split, k)).exists()]


def remove_partial_shards(cache_dir: str, split: str) -> int:
  """Deletes shard files an interrupted run left half-written (`*.tmp-*`); returns how many.
  (On gs:// there are none: a shard is uploaded only once complete.)"""
  d = epath.Path(split_dir(cache_dir, split))
  stale = [p for p in d.iterdir() if p.name.startswith("tokens-") and ".tmp-" in p.name]
  for p in stale:
    p.unlink()
  return len(stale)


def write_shard(path: str, records: Iterable[bytes]) -> int:
  """Writes encoded records to `path` atomically (a local temp file, renamed into place or,
  for gs://, uploaded when complete)."""
  from array_record.python.array_record_module import ArrayRecordWriter
  remote = is_remote(path)
  tmp_dir = tempfile.mkdtemp(prefix="hawk_tower_cache_") if remote else None
  tmp = (os.path.join(tmp_dir, epath.Path(path).name) if remote
         else f"{path}.tmp-{os.getpid()}")
  try:
    # group_size:1 keeps every record separately addressable (random access, as TFDS writes).
    writer = ArrayRecordWriter(tmp, "group_size:1")
    n = 0
    try:
      for r in records:
        writer.write(r)
        n += 1
    finally:
      writer.close()
    if remote:
      epath.Path(tmp).copy(path, overwrite=True)
    else:
      os.replace(tmp, path)
  finally:
    if tmp_dir is not None:
      shutil.rmtree(tmp_dir, ignore_errors=True)
  return n


# --------------------------------------------------------------------------------- reading

class TokenSource:
  """Random access (len, [i]) to one cached split: the decoded record i. Picklable (Grain
  workers reopen the files)."""

  def __init__(self, cache_dir: str, split: str):
    self.cache_dir = os.fspath(cache_dir)
    self.split = split
    self.meta = read_meta(self.cache_dir)
    info = read_split_info(self.cache_dir, split)
    self.dataset_dir = info["dataset_dir"]
    missing = missing_shards(self.cache_dir, split)
    if missing:
      raise CacheError(f"{split_dir(self.cache_dir, split)}: incomplete tower cache, "
                       f"{len(missing)} of {info['num_shards']} shards missing (first "
                       f"{missing[:5]}); rerun python -m hawk_jax.train.write_tower_cache to "
                       "finish")
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    paths = [shard_path(self.cache_dir, split, k) for k in range(info["num_shards"])]
    self._records = ArrayRecordDataSource(paths)
    if len(self._records) != info["num_records"]:
      raise CacheError(f"{split_dir(self.cache_dir, split)}: shards hold "
                       f"{len(self._records)} records, split.json says {info['num_records']}")

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    where = f"{split_dir(self.cache_dir, self.split)} record {index}"
    rec = decode_record(self._records[index], self.meta.storage_dtype, where)
    if rec["record"] != index:
      raise CacheError(f"{where}: holds record {rec['record']} (shards out of order?)")
    for key in ("appearance", "motion"):
      if rec[key].shape != self.meta.token_shape:
        raise CacheError(f"{where}: {key} has shape {rec[key].shape}, the cache's is "
                         f"{self.meta.token_shape}")
    return rec


class JoinedSource:
  """The original split's raw records with the cached tokens added under APPEARANCE_KEY and
  MOTION_KEY (float32 [T, Qi, Hq]); record i of each, checked to be the same video."""

  def __init__(self, records, tokens: TokenSource):
    if len(records) != len(tokens):
      raise CacheError(f"the dataset split has {len(records)} records but the tower cache "
                       f"{split_dir(tokens.cache_dir, tokens.split)} has {len(tokens)}; it was "
                       f"made from another dataset ({tokens.dataset_dir})")
    self.records = records
    self.tokens = tokens

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    raw = dict(self.records[index])
    cached = self.tokens[index]
    video = _text(raw.get("video", ""))
    if cached["video"] != video:
      raise CacheError(f"record {index}: the dataset has video {video!r} but the tower cache "
                       f"{split_dir(self.tokens.cache_dir, self.tokens.split)} has "
                       f"{cached['video']!r}; it was made from another dataset "
                       f"({self.tokens.dataset_dir})")
    raw[APPEARANCE_KEY] = cached["appearance"]
    raw[MOTION_KEY] = cached["motion"]
    return raw


def _text(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def check_fits(meta: CacheMeta, *, num_frames: int | None = None,
               image_size: int | None = None, num_query_tokens: int | None = None,
               hidden_size: int | None = None, normalize_pixels: bool | None = None,
               where: str = "tower cache") -> None:
  """Raises CacheError naming every setting where the cache differs from what a run uses."""
  want = {"num_frames": num_frames, "image_size": image_size,
          "num_query_tokens": num_query_tokens, "hidden_size": hidden_size,
          "normalize_pixels": normalize_pixels}
  diff = {k: (getattr(meta, k), v) for k, v in want.items()
          if v is not None and getattr(meta, k) != v}
  if diff:
    raise CacheError(f"{where} does not fit this run (setting: cached vs run) {diff}; "
                     f"make a cache with these settings")


def open_joined(records, cache_dir: str, split: str, **fits: Any) -> JoinedSource:
  """`records` (the original split's random-access source) joined with its cached tokens,
  after checking the cache against the run's settings (`check_fits` keywords)."""
  tokens = TokenSource(cache_dir, split)
  check_fits(tokens.meta, where=f"tower cache {cache_dir}", **fits)
  return JoinedSource(records, tokens)
