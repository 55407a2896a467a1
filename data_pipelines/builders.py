"""TFDS builders that write pre-extracted videos as ArrayRecord, without TensorFlow.

`HawkAnomaly` (`hawk_anomaly`) and `VideoCaptions` (`video_captions`) write the features of
records.features() (the record contract). One config per set of extraction options, named
e.g. `flow_mask_32f_224px`, so data for different settings never mixes:
`{data_dir}/hawk_anomaly/flow_mask_32f_224px/1.0.0/hawk_anomaly-train.array_record-*`.

The builders take already-validated entries (annotations.py) per split. Each example's frames
and motion come from the per-video cache (clip_cache.py) when extract.py's process pool filled
it, else they are extracted here. A bad video is skipped, recorded in `builder.skipped` and
never stops the split. With `beam=True`, `_generate_examples` returns a Beam PTransform instead
of yielding (the TFDS Beam route: the same per-video work runs on Beam workers); pass
`DownloadConfig(beam_options=PipelineOptions([...]))` to download_and_prepare.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import tensorflow_datasets as tfds

from data_pipelines import annotations as ann_lib
from data_pipelines import clip_cache, records
from data_pipelines import video as video_lib

VERSION = tfds.core.Version("1.0.0")


@dataclasses.dataclass(eq=False)
class VideoConfig(tfds.core.BuilderConfig):
  options: clip_cache.ExtractOptions = dataclasses.field(
      default_factory=clip_cache.ExtractOptions)

  @classmethod
  def from_options(cls, options: clip_cache.ExtractOptions) -> "VideoConfig":
    """The config for `options` (the predefined object when it is the default one: TFDS
    refuses a new config object under a predefined config's name)."""
    for config in _ExtractedVideos.BUILDER_CONFIGS:
      if config.options == options:
        return config
    return cls(name=options.config_name, version=VERSION, options=options,
               description=f"{options.num_frames} frames at {options.size}px, motion "
                           f"{options.motion_mode}, {options.sampling} sampling")


def make_example(entry: ann_lib.Entry, visual: dict[str, Any],
                 options: clip_cache.ExtractOptions) -> dict[str, Any]:
  return records.make_example(visual, video=entry.video, source=entry.source,
                              motion_mode=options.motion_mode, description=entry.description,
                              caption=entry.caption, qa=entry.qa_dicts())


def _beam_examples(item, options, cache_dir):
  """Beam worker: one (key, example), or nothing for a bad video (counted, logged)."""
  import apache_beam as beam
  key, entry = item
  try:
    visual = clip_cache.get_visual(entry.video_path, options, cache_dir)
  except video_lib.VideoError as e:
    beam.metrics.Metrics.counter("hawk_extract", "skipped").inc()
    logging.warning("skipped %s (%s): %s", entry.where, entry.video, e.reason)
    return
  beam.metrics.Metrics.counter("hawk_extract", "ok").inc()
  yield key, make_example(entry, visual, options)


class _ExtractedVideos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared machinery: splits of entries -> examples via the per-video cache."""

  VERSION = VERSION
  BUILDER_CONFIGS = []  # set below, once VideoConfig.from_options can see the class
  # TFDS looks for a download-checksums file beside the builder's code, through
  # `importlib_resources` when the builder lives in a package, and that is not installed.
  # Nothing is downloaded here, so there is no checksums file to find.
  code_path = None

  def __init__(self, *, splits: dict[str, list[ann_lib.Entry]] | None = None,
               cache_dir: str | None = None, beam: bool = False, **kwargs):
    """splits: split name -> entries (needed to generate, not to read); cache_dir: where
    per-video shards live (None: extract without caching); beam: use the Beam route."""
    kwargs.setdefault("file_format", "array_record")
    self._splits = splits or {}
    self._cache_dir = cache_dir
    self._beam = beam
    self.skipped: list[dict[str, str]] = []
    super().__init__(**kwargs)

  @property
  def options(self) -> clip_cache.ExtractOptions:
    return self.builder_config.options

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                 features=records.features())

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self._splits:
      raise ValueError(f"{self.name}: no entries to write; build it with splits={{...}}")
    return {split: self._generate_examples(split, entries)
            for split, entries in self._splits.items()}

  def _generate_examples(self, split: str, entries: list[ann_lib.Entry]):
    items = [(f"{i:09d}", entry) for i, entry in enumerate(entries)]
    if self._beam:
      import apache_beam as beam
      return (beam.Create(items)
              | beam.FlatMap(_beam_examples, self.options, self._cache_dir))
    return self._yield_examples(split, items)

  def _yield_examples(self, split, items):
    for key, entry in items:
      try:
        visual = clip_cache.get_visual(entry.video_path, self.options, self._cache_dir)
      except video_lib.VideoError as e:
        self.skipped.append(ann_lib.Problem(entry.where, entry.video, e.reason).to_json(split))
        continue
      yield key, make_example(entry, visual, self.options)


_ExtractedVideos.BUILDER_CONFIGS = [VideoConfig.from_options(clip_cache.ExtractOptions())]


class HawkAnomaly(_ExtractedVideos):
  """HAWK anomaly videos with descriptions and QA (train / test)."""


class VideoCaptions(_ExtractedVideos):
  """(video, caption) pairs for stage-1 pretraining (WebVid layout or JSON lines)."""


BUILDERS = {"hawk": HawkAnomaly, "captions": VideoCaptions}


def read_splits(source: str, annotations: str, videos_dir: str,
                test_annotations: str | None = None, test_fraction: float = 0.1,
                split_seed: int = 42):
  """(split -> entries, problems) for a source ("hawk" or "captions").

  hawk: train from `annotations`, test from `test_annotations`, or a seeded 90/10 split of
  `annotations` when there is no test file. captions: train only, unless test_annotations.
  Problems are (split, Problem) pairs; annotation problems of a file that gets split are
  reported under "train/test".
  """
  if source not in BUILDERS:
    raise ValueError(f"unknown source {source!r}; expected one of {sorted(BUILDERS)}")
  read = (ann_lib.read_hawk_annotations if source == "hawk"
          else ann_lib.read_caption_annotations)
  entries, problems = read(annotations, videos_dir)
  if test_annotations:
    test_entries, test_problems = read(test_annotations, videos_dir)
    splits = {"train": entries, "test": test_entries}
    tagged = [("train", p) for p in problems] + [("test", p) for p in test_problems]
  elif source == "hawk":
    train, test = ann_lib.split_train_test(entries, test_fraction, split_seed)
    splits = {"train": train, "test": test}
    tagged = [("train/test", p) for p in problems]
  else:
    splits = {"train": entries}
    tagged = [("train", p) for p in problems]
  return splits, tagged
