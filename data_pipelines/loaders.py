"""Grain input pipelines for HAWK's three stages, over the pre-extracted ArrayRecord splits.

Training (stages 1 and 2)::

  examples = TrainExamples(stage=2, num_frames=32, image_size=224, num_visual_tokens=64,
                           max_len=512, ml_max_len=65, seed=42)
  ds = make_train_loader(data_dir, examples, tok, batch_size=4, worker_count=4)
  it = iter(ds)                      # grain DatasetIterator: get_state() / set_state()
  batch = next(it)                   # numpy, leading axis = per-host batch
  batch = sharding.put_on_mesh(batch, mesh)   # global jax.Arrays (hawk_jax.sharding)

The pipeline: `records.open_split` -> `MapDataset.source` -> seeded global shuffle (a new
order each epoch) -> repeat (`num_epochs`, None = forever) -> per-example transform ->
per-host shard (this host's contiguous rows of each global batch) -> batch (drop remainder) ->
`to_iter_dataset` -> `mp_prefetch` worker processes (`worker_count`, 0 = in-process). The
transform sees the example's global position `index` and draws all its randomness (crop,
description swap) from `SeedSequence([seed, index, stream])`, so a batch depends only on
(seed, step), not on the number of workers or hosts, and a restored iterator state
(`get_state`/`set_state`, or `grain.checkpoint.CheckpointSave/CheckpointRestore` in an Orbax
Composite) continues with exactly the batches an uninterrupted run would have produced.

Per training example (fixed shapes; int32 text arrays, right-padded with the pad id 0):
  frames, motion      uint8 [T, S, S, 3]  same frame indices and the SAME RandomResizedCrop
                                          (scale 0.5-1, ratio 3/4-4/3) for both streams
                                          (shared_crop=False: one each, as released),
                                          resized to S = image_size; eval: plain resize
  input_ids, attention_mask, visual_mask, labels   [max_len]
                      visual_mask is 1 on the num_visual_tokens placeholders (first half
                      appearance, second half motion); labels = token id where supervised,
                      -100 elsewhere, aligned with the inputs (the model shifts)
  ml_input_ids, ml_attention_mask, ml_visual_mask, ml_labels   [ml_max_len]
                      the motion-language pass [BOS][num_visual_tokens/2 motion][motion text]
  records_skipped     int32 (one per row, host-side: NOT in `batch_spec`, never sent to a
                      device) 1 where the row's record could not make a prompt (stage 1: no
                      caption and no description; stage 2: no QA and no description; or
                      unreadable qa_json) and the next record of the split that can took its
                      place, else 0. Summed over steps it counts skipped records (each once per
                      epoch); each is also named once per process in a WARNING log.
With `frame_tokens_dir` (a cache written by `python -m hawk_jax.train.write_tower_cache`, see
data_pipelines/tower_cache.py) `frames` and `motion` are instead the frozen towers' output
for the unaugmented frames, float32 [T, Qi, Hq] per stream, and no pixel is decoded; every
other field is unchanged. Augmentation must then be off (augment=False): RandomResizedCrop
acts on pixels, and the cache holds one fixed view (the plain resize) per video.
Stage 1 uses the record's caption (`[BOS][visual][caption "\\n"]`, 32 text tokens), stage 2
its QA pairs in the LLaMA-2 chat template, the first pair replaced with probability 0.5 by
(description question, description) (hawk_jax.text.prompts). The motion text comes from the
caption (stage 1) or the description (stage 2).

Evaluation (stage 3): `make_eval_dataset` gives one item per description and per QA pair of
a split -- frames, motion, the unpadded test prompt (input_ids, attention_mask, visual_mask),
`task` ("description"/"qa"), `question`, `reference`, `video`, `record` (index in the split)
-- and `eval_batches` collates
them, left-padding the prompts for batched generation.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any, Iterator, Sequence

import cv2
import grain
import jax
import numpy as np

from data_pipelines import records, tower_cache
from hawk_jax.text import motion_text as motion_text_lib
from hawk_jax.text import prompts
from hawk_jax.text.caption import normalize_caption

log = logging.getLogger("data_pipelines.loaders")

CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
STAGES = (1, 2)
# Random streams of one example, so that adding a draw to one never shifts another.
_CROP_STREAM, _SWAP_STREAM, _MOTION_CROP_STREAM = 0, 1, 2
# The per-row count of skipped records in a training batch (see the module docstring), and
# the key under which a raw record carries it from _PromptableRecords to TrainTransform.
SKIPPED_FIELD = "records_skipped"
_SKIPPED_KEY = "_hawk_records_skipped"


# ------------------------------------------------------------------------------ video ops

def select_frames(num_stored: int, num_frames: int) -> np.ndarray:
  """Indices into the stored frames giving `num_frames`, uniformly (floor(i * T / n), the
  released sampling rule; repeats frames when fewer are stored)."""
  if num_stored < 1:
    raise ValueError("a record with no frames")
  return (np.arange(num_frames) * num_stored // num_frames).astype(np.int64)


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale=CROP_SCALE, ratio=CROP_RATIO) -> tuple[int, int, int, int]:
  """(top, left, h, w) as torchvision's RandomResizedCrop draws it: up to 10 tries of a
  random area fraction and log-uniform aspect ratio, then a centre crop fallback."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 [T, H, W, C] -> [T, size, size, C]: area averaging when shrinking, bicubic (as the
  released RandomResizedCropVideo) when enlarging."""
  t, h, w, c = frames.shape
  if (h, w) == (size, size):
    return np.ascontiguousarray(frames)
  interp = cv2.INTER_AREA if (size < h and size < w) else cv2.INTER_CUBIC
  out = np.empty((t, size, size, c), np.uint8)
  for i in range(t):  # one frame per call: OpenCV's bicubic takes at most 4 channels
    out[i] = cv2.resize(frames[i], (size, size), interpolation=interp).reshape(size, size, c)
  return out


def crop_and_resize(frames: np.ndarray, motion: np.ndarray, size: int,
                    rng: np.random.Generator | None,
                    motion_rng: np.random.Generator | None = None):
  """ONE crop box (random when `rng` is given, else the whole frame) applied to both streams;
  with `motion_rng` the motion stream draws its own box instead (the released behaviour)."""
  h, w = frames.shape[1:3]
  if rng is None:
    both = resize_frames(np.concatenate([frames, motion], axis=0), size)
    return both[:len(frames)], both[len(frames):]
  box = random_resized_crop_box(rng, h, w)
  motion_box = box if motion_rng is None else random_resized_crop_box(motion_rng, h, w)

  def crop(x, top_left_hw):
    top, left, ch, cw = top_left_hw
    return x[:, top:top + ch, left:left + cw]

  if motion_box == box:
    both = resize_frames(np.concatenate([crop(frames, box), crop(motion, box)], axis=0), size)
    return both[:len(frames)], both[len(frames):]
  return resize_frames(crop(frames, box), size), resize_frames(crop(motion, motion_box), size)


def _visual(decoded: dict[str, Any], num_frames: int, image_size: int,
            rng: np.random.Generator | None, motion_rng: np.random.Generator | None = None):
  frames, motion = decoded["frames"], decoded["motion"]
  if frames.shape != motion.shape:
    raise ValueError(f"record {decoded.get('video')!r}: frames {frames.shape} and motion "
                     f"{motion.shape} differ")
  pick = select_frames(frames.shape[0], num_frames)
  frames, motion = crop_and_resize(frames[pick], motion[pick], image_size, rng, motion_rng)
  return frames, motion, np.asarray(decoded["timestamps"], np.float32)[pick]


def plain_visual(decoded: dict[str, Any], num_frames: int, image_size: int):
  """(frames, motion, timestamps) without augmentation: the selected frames resized to
  image_size. What evaluation sees, and what the tower cache holds the features of."""
  return _visual(decoded, num_frames, image_size, None)


def _decode_without_pixels(raw: dict[str, Any]) -> dict[str, Any]:
  """The text fields and timestamps of a raw record (records.decode_record's keys but
  frames, motion and weights), decoding no image: a cached-token example needs none."""
  video = _text_field(raw, "video")
  if "timestamps" not in raw:
    raise KeyError(f"record {video!r} lacks timestamps; has {sorted(raw)}")
  try:
    qa = json.loads(_text_field(raw, "qa_json") or "[]")
  except json.JSONDecodeError as e:
    raise ValueError(f"record {video!r}: qa_json is not JSON ({e})") from e
  return {"video": video, "timestamps": np.asarray(raw["timestamps"], np.float32), "qa": qa,
          **{k: _text_field(raw, k) for k in ("source", "description", "caption")}}


def _cached_visual(raw: dict[str, Any], decoded: dict[str, Any], num_frames: int):
  """(frame tokens, motion tokens, timestamps) of a record joined with its tower cache."""
  frames, motion = raw[tower_cache.APPEARANCE_KEY], raw[tower_cache.MOTION_KEY]
  if frames.shape[0] != num_frames:
    raise ValueError(f"record {decoded['video']!r}: the tower cache holds {frames.shape[0]} "
                     f"frames, the run takes {num_frames}")
  pick = select_frames(len(decoded["timestamps"]), num_frames)
  return frames, motion, decoded["timestamps"][pick]


# ---------------------------------------------------------------------------- transforms

def _padded(prompt: prompts.Prompt, length: int, pad_id: int, prefix: str = "") -> dict:
  return {prefix + k: v for k, v in prompts.pad_right(prompt, length, pad_id).items()}


@dataclasses.dataclass(frozen=True)
class TrainExamples:
  """What a training example is made of: its stage, its shapes and how it is augmented. Built
  once from a stage config (hawk_jax.train.data.train_examples) and handed to the loaders; it
  also says what a batch of them looks like (`batch_spec`)."""
  stage: int
  num_frames: int
  image_size: int
  num_visual_tokens: int
  max_len: int
  ml_max_len: int | None = None  # None: room for [BOS][motion tokens][max_text_tokens]
  max_text_tokens: int = prompts.MAX_CAPTION_TOKENS  # stage-1 caption and motion text cap
  seed: int = 0
  augment: bool = True           # RandomResizedCrop (training only; never on cached tokens)
  shared_crop: bool = True       # False: the motion stream gets its own crop, as released
  description_swap_probability: float = 0.5
  # The motion-text parser, "rules" or "spacy" (config data.motion_text_backend; checked
  # once by make_train_dataset: spaCy that is not installed is an error, not a fallback).
  motion_text_backend: str = "rules"
  # A tower cache of the dataset (python -m hawk_jax.train.write_tower_cache): frames and
  # motion are then its cached frame tokens, float32 [T, Qi, Hq], and augment must be False.
  frame_tokens_dir: str = ""

  def __post_init__(self):
    if self.stage not in STAGES:
      raise ValueError(f"training stage must be one of {STAGES}, got {self.stage!r}")
    if self.frame_tokens_dir and self.augment:
      raise ValueError(f"frame_tokens_dir={self.frame_tokens_dir!r}: cached frame tokens "
                       f"cannot be augmented (RandomResizedCrop acts on pixels); pass "
                       f"augment=False")
    if self.num_visual_tokens <= 0 or self.num_visual_tokens % 2:
      raise ValueError(f"num_visual_tokens must be positive and even, got "
                       f"{self.num_visual_tokens}")
    if self.max_len < self.num_visual_tokens + 2:
      raise ValueError(f"max_len {self.max_len} leaves no room for text after BOS and "
                       f"{self.num_visual_tokens} visual tokens")
    if self.ml_max_len is None:
      object.__setattr__(self, "ml_max_len",
                         1 + self.num_visual_tokens // 2 + self.max_text_tokens)
    if self.ml_max_len < self.num_visual_tokens // 2 + 2:
      raise ValueError(f"ml_max_len {self.ml_max_len} leaves no room for motion text after "
                       f"BOS and {self.num_visual_tokens // 2} motion tokens")

  def batch_spec(self, batch_size: int, frame_token_shape: tuple[int, int] | None = None
                 ) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a batch of `batch_size` examples (the module docstring's layout).
    With a tower cache, `frame_token_shape` is the cached (Qi, Hq) per frame. The loader's
    batches also carry SKIPPED_FIELD, a host-side counter the step never takes, so it is not
    part of the spec (the training loop moves only the spec's keys to the devices)."""
    t, s = self.num_frames, self.image_size
    if self.frame_tokens_dir:
      if frame_token_shape is None:
        raise ValueError("batch_spec of cached frame tokens needs frame_token_shape (Qi, Hq)")
      video = jax.ShapeDtypeStruct((batch_size, t, *frame_token_shape), np.float32)
    else:
      video = jax.ShapeDtypeStruct((batch_size, t, s, s, 3), np.uint8)
    text = jax.ShapeDtypeStruct((batch_size, self.max_len), np.int32)
    ml = jax.ShapeDtypeStruct((batch_size, self.ml_max_len), np.int32)
    return {"frames": video, "motion": video,
            **{k: text for k in TEXT_KEYS}, **{"ml_" + k: ml for k in TEXT_KEYS}}


# The text arrays of an example (prompts.pad_right), and again prefixed "ml_" for the
# motion-language pass.
TEXT_KEYS = ("input_ids", "attention_mask", "visual_mask", "labels")


@dataclasses.dataclass(frozen=True)
class TrainTransform:
  """(index, raw record) -> one training example (see the module docstring). Picklable."""
  examples: TrainExamples
  tokenizer: Any

  def _rng(self, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([self.examples.seed, index, stream]))

  def __call__(self, index: int, raw: dict[str, Any]) -> dict[str, np.ndarray]:
    ex = self.examples
    if ex.frame_tokens_dir:
      decoded = _decode_without_pixels(raw)
      frames, motion, timestamps = _cached_visual(raw, decoded, ex.num_frames)
    else:
      decoded = records.decode_record(raw)
      crop_rng = motion_rng = None
      if ex.augment:
        crop_rng = self._rng(index, _CROP_STREAM)
        if not ex.shared_crop:
          motion_rng = self._rng(index, _MOTION_CROP_STREAM)
      frames, motion, timestamps = _visual(decoded, ex.num_frames, ex.image_size, crop_rng,
                                           motion_rng)
    try:
      texts = self._text_arrays(decoded, timestamps, index)
    except ValueError as e:
      raise ValueError(f"record {decoded['video']!r}: {e}") from e
    return {"frames": frames, "motion": motion, **texts,
            SKIPPED_FIELD: np.int32(raw.get(_SKIPPED_KEY, 0))}

  def _text_arrays(self, decoded, timestamps, index) -> dict[str, np.ndarray]:
    ex, tok, pad = self.examples, self.tokenizer, self.tokenizer.pad_id
    if ex.stage == 1:
      caption = decoded["caption"] or decoded["description"]
      if not caption:
        raise ValueError("neither caption nor description for stage 1")
      prompt = prompts.caption_prompt(tok, normalize_caption(caption), ex.num_visual_tokens,
                                      ex.max_text_tokens)
      motion_source = caption
    else:
      qa, _ = prompts.description_swap(decoded["qa"], decoded["description"],
                                       self._rng(index, _SWAP_STREAM),
                                       ex.description_swap_probability)
      prompt = prompts.instruct_prompt(tok, qa, ex.num_visual_tokens, timestamps,
                                       max_len=ex.max_len)
      motion_source = decoded["description"] or decoded["caption"]
    text = motion_text_lib.extract_motion_text(motion_source, ex.motion_text_backend)
    ml_prompt = prompts.motion_language_prompt(tok, text, ex.num_visual_tokens // 2,
                                               ex.max_text_tokens)
    return {**_padded(prompt, ex.max_len, pad),
            **_padded(ml_prompt, ex.ml_max_len, pad, prefix="ml_")}


def prompt_problem(raw: dict[str, Any], stage: int) -> str:
  """Why a raw record cannot make a training prompt of `stage` ('' when it can), from its text
  fields alone (no pixel decoded): the cases where TrainTransform would raise."""
  description = _text_field(raw, "description")
  try:
    qa = json.loads(_text_field(raw, "qa_json") or "[]")
  except json.JSONDecodeError as e:  # decode_record parses it whatever the stage
    return f"qa_json is not JSON ({e})"
  if stage == 1:
    return "" if _text_field(raw, "caption") or description else \
        "neither caption nor description (stage 1 trains on one of them)"
  if not isinstance(qa, list):
    return f"qa_json holds a {type(qa).__name__}, not a list of QA pairs"
  try:
    for pair in qa:
      for key in ("q", "a"):
        prompts.qa_field(pair, key)
  except ValueError as e:
    return str(e)
  return "" if qa or description else \
      "neither QA pairs nor a description (stage 2 trains on one of them)"


# Records already named in a warning by this process: (where, stage, video).
_WARNED: set[tuple[str, int, str]] = set()


class _PromptableRecords:
  """Random access to a split where a record that cannot make a prompt (`prompt_problem`) is
  replaced by the next one that can (i+1, i+2, ... wrapping), marked `_SKIPPED_KEY` = 1.

  Substituting rather than filtering keeps the length, so batches stay full (static shapes),
  element k of the shuffled stream stays a function of (seed, k) whatever the process count
  or start_step, and the Grain iterator state is still just a position. Each skipped record is
  named in a WARNING once per process. The constructor finds the first usable record, so a
  split with none fails at once (ValueError naming `where`), not on the first batch."""

  def __init__(self, source, stage: int, where: str):
    self.source, self.stage, self.where = source, stage, where
    for i in range(len(source)):
      if not prompt_problem(source[i], stage):
        return
    raise ValueError(f"{where}: none of its {len(source)} records can make a stage-{stage} "
                     f"training prompt (e.g. record 0: {prompt_problem(source[0], stage)})")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    index = int(index)
    n = len(self.source)
    raw = self.source[index]
    problem = prompt_problem(raw, self.stage)
    if not problem:
      return raw
    sub, candidate = index, raw
    while prompt_problem(candidate, self.stage):  # ends: the constructor saw a usable record
      sub = (sub + 1) % n
      candidate = self.source[sub]
    video = _text_field(raw, "video")
    if (self.where, self.stage, video) not in _WARNED:
      _WARNED.add((self.where, self.stage, video))
      log.warning("%s: record %d (%s) skipped: %s; record %d takes its place", self.where,
                  index, video, problem, sub)
    return {**candidate, _SKIPPED_KEY: 1}


# ------------------------------------------------------------------------------- loaders

class _HostRows(grain.MapDataset):
  """Host `index`'s rows of every global batch: with `per_host` rows per host and `count`
  hosts, its k-th element is row (index * per_host + k % per_host) of global batch
  k // per_host. The global batch a pod assembles (jax.make_array_from_process_local_data
  puts host i's rows after host i-1's) is then, row for row, the batch one process would load:
  per-row randomness in the step (dropout) sees the same example in the same row."""

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, index: int, count: int, per_host: int):
    super().__init__(parent)
    self._index, self._count, self._per_host = index, count, per_host
    self._length = len(parent) // (count * per_host) * per_host

  def __len__(self) -> int:
    return self._length

  def _parent_index(self, k: int) -> int:
    batch, row = divmod(k, self._per_host)
    return (batch * self._count + self._index) * self._per_host + row

  def __getitem__(self, k):
    if isinstance(k, slice):
      return self.slice(k)
    return self._parent[self._parent_index(k)]

  def __str__(self) -> str:
    return f"HostRows(host {self._index} of {self._count}, {self._per_host} rows per batch)"


def _shard(ds: grain.MapDataset, shard_index: int | None, shard_count: int | None,
           finite: bool, host_batch: int | None = None) -> grain.MapDataset:
  """This host's elements: with `host_batch` (the per-host batch size) its contiguous rows of
  each global batch (_HostRows), else every count-th from its index (interleaved)."""
  index = jax.process_index() if shard_index is None else shard_index
  count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= index < count:
    raise ValueError(f"shard_index {index} is not in [0, {count})")
  if count == 1:
    return ds
  if host_batch:
    return _HostRows(ds, index, count, host_batch)
  if finite:  # every host gets the same number of examples, hence of steps
    ds = ds[:len(ds) // count * count]
  return ds[index::count]


def make_train_dataset(data_dir: str, examples: TrainExamples, tokenizer, *,
                       split: str = "train", num_epochs: int | None = None,
                       shuffle: bool = True, shard_index: int | None = None,
                       shard_count: int | None = None, host_batch: int | None = None,
                       source=None) -> grain.MapDataset:
  """The per-example MapDataset (after sharding, before batching). With `host_batch` each
  host takes its contiguous rows of every global batch of host_batch * shard_count examples,
  else every shard_count-th example. `source` replaces
  `open_split(data_dir, split)` with any random-access source of raw records; with
  `examples.frame_tokens_dir` every record is joined with its cached frame tokens."""
  if source is None:
    source = records.open_split(data_dir, split)
  if len(source) == 0:
    raise ValueError(f"{data_dir}: split {split!r} is empty")
  if examples.frame_tokens_dir:
    source = tower_cache.open_joined(source, examples.frame_tokens_dir, split,
                                     num_frames=examples.num_frames,
                                     image_size=examples.image_size)
  source = _PromptableRecords(source, examples.stage,
                              f"{data_dir or 'the given source'}: split {split!r}")
  examples = dataclasses.replace(
      examples, motion_text_backend=motion_text_lib.check_backend(examples.motion_text_backend))
  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=examples.seed)
  ds = ds.repeat(num_epochs)
  ds = ds.map_with_index(TrainTransform(examples, tokenizer))
  return _shard(ds, shard_index, shard_count, finite=num_epochs is not None,
                host_batch=host_batch)


def make_train_loader(data_dir: str, examples: TrainExamples, tokenizer, *, batch_size: int,
                      worker_count: int = 0, worker_buffer_size: int = 2,
                      read_threads: int = 2, start_step: int = 0, **kwargs) -> grain.IterDataset:
  """Batched training pipeline; `iter()` of it is a checkpointable grain DatasetIterator.

  batch_size is per host (the global batch is batch_size * process count). worker_count > 0
  decodes and augments in that many worker processes (the caller's entry point must be
  `if __name__ == "__main__":` guarded and absl flags parsed). `start_step` skips that many
  batches without decoding them (resuming on another process count, where the per-process
  iterator states do not apply). Other keyword arguments (split, num_epochs, shuffle, ...) go to
  `make_train_dataset`.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  ds = make_train_dataset(data_dir, examples, tokenizer, host_batch=batch_size, **kwargs)
  ds = ds.batch(batch_size, drop_remainder=True)
  if start_step:
    ds = ds[start_step:]
  # A small prefetch buffer: each element is a whole batch of video frames.
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=max(1, read_threads)))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                     per_worker_buffer_size=worker_buffer_size))
  return it


def check_records_fit(data_dir: str, split: str = "train", *, motion_mode: str,
                      num_frames: int, image_size: int) -> None:
  """Raises ValueError, naming data_dir, the stored and configured values and the flag to
  change, when the split's records do not fit a run's data config. Reads record 0 only (its
  text field motion_mode, its number of stored frames and one decoded frame's size).

  What must fit, from what the loader does with a record:
  - motion mode, exactly: the loader uses the stored motion weights as they are, while
    inference computes `data.motion` from the video, so another mode trains on other motion.
  - frames, at least num_frames: select_frames samples num_frames uniformly from the stored
    ones; from more it subsamples (as sampling the video would), from fewer it repeats frames
    the model never sees repeated at inference.
  - size, at least image_size: crop_and_resize resizes every frame to image_size anyway (the
    crop does too); a smaller stored frame is upscaled, its detail lost for good.
  A tower cache (frame_tokens_dir) is made from these records and checked against the run
  itself (tower_cache.check_fits), so the same records check holds with it.
  """
  source = records.open_split(data_dir, split)
  if len(source) == 0:
    raise ValueError(f"{data_dir}: split {split!r} is empty")
  raw = source[0]
  stored_mode = _text_field(raw, "motion_mode")
  stored_frames = len(raw["frames_jpeg"])
  height, width = records.decode_jpeg(bytes(raw["frames_jpeg"][0])).shape[:2]
  extract = "python -m data_pipelines.extract ..."
  problems = []
  if stored_mode and stored_mode != motion_mode:
    problems.append(
        f"the records hold {stored_mode!r} motion, the config asks for {motion_mode!r}: pass "
        f"--config.data.motion={stored_mode} (the configs set it from the variant: released "
        f"-> flow_mask, paper -> flow_soft), or re-extract with {extract} --motion {motion_mode}")
  if stored_frames < num_frames:
    problems.append(
        f"the records hold {stored_frames} frames per video, the config asks for {num_frames} "
        f"(the loader would repeat frames): pass --config.data.num_frames={stored_frames}, or "
        f"re-extract with {extract} --num_frames {num_frames}")
  if min(height, width) < image_size:
    problems.append(
        f"the records hold {height}x{width} frames, the config asks for {image_size} (the "
        f"loader would upscale them): re-extract with {extract} --size {image_size}, or pass "
        f"--config.data.image_size={min(height, width)} if the ViT takes that size "
        f"(data.image_size follows model.vision.image_size)")
  if problems:
    raise ValueError(f"{data_dir} (split {split!r}, record 0 {_text_field(raw, 'video')!r}) "
                     f"does not fit the config: " + "; ".join(problems))


# ---------------------------------------------------------------------------- evaluation

def _text_field(raw: dict[str, Any], key: str) -> str:
  value = raw.get(key, "")
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def eval_index(source, tasks: Sequence[str] = ("description", "qa")) -> list[tuple]:
  """(record index, task, QA index) for every description and QA pair of a split; reads only
  the text fields."""
  unknown = set(tasks) - {"description", "qa"}
  if unknown:
    raise ValueError(f"unknown eval tasks {sorted(unknown)}; use 'description' and/or 'qa'")
  index = []
  for r in range(len(source)):
    raw = source[r]
    if "description" in tasks and _text_field(raw, "description").strip():
      index.append((r, "description", -1))
    if "qa" in tasks:
      qa_text = _text_field(raw, "qa_json") or "[]"
      try:
        qa = json.loads(qa_text)
      except json.JSONDecodeError as e:
        raise ValueError(f"record {r} ({_text_field(raw, 'video')!r}): qa_json is not JSON: "
                         f"{e}") from e
      index += [(r, "qa", k) for k in range(len(qa))]
  return index


@dataclasses.dataclass(frozen=True)
class EvalTransform:
  """(record index, task, QA index) -> one eval item with its unpadded test prompt."""
  source: Any
  tokenizer: Any
  num_frames: int
  image_size: int
  num_visual_tokens: int
  description_question: str = prompts.DESCRIPTION_QUESTIONS[0]

  def __call__(self, entry: tuple) -> dict[str, Any]:
    r, task, k = entry
    decoded = records.decode_record(self.source[r])
    frames, motion, timestamps = _visual(decoded, self.num_frames, self.image_size, None)
    if task == "description":
      question, reference = self.description_question, decoded["description"]
    else:
      pair = decoded["qa"][k]
      question, reference = prompts.qa_field(pair, "q"), prompts.qa_field(pair, "a")
    prompt = prompts.instruct_test_prompt(self.tokenizer, question, self.num_visual_tokens,
                                          timestamps)
    return {
        "frames": frames, "motion": motion,
        "input_ids": prompt.input_ids,
        "attention_mask": np.ones(len(prompt), np.int32),
        "visual_mask": prompt.visual_mask,
        "task": task, "question": question, "reference": reference,
        "video": decoded["video"], "record": r,
    }


def make_eval_dataset(data_dir: str, split: str = "test", *, tokenizer, num_frames: int,
                      image_size: int, num_visual_tokens: int,
                      tasks: Sequence[str] = ("description", "qa"),
                      description_question: str = prompts.DESCRIPTION_QUESTIONS[0],
                      source=None) -> grain.MapDataset:
  """One item per description and per QA pair of `split`, in record order."""
  if source is None:
    source = records.open_split(data_dir, split)
  index = eval_index(source, tasks)
  if not index:
    raise ValueError(f"{data_dir}: split {split!r} has nothing to evaluate for tasks {tasks}")
  transform = EvalTransform(source, tokenizer, num_frames, image_size, num_visual_tokens,
                            description_question)
  return grain.MapDataset.source(index).map(transform)


def collate_eval(items: Sequence[dict[str, Any]], pad_id: int,
                 prompt_len: int | None = None) -> dict[str, Any]:
  """Stacks eval items; prompts left-padded to `prompt_len` (default: the longest)."""
  if not items:
    raise ValueError("collate_eval needs at least one item")
  length = max(len(it["input_ids"]) for it in items) if prompt_len is None else prompt_len
  batch: dict[str, Any] = {
      "frames": np.stack([it["frames"] for it in items]),
      "motion": np.stack([it["motion"] for it in items]),
  }
  padded = [prompts.pad_left(prompts.Prompt(it["input_ids"], it["visual_mask"],
                                            np.full_like(it["input_ids"], -100)), length, pad_id)
            for it in items]
  for key in ("input_ids", "attention_mask", "visual_mask"):
    batch[key] = np.stack([p[key] for p in padded])
  for key in ("task", "question", "reference", "video", "record"):
    batch[key] = [it[key] for it in items]
  return batch


def eval_batches(dataset: grain.MapDataset, batch_size: int, pad_id: int,
                 prompt_len: int | None = None,
                 worker_count: int = 0) -> Iterator[dict[str, Any]]:
  """Batches of `make_eval_dataset` items in order (the last one may be smaller)."""
  ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  iterator = iter(ds)
  try:
    items = []
    for item in iterator:
      items.append(item)
      if len(items) == batch_size:
        yield collate_eval(items, pad_id, prompt_len)
        items = []
    if items:
      yield collate_eval(items, pad_id, prompt_len)
  finally:
    iterator.close()  # stops worker processes and frees their shared memory
