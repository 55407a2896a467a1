"""What the web demo does, without the web page: load a video (a file, or a record of a
pre-extracted test split), encode it once, describe it (streamed) and chat about it.

  demo = Demo(Engine.from_workdir("runs/stage2"), data_dir="data/hawk")
  clip = demo.load_file("clip.mp4")           # decoded, motion computed, encoded once
  for text in demo.describe(clip, question, demo.options(strategy="greedy")):
    print(text)                                # the answer so far, growing
  for text in demo.ask(clip, "Who is involved?", options):
    print(text)                                # a chat turn (hawk_jax.infer.conversation)
  demo.reset_chat(clip)

A description is `describe`'s: the stage-2 test prompt (system prompt " ", the frame timestamps,
the question) streamed by `Engine.stream`, so a greedy description equals
`python -m hawk_jax.infer.describe` for the same video and settings. The chat is `chat`'s:
a `Conversation` (the released demo's system prompt, the conversation in the KV cache). Both use
the visual tokens computed when the video was loaded: the vision towers run once per video,
however many descriptions and chat turns follow (`Engine.encode_calls` counts them).

Bad input -- no video, a missing, empty or undecodable file, a test record that is not there,
generation settings out of range, beam search for chat, a chat that outgrows the KV cache -- is
a DemoError (a ValueError) whose message is meant for the page. Nothing here imports gradio.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator

import jax
import numpy as np

from data_pipelines import loaders, records
from data_pipelines import show as show_lib
from hawk_jax.infer.conversation import ContextFull, Conversation
from hawk_jax.infer.engine import DEFAULT_QUESTION, Engine, GenerationOptions, Video
from hawk_jax.text import prompts

CHAT_STRATEGIES = ("greedy", "sample")


class DemoError(ValueError):
  """Bad input; the message is shown on the page as it is."""


@dataclasses.dataclass
class Clip:
  """A loaded video: what the model sees, its visual tokens, and the chat about it."""
  key: tuple                      # ("file", path) or ("test", index): what was loaded
  name: str                       # shown on the page
  video: Video
  visual: Any                     # [1, 2*Nv, D] on device, computed once
  reference: str = ""             # a test record's description and QA (markdown), else ""
  seconds: float = 0.0            # decoding + encoding time
  conversation: Conversation | None = None


class _Encoded:
  """The engine, except that `encode` hands back the clip's tokens: a Conversation encodes its
  video when it is made, and the demo has encoded it already (once per video)."""

  def __init__(self, engine: Engine, visual):
    self._engine = engine
    self._visual = visual

  def encode(self, frames, motion, **kwargs):
    del frames, motion, kwargs
    return self._visual

  def __getattr__(self, name):
    return getattr(self._engine, name)


def _in_layout(engine: Engine, deltas: Iterator[str]) -> Iterator[str]:
  """Runs each step of a generator inside the engine's mesh: a web server may resume it on
  another thread, and JAX's current mesh is per thread."""
  while True:
    with engine.layout.activate():
      delta = next(deltas, None)
    if delta is None:
      return
    yield delta


class Demo:
  """See the module docstring. `data_dir`: a pre-extracted dataset whose `split` records can be
  picked instead of uploading a file."""

  def __init__(self, engine: Engine, *, data_dir: str | None = None, split: str = "test",
               max_context: int | None = None):
    # FFmpeg's own log lines (a corrupt upload's `moov atom not found`) are silenced, as the
    # command lines do (cli_flags.read_videos), unless the variable is set.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    self.engine = engine
    self.data_dir = data_dir
    self.split = split
    self.max_context = max_context
    self._source = None
    self.test_videos: list[str] = []   # the `video` field of each record of the split
    if data_dir:
      try:
        self._source = records.open_split(data_dir, split)
      except KeyError as e:  # no such split (KeyError quotes its message)
        raise DemoError(e.args[0] if e.args else f"{data_dir}: no split {split!r}") from None
      except FileNotFoundError as e:
        raise DemoError(str(e)) from None
      self.test_videos = [_text(self._source[i].get("video", "")) or f"record {i}"
                          for i in range(len(self._source))]
    self.defaults = engine.default_options()

  # --- settings ----------------------------------------------------------------------------

  def options(self, strategy: str | None = None, max_new_tokens: float | None = None,
              temperature: float | None = None, top_p: float | None = None,
              num_beams: float | None = None, seed: float | None = None) -> GenerationOptions:
    """GenerationOptions of the page's settings (None: the run config's `generate` section);
    DemoError says which value is out of range."""
    def as_int(name, value):
      if value is None:
        return None
      if float(value) != int(float(value)):
        raise DemoError(f"{name} must be a whole number, got {value}")
      return int(float(value))

    try:
      return GenerationOptions.from_config(
          self.engine.cfg.get("generate") or {}, strategy=strategy or None,
          max_new_tokens=as_int("max tokens", max_new_tokens),
          temperature=None if temperature is None else float(temperature),
          top_p=None if top_p is None else float(top_p),
          num_beams=as_int("beams", num_beams), seed=as_int("seed", seed))
    except DemoError:
      raise
    except (TypeError, ValueError, OverflowError) as e:
      raise DemoError(f"generation settings: {e}") from None

  # --- videos -------------------------------------------------------------------------------

  def test_label(self, index: int) -> str:
    return f"{index}: {self.test_videos[index]}"

  def test_labels(self) -> list[str]:
    return [self.test_label(i) for i in range(len(self.test_videos))]

  def test_index(self, label: str) -> int:
    """The record index of a label of `test_labels` (or a bare index)."""
    head = str(label).split(":", 1)[0].strip()
    if not head.isdigit() or not 0 <= int(head) < len(self.test_videos):
      have = (f"{len(self.test_videos)} records" if self.test_videos
              else "no --data_dir was given")
      raise DemoError(f"no test video {label!r} ({have})")
    return int(head)

  def load_file(self, path: str | None) -> Clip:
    """Decodes `path` as the run's engine does (frame count, size, motion mode) and encodes it."""
    if not path:
      raise DemoError("no video: upload one" + (" or pick a test video" if self.test_videos
                                                else "") + " first")
    t0 = time.perf_counter()
    try:
      video = self.engine.load_video(str(path))
    except (OSError, ValueError) as e:  # VideoError: missing, empty, not a video, too short
      # An upload lies in a server temp folder: the message names the file by its own name.
      message = " ".join(str(e).split()) or type(e).__name__
      raise DemoError(message.replace(str(path), os.path.basename(str(path)))) from None
    return self._encode(("file", str(path)), os.path.basename(str(path)), video, "", t0)

  def load_test(self, label: str | int) -> Clip:
    """Record `label` of the split, decoded as evaluation decodes it (the stored frames and
    motion, the run's frame count and size), and encoded."""
    index = label if isinstance(label, int) else self.test_index(label)
    if self._source is None or not 0 <= index < len(self.test_videos):
      raise DemoError(f"no test video {label!r}")
    t0 = time.perf_counter()
    try:
      rec = records.decode_record(self._source[index])
      frames, motion, timestamps = loaders.plain_visual(rec, self.engine.num_frames,
                                                        self.engine.image_size)
    except (KeyError, ValueError) as e:
      raise DemoError(f"{self.data_dir}: {self.split}[{index}]: {e}") from None
    video = Video(frames, motion, timestamps, rec["video"])
    return self._encode(("test", index), self.test_label(index), video, _reference(rec), t0)

  def load(self, path: str | None, test_label: str | None, current: Clip | None) -> Clip:
    """The clip the page shows: the uploaded file, else the picked test video; `current` when
    it is that one already (nothing is decoded or encoded again)."""
    if path:
      key = ("file", str(path))
    elif test_label:
      key = ("test", self.test_index(test_label))
    else:
      return self.load_file(None)  # raises: no video
    if current is not None and current.key == key:
      return current
    return self.load_file(path) if path else self.load_test(key[1])

  def _encode(self, key, name, video: Video, reference: str, t0: float) -> Clip:
    with self.engine.layout.activate():
      visual = self.engine.encode(video.frames[None], video.motion[None])
      jax.block_until_ready(visual)
    return Clip(key, name, video, visual, reference, time.perf_counter() - t0)

  def summary(self, clip: Clip) -> str:
    v = clip.video
    return (f"{clip.name}: {v.frames.shape[0]} frames of {v.frames.shape[1]}x"
            f"{v.frames.shape[2]} ({self.engine.motion_mode} motion), "
            f"{float(v.timestamps[0]):.2f}-{float(v.timestamps[-1]):.2f}s; decoded and "
            f"encoded in {clip.seconds:.1f}s")

  @staticmethod
  def gallery(clip: Clip) -> list[tuple[np.ndarray, str]]:
    """One image per sampled frame: the frame and its motion side by side (nearest-neighbour
    enlarged to at least 112 px, as data_pipelines.show draws them), captioned with its
    time."""
    v = clip.video
    tile = show_lib.auto_tile(v.frames.shape[1])
    gap = np.full((tile, max(2, tile // 28), 3), 255, np.uint8)
    items = []
    for i, (frame, motion, t) in enumerate(zip(v.frames, v.motion, v.timestamps)):
      pair = np.concatenate([show_lib.resize_tile(frame, tile), gap,
                             show_lib.resize_tile(motion, tile)], axis=1)
      items.append((pair, f"#{i + 1} · {float(t):.2f}s"))
    return items

  # --- generation ---------------------------------------------------------------------------

  def describe(self, clip: Clip, question: str | None,
               options: GenerationOptions) -> Iterator[str]:
    """The answer so far (growing) to `question` (default: the first stage-2 description
    question) with the stage-2 test prompt, as `describe` streams it."""
    question = (question or "").strip() or DEFAULT_QUESTION
    prompt = self.engine.test_prompt(question, clip.video.timestamps,
                                     system=prompts.TRAIN_SYSTEM_PROMPT)
    text = ""
    for delta in _in_layout(self.engine, self.engine.stream(clip.visual, prompt, options)):
      text += delta
      yield text

  def ask(self, clip: Clip, question: str, options: GenerationOptions) -> Iterator[str]:
    """The answer so far (growing) to the next chat turn about the clip. The conversation is
    started (from the clip's tokens) at its first turn; later turns take the settings of their
    own (the sampling seed is the one of the first turn)."""
    question = (question or "").strip()
    if not question:
      raise DemoError("the question is empty")
    if options.strategy not in CHAT_STRATEGIES:
      raise DemoError("chat streams its answers: choose greedy or sample, not beam search")
    if clip.conversation is None:
      with self.engine.layout.activate():
        clip.conversation = Conversation(_Encoded(self.engine, clip.visual), clip.video,
                                         options=options, max_context=self.max_context)
    else:
      clip.conversation.options = options
    text = ""
    try:
      for delta in _in_layout(self.engine, clip.conversation.ask(question)):
        text += delta
        yield text
    except ContextFull as e:
      raise DemoError(f"{str(e).split(';')[0]}: start a new chat") from None

  @staticmethod
  def reset_chat(clip: Clip | None) -> None:
    if clip is not None and clip.conversation is not None:
      clip.conversation.reset()


def _text(value) -> str:
  return bytes(value).decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _reference(rec: dict) -> str:
  """A test record's annotations, as markdown."""
  lines = [f"**Reference** ({rec['video']})"]
  if rec.get("description"):
    lines.append(f"- description: {rec['description']}")
  for qa in rec.get("qa") or []:
    lines.append(f"- Q: {qa.get('q', '')} A: {qa.get('a', '')}")
  return "\n".join(lines)
