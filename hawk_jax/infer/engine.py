"""The HAWK inference engine: video file -> visual tokens -> prompt embeddings -> generated text.

  engine = Engine.from_workdir("runs/stage2")
  video = engine.load_video("clip.mp4")                      # motion.extract, config's settings
  visual = engine.encode(video.frames[None], video.motion[None])   # [1, 2*Nv, D]
  prompt = engine.test_prompt("What happens?", video.timestamps)
  [answer] = engine.generate(visual, [prompt], GenerationOptions())
  for delta in engine.stream(visual, prompt, options): print(delta, end="")

For notebooks, one call per use (videos are paths or loaded `Video`s):

  engine.describe("clip.mp4")                       # -> str (the greedy description)
  engine.describe(["a.mp4", "b.mp4"], max_new_tokens=64)   # -> list[str], one batch
  engine.ask("clip.mp4", "Who falls?")              # -> str
  chat = engine.chat("clip.mp4"); chat.ask("What happens?"); chat.ask("And then?")
  engine.save_pretrained("hawk-folder"); Engine.from_pretrained("hawk-folder")

`save_pretrained` / `from_pretrained`: the whole model (frozen and trainable parameters) as
one folder of safetensors with its config.json (hawk_jax/infer/pretrained.py).

Prompts follow the stage-2 test layout (`prompts.instruct_test_prompt`: LLaMA-2 chat template,
system prompt " ", frame timestamps, the question); a description is the answer to one of the
stage-2 description questions. Batches are left-padded (`attention_mask` marks real tokens) so
every row ends at the same column; prompt lengths are rounded up to `prompt_bucket` so prompts
of similar length share one compiled generation loop. The jitted pieces (video encoding, prompt
embedding, and hawk_jax.infer.generate's loops) are module-level and keyed by the model and
shapes, so several engines over the same model reuse the compilations.

Where the weights live is the engine's `layout` (hawk_jax/infer/serving_layout.py): one device,
or a mesh over every device of every process with replicated or tensor-parallel weights
(`Engine.from_workdir(..., layout="auto")` reads every parameter straight onto its shard). Host
inputs become global arrays on that mesh (rows split over its data axis when they divide
evenly), results come back to every process (`ServingLayout.gather`), and every jitted call
runs inside `jax.set_mesh(mesh)`. Under several processes every process makes the same calls
in the same order (SPMD); the `rows=` arguments take this process's rows of a global batch.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import motion as motion_lib
from hawk_jax import distributed
from hawk_jax.infer import generate as generate_lib
from hawk_jax.infer import pretrained as pretrained_lib
from hawk_jax.infer.serving_layout import LayoutRequest, ServingLayout, plan_layout
from hawk_jax.infer.text_stream import TextStream
from hawk_jax.models.hawk import Hawk, check_visual_mask
from hawk_jax.models.llama import Llama
from hawk_jax.models.llama_decoding import decoding_model, for_decoding, unrolled, unstack_layers
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import abstract_params, count
from hawk_jax.text import prompts
from hawk_jax.text.tokenizer import (
  Tokenizer,
  check_fits_vocab,
  default_tokenizer_path,
  load_tokenizer,
)
from hawk_jax.workdir import load_params, read_config, resolve_dtype

log = logging.getLogger("hawk_jax.infer.engine")

STRATEGIES = ("greedy", "sample", "beam")
DEFAULT_QUESTION = prompts.DESCRIPTION_QUESTIONS[0]


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
  """How to pick tokens. `top_p` and `temperature` apply to "sample", `num_beams` to "beam"."""
  max_new_tokens: int = 48
  strategy: str = "greedy"
  temperature: float = 1.0
  top_p: float = 0.9
  num_beams: int = 4
  seed: int = 0

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"strategy {self.strategy!r}: expected one of {STRATEGIES}")
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.strategy == "sample" and not (self.temperature > 0 and 0 < self.top_p <= 1):
      raise ValueError(f"sampling needs temperature > 0 and top_p in (0, 1]; got "
                       f"temperature={self.temperature}, top_p={self.top_p}")
    if self.strategy == "beam" and self.num_beams < 2:
      raise ValueError(f"beam search needs num_beams >= 2, got {self.num_beams}")

  @classmethod
  def from_config(cls, gen_cfg, **overrides) -> "GenerationOptions":
    """Defaults from a stage config's `generate` section; overrides that are None are ignored.
    The config's `num_beams` (1 for greedy) only counts for "beam" when it is >= 2."""
    values = dict(max_new_tokens=int(gen_cfg.get("max_new_tokens", cls.max_new_tokens)),
                  strategy=str(gen_cfg.get("strategy", cls.strategy)),
                  temperature=float(gen_cfg.get("temperature", cls.temperature)),
                  top_p=float(gen_cfg.get("top_p", cls.top_p)))
    beams = int(gen_cfg.get("num_beams", 1))
    if beams >= 2:
      values["num_beams"] = beams
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)

  def generate_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of `hawk_jax.infer.generate.generate` / `stream` for this choice."""
    if self.strategy == "sample":
      return dict(do_sample=True, temperature=self.temperature, top_p=self.top_p,
                  rng=jax.random.PRNGKey(self.seed))
    if self.strategy == "beam":
      return dict(num_beams=self.num_beams)
    return {}


@dataclasses.dataclass(frozen=True)
class Video:
  """A decoded clip as the model takes it: uint8 [T, S, S, 3] frames and motion frames."""
  frames: np.ndarray
  motion: np.ndarray
  timestamps: np.ndarray
  path: str = ""


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  """How a run's videos are decoded: frame count, frame size and motion mode (the stage
  config's `data` section, falling back to the model's). Read from config.json alone, so the
  command lines decode (and check) their videos before any weight is read."""
  num_frames: int
  image_size: int
  motion_mode: str

  @classmethod
  def from_config(cls, cfg, config: HawkConfig | None = None) -> "VideoSettings":
    config = config or HawkConfig.from_stage_config(cfg)
    data = cfg.get("data") or {}
    return cls(num_frames=int(data.get("num_frames", config.max_frames)),
               image_size=int(data.get("image_size", config.vision.image_size)),
               motion_mode=str(data.get("motion", "flow_mask")))

  def load(self, path: str) -> Video:
    """Decodes `path` and computes its motion; data_pipelines.video.VideoError (a ValueError)
    names the file and what is wrong with it (missing, empty, not a video, too short)."""
    clip = motion_lib.extract(path, num_frames=self.num_frames, size=self.image_size,
                              mode=self.motion_mode)
    return Video(clip["frames"], clip["motion"], np.asarray(clip["timestamps"], np.float32),
                 path)


@dataclasses.dataclass(frozen=True)
class Answer:
  text: str
  tokens: list[int]        # generated ids, EOS and padding removed
  stopped_at_eos: bool


class AnswerText(str):
  """What `Engine.describe` / `ask` return: the answer as a str that still carries what an
  `Answer` holds (`.text`, `.tokens`, `.stopped_at_eos`), so code written when describe
  returned Answers keeps working."""
  tokens: list[int]
  stopped_at_eos: bool

  def __new__(cls, text: str, tokens: Sequence[int] = (), stopped_at_eos: bool = False
              ) -> "AnswerText":
    out = super().__new__(cls, text)
    out.tokens = list(tokens)
    out.stopped_at_eos = bool(stopped_at_eos)
    return out

  @classmethod
  def of(cls, answer: Answer) -> "AnswerText":
    return cls(answer.text, answer.tokens, answer.stopped_at_eos)

  @property
  def text(self) -> str:
    return str.__str__(self)


GENERATION_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationOptions))


# --- jitted model pieces (module level: shared by every engine over the same model) -----------

@functools.partial(jax.jit, static_argnames=("model",))
def _encode_video(model: Hawk, params, frames, motion):
  return model.apply({"params": params}, frames, motion, method=Hawk.encode_video)["visual"]


@jax.jit
def _log_softmax(logits):
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnames=("model",))
def _prompt_embeddings(model: Hawk, params, input_ids, visual_mask, visual):
  return model.apply({"params": params}, input_ids, visual_mask, visual,
                     method=Hawk.prompt_embeddings)


def round_up(n: int, multiple: int) -> int:
  return int(math.ceil(n / multiple) * multiple) if multiple > 1 else n


def decoding_twin(llm: Llama, llm_params, layout: ServingLayout):
  """The LLM's decoding twin and its parameters laid out for `layout`.

  One device: `for_decoding` as it is. Replicated: the same twin, its parameters replicated
  over the mesh. Tensor-parallel: the unrolled twin with separate q/k/v and gate/up kernels,
  each split over the tensor axis by heads / MLP (a fused q/k/v kernel split T ways would put
  q on some devices and k/v on others)."""
  if layout.mesh is None:
    return for_decoding(llm, llm_params)
  if layout.tensor > 1:
    twin = unrolled(llm)

    def convert(p):
      return unstack_layers(p, llm.config.num_layers)
  else:
    twin = decoding_model(llm)

    def convert(p):
      return for_decoding(llm, p)[1]
  boxed = jax.eval_shape(
      lambda: twin.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"]
  with layout.activate():
    params = jax.jit(convert, out_shardings=layout.tree_shardings(boxed))(llm_params)
  return twin, params


class Engine:
  """A loaded HAWK model with its tokenizer; see the module docstring."""

  def __init__(self, cfg, model: Hawk, params, tokenizer: Tokenizer | None = None, *,
               prompt_bucket: int = 16, layout: ServingLayout | None = None):
    self.cfg = cfg
    self.model = model
    self.config = model.config
    # `params` must already be on the layout's shardings (`from_workdir` reads them there).
    self.layout = layout or ServingLayout("single", None)
    # The LLM generates through its decoding twin (`for_decoding`: unrolled layers, [out, in]
    # kernels; tensor-parallel: unrolled only, see `decoding_twin`), converted once here rather
    # than inside every jitted generate call (one copy of the weights per call for a scanned
    # model). The prompt embeddings need only the LLM's token table, so the original layers
    # are dropped: the weights are not held twice.
    self.llm, self.llm_params = decoding_twin(Llama(self.config.llm), params["llm"], self.layout)
    self.params = dict(params, llm={"embed_tokens": self.llm_params["embed_tokens"]})
    if tokenizer is None:
      tokenizer = load_tokenizer(cfg.get("tokenizer_path") or None)
    check_fits_vocab(tokenizer, self.config.llm.vocab_size)
    self.tokenizer = tokenizer
    self.prompt_bucket = int(prompt_bucket)
    self.num_visual_tokens = self.config.num_visual_tokens
    self.video_settings = VideoSettings.from_config(cfg, self.config)
    self.num_frames = self.video_settings.num_frames
    self.image_size = self.video_settings.image_size
    self.motion_mode = self.video_settings.motion_mode
    self.encode_calls = 0     # how many times the vision towers ran (chat encodes once)
    self.videos_encoded = 0

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, *, dtype: str = "auto",
                   tokenizer_path: str | None = None,
                   layout: str | LayoutRequest | ServingLayout = "auto",
                   **kwargs) -> "Engine":
    """Reads a workdir's parameters onto the serving `layout` (a ServingLayout, or what
    `serving_layout.plan_layout` makes of "auto", "single", "replicated", "tensor[:N]" for
    the model at the dtype it is loaded in)."""
    cfg = read_config(workdir)
    config = HawkConfig.from_stage_config(cfg)
    # Resolved here rather than in load_params: the layout depends on the bytes per weight.
    target = resolve_dtype(dtype, count(abstract_params(config)))
    if target is not None:
      config = config.with_dtype(target)
    if not isinstance(layout, ServingLayout):
      layout = plan_layout(config, layout, rules=cfg.get("logical_axis_rules"))
    log.info("%s", layout.describe())
    loaded = load_params(workdir, step=step, dtype=target or "config",
                         shardings=layout.param_shardings(config))
    tokenizer = load_tokenizer(tokenizer_path or loaded.cfg.get("tokenizer_path") or None)
    return cls(loaded.cfg, Hawk(loaded.config), loaded.params, tokenizer, layout=layout,
               **kwargs)

  @classmethod
  def from_pretrained(cls, directory: str, *, dtype: str = "auto",
                      tokenizer_path: str | None = None,
                      layout: str | LayoutRequest | ServingLayout = "auto",
                      **kwargs) -> "Engine":
    """Reads a folder written by `save_pretrained` (local or gs://; hawk_jax/infer/
    pretrained.py): its config.json, its safetensors (only those: nothing is unpickled),
    checked against that config's model before any tensor is read (PretrainedError naming
    the missing, unexpected or mis-shaped tensors), and its tokenizer.model (default: the
    built-in tokenizer when the folder has none). `dtype` and `layout` as in from_workdir."""
    cfg = pretrained_lib.read_config(directory)
    config = HawkConfig.from_stage_config(cfg)
    target = resolve_dtype(dtype, count(abstract_params(config)))
    if target is not None:
      config = config.with_dtype(target)
    expected = pretrained_lib.flat_tensors(abstract_params(config))
    # The headers are checked before the layout is planned or anything is read.
    tensors = pretrained_lib.list_tensors(directory)
    pretrained_lib.check_tensors(directory, tensors, expected)
    if not isinstance(layout, ServingLayout):
      layout = plan_layout(config, layout, rules=cfg.get("logical_axis_rules"))
    log.info("%s", layout.describe())
    params = pretrained_lib.read_params(directory, expected, layout.param_shardings(config),
                                        tensors=tensors)
    tokenizer = load_tokenizer(tokenizer_path or pretrained_lib.tokenizer_file(directory))
    return cls(cfg, Hawk(config), params, tokenizer, layout=layout, **kwargs)

  def default_options(self, **overrides) -> GenerationOptions:
    return GenerationOptions.from_config(self.cfg.get("generate") or {}, **overrides)

  # --- video -----------------------------------------------------------------------------------

  def load_video(self, path: str) -> Video:
    """Decodes `path` and computes motion with the run's frame count, size and motion mode."""
    return self.video_settings.load(path)

  def _put(self, x, dtype, rows: int | None):
    """Host rows -> a global array on the layout (this process's rows of a `rows`-row batch
    when `rows` is given); arrays already on device pass through."""
    if isinstance(x, jax.Array):
      return x
    x = np.asarray(x, dtype)
    return self.layout.put(x) if rows is None else self.layout.put_local(x, rows)

  def encode(self, frames, motion, *, rows: int | None = None) -> jax.Array:
    """uint8 frames and motion [B, T, S, S, 3] -> visual tokens [B, 2*Nv, D] on device.
    `rows`: the arrays are this process's rows of a global batch of `rows` (see
    ServingLayout.put_local); the result is the global [rows, 2*Nv, D]."""
    frames, motion = np.asarray(frames), np.asarray(motion)
    if frames.ndim != 5 or frames.shape != motion.shape:
      raise ValueError(f"encode expects frames and motion of one shape [B, T, S, S, 3]; got "
                       f"{frames.shape} and {motion.shape}")
    if frames.shape[1] > self.config.max_frames:
      raise ValueError(f"{frames.shape[1]} frames but the model takes at most "
                       f"{self.config.max_frames}")
    self.encode_calls += 1
    self.videos_encoded += frames.shape[0]
    with self.layout.activate():
      return _encode_video(self.model, self.params, self._put(frames, np.uint8, rows),
                           self._put(motion, np.uint8, rows))

  # --- prompts ---------------------------------------------------------------------------------

  def test_prompt(self, question: str, timestamps: Sequence[float] | None, *,
                  system: str = prompts.TRAIN_SYSTEM_PROMPT) -> prompts.Prompt:
    """The stage-2 test prompt: chat template up to `[/INST]`, the video and its timestamps."""
    if not question.strip():
      raise ValueError("the question is empty")
    return prompts.instruct_test_prompt(self.tokenizer, question, self.num_visual_tokens,
                                        timestamps, system=system)

  def pad_prompts(self, batch: Sequence[prompts.Prompt], rows: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Left-padded input_ids / attention_mask / visual_mask [rows, L], L rounded up to the
    bucket; rows beyond len(batch) repeat the last prompt (their outputs are dropped)."""
    if not batch:
      raise ValueError("no prompts to pad")
    rows = len(batch) if rows is None else rows
    length = round_up(max(len(p) for p in batch), self.prompt_bucket)
    padded = [prompts.pad_left(p, length, self.tokenizer.pad_id) for p in batch]
    padded += [padded[-1]] * (rows - len(padded))
    return {k: np.stack([p[k] for p in padded]) for k in padded[0]}

  def embed(self, visual, input_ids, visual_mask, *, rows: int | None = None) -> jax.Array:
    """Prompt embeddings [B, L, D] with `visual` [B, 2*Nv, D] spliced at the placeholders
    (`rows`: host arrays are this process's rows of a global batch, as in `encode`)."""
    check_visual_mask(visual_mask, self.num_visual_tokens)
    with self.layout.activate():
      visual = self._put(visual, None, rows)
      return _prompt_embeddings(self.model, self.params, self._put(input_ids, np.int32, rows),
                                self._put(visual_mask, np.int32, rows), visual)

  # --- generation ------------------------------------------------------------------------------

  def generate_arrays(self, visual, input_ids, attention_mask, visual_mask,
                      options: GenerationOptions, *, rows: int | None = None) -> list[Answer]:
    """Batched generation from left-padded prompt arrays [B, L] and visual tokens [B, 2Nv, D].

    `rows`: a global batch of `rows` rows of which these host arrays are this process's
    (`layout.process_rows(rows)`; every process calls this with the same prompt length and
    options); the answers are those of all `rows` rows, on every process."""
    input_ids = np.asarray(input_ids)
    extra = round_up(input_ids.shape[1], self.prompt_bucket) - input_ids.shape[1]
    pad = [(0, 0), (extra, 0)]
    input_ids = np.pad(input_ids, pad, constant_values=self.tokenizer.pad_id)
    attention_mask = np.pad(np.asarray(attention_mask), pad)
    visual_mask = np.pad(np.asarray(visual_mask), pad)
    emb = self.embed(visual, input_ids, visual_mask, rows=rows)
    with self.layout.activate():
      out = generate_lib.generate(
          self.llm, self.llm_params, inputs_embeds=emb,
          attention_mask=self._put(attention_mask, np.int32, rows),
          max_new_tokens=options.max_new_tokens, eos_token_id=self.tokenizer.eos_id,
          pad_token_id=self.tokenizer.pad_id, **options.generate_kwargs())
      tokens, lengths = self.layout.gather(out.tokens), self.layout.gather(out.lengths)
    return [self._answer(tokens[i, :lengths[i]]) for i in range(tokens.shape[0])]

  def _padded_batch(self, visual, batch: Sequence[prompts.Prompt], rows: int | None):
    """(visual tokens, prompt arrays) of `batch` padded to `rows` rows (default: a multiple of
    the layout's data slices) by repeating the last row; visual tokens placed on the layout."""
    n = len(batch)
    if visual.shape[0] != n:
      raise ValueError(f"{visual.shape[0]} rows of visual tokens for {n} prompts")
    rows = self.layout.global_rows(n) if rows is None else rows
    arrays = self.pad_prompts(batch, rows)
    with self.layout.activate():
      visual = self._put(visual, None, None)
      if rows > n:
        visual = jnp.concatenate([visual, jnp.repeat(visual[-1:], rows - n, axis=0)])
    return visual, arrays

  def generate(self, visual, batch: Sequence[prompts.Prompt], options: GenerationOptions, *,
               rows: int | None = None) -> list[Answer]:
    """One answer per prompt; row i of `visual` goes with prompt i. `rows` pads the batch to a
    fixed size (repeating the last row) so batches of a run share one compilation; by default
    it is padded to a multiple of the layout's data slices, which then split it."""
    n = len(batch)
    visual, arrays = self._padded_batch(visual, batch, rows)
    answers = self.generate_arrays(visual, arrays["input_ids"], arrays["attention_mask"],
                                   arrays["visual_mask"], options)
    return answers[:n]

  def next_token_logprobs(self, visual, batch: Sequence[prompts.Prompt], *,
                          rows: int | None = None) -> np.ndarray:
    """log P(next token | prompt) [n, V] float32 for each prompt of `batch` (row i of
    `visual` with prompt i): one prefill, no decoding. For reading a model's answer
    distribution directly, e.g. P(yes) vs P(no) (hawk_jax/timeline/scoring.py). `rows` pads
    the batch as in `generate`, so batches of one run share one compilation."""
    n = len(batch)
    visual, arrays = self._padded_batch(visual, batch, rows)
    emb = self.embed(visual, arrays["input_ids"], arrays["visual_mask"])
    with self.layout.activate():
      mask = self._put(arrays["attention_mask"], np.int32, None)
      logits, _ = generate_lib.prefill(self.llm, self.llm_params, emb, mask,
                                       max_len=int(emb.shape[1]))
      logprobs = self.layout.gather(_log_softmax(logits))
    return logprobs[:n]

  def stream(self, visual, prompt: prompts.Prompt, options: GenerationOptions) -> Iterator[str]:
    """Text deltas of one answer as its tokens are decoded (beam search: all at the end, since
    the best hypothesis is only known then)."""
    if options.strategy == "beam" or jax.process_count() > 1:
      # Several processes: a streamed token would be read from devices of other processes;
      # the whole answer is gathered at the end instead.
      yield self.generate(visual, [prompt], options)[0].text
      return
    arrays = self.pad_prompts([prompt])
    emb = self.embed(visual, arrays["input_ids"], arrays["visual_mask"])
    text = TextStream(self.decode)
    with self.layout.activate():
      tokens = generate_lib.stream(
          self.llm, self.llm_params, inputs_embeds=emb,
          attention_mask=self._put(arrays["attention_mask"], np.int32, None),
          max_new_tokens=options.max_new_tokens, eos_token_id=self.tokenizer.eos_id,
          pad_token_id=self.tokenizer.pad_id, **options.generate_kwargs())
    while True:
      with self.layout.activate():  # each step inside the mesh, not the caller's code
        token = next(tokens, None)
      if token is None:
        break
      token = int(token[0])
      if token == self.tokenizer.eos_id:
        break
      delta = text.push(token)
      if delta:
        yield delta
    rest = text.flush()
    if rest:
      yield rest

  def decode(self, ids) -> str:
    return self.tokenizer.decode(ids).strip()

  def _answer(self, ids: np.ndarray) -> Answer:
    ids = [int(i) for i in ids]
    eos = bool(ids) and ids[-1] == self.tokenizer.eos_id
    if eos:
      ids = ids[:-1]
    return Answer(self.decode(ids), ids, eos)

  # --- one call per use ------------------------------------------------------------------------

  def generation_options(self, options: GenerationOptions | None = None, **generation
                         ) -> GenerationOptions:
    """`options` (default: the run config's `generate` section) with the GenerationOptions
    fields in `generation` (max_new_tokens, strategy, temperature, top_p, num_beams, seed)
    replaced; None values are ignored."""
    unknown = sorted(set(generation) - set(GENERATION_FIELDS))
    if unknown:
      raise TypeError(f"unknown generation option(s) {unknown}; expected some of "
                      f"{list(GENERATION_FIELDS)}")
    if options is None:
      return self.default_options(**generation)
    return dataclasses.replace(options, **{k: v for k, v in generation.items() if v is not None})

  def _video(self, video) -> Video:
    if isinstance(video, Video):
      return video
    if isinstance(video, (str, os.PathLike)):
      return self.load_video(os.fspath(video))
    raise TypeError(f"a video is a path or a Video (Engine.load_video); got "
                    f"{type(video).__name__}")

  def describe(self, video_paths, question: str | None = None,
               options: GenerationOptions | None = None, *, system: str | None = None,
               batch_size: int | None = None, **generation):
    """The answer to `question` (default: the first stage-2 description question) about a
    video, or about each of a list of videos (answered in batches of `batch_size`, default
    all at once).

    `video_paths`: a path (str or os.PathLike) or a `Video` -> one answer (str); a list or
    other sequence of them -> a list of answers. The prompt is the stage-2 test prompt with
    `system` (default: the training template's " "), as `python -m hawk_jax.infer.describe`
    writes it, so the greedy answers equal that command's. Generation: `options` and/or the
    GenerationOptions fields as keywords (max_new_tokens=64, strategy="beam", ...), unset
    ones from the run config. The answers are AnswerText: a str with `.tokens` and
    `.stopped_at_eos` (and `.text`)."""
    single = isinstance(video_paths, (str, os.PathLike, Video))
    items = [video_paths] if single else list(video_paths)
    options = self.generation_options(options, **generation)
    question = question or DEFAULT_QUESTION
    system = prompts.TRAIN_SYSTEM_PROMPT if system is None else system
    if batch_size is not None and batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    step = batch_size or max(len(items), 1)
    answers: list[AnswerText] = []
    for start in range(0, len(items), step):
      videos = [self._video(v) for v in items[start:start + step]]
      visual = self.encode(np.stack([v.frames for v in videos]),
                           np.stack([v.motion for v in videos]))
      batch = [self.test_prompt(question, v.timestamps, system=system) for v in videos]
      answers += [AnswerText.of(a) for a in self.generate(visual, batch, options)]
    return answers[0] if single else answers

  def ask(self, video, question: str, options: GenerationOptions | None = None, *,
          system: str | None = None, **generation) -> AnswerText:
    """The answer to `question` about one video (a path or a loaded `Video`); the keywords
    are describe's."""
    if not isinstance(video, (str, os.PathLike, Video)):
      raise TypeError(f"ask takes one video (a path or a Video); got {type(video).__name__} "
                      "(describe answers a list)")
    return self.describe(video, question, options, system=system, **generation)

  def chat(self, video, *, system: str | None = None, options: GenerationOptions | None = None,
           max_context: int | None = None, **generation) -> "Chat":
    """A conversation about one video (a path or a loaded `Video`), encoded once: `.ask(q)`
    returns each answer and keeps the history (hawk_jax/infer/conversation.py; `.stream(q)`
    yields it as it is generated). `system` defaults to the released demo's system prompt
    (" " gives the training layout, whose first answer equals describe's); generation as in
    describe (greedy or sample: a chat streams, so no beam search)."""
    video = self._video(video)
    kwargs = dict(options=self.generation_options(options, **generation), max_context=max_context)
    if system is not None:
      kwargs["system"] = system
    with self.layout.activate():
      return Chat(conversation_lib.Conversation(self, video, **kwargs))

  # --- one folder of safetensors -----------------------------------------------------------

  def hawk_params(self) -> dict:
    """Every parameter of the model (frozen and trainable) as host numpy, in the layout and
    the dtypes of the stage config's `Hawk` -- what the workdir holds: the LLM is rebuilt from
    the decoding twin the engine keeps (bit for bit), leaves the engine holds in float32 for
    a bfloat16 config are cast back (exactly). A collective under several processes."""
    return pretrained_lib.nested({k: f() for k, f in self._hawk_tensors()[1].items()})

  def _hawk_tensors(self):
    """({name: ShapeDtypeStruct} of the stage config's model, {name: thunk -> numpy})."""
    saved_config = HawkConfig.from_stage_config(self.cfg)
    specs = pretrained_lib.flat_tensors(abstract_params(saved_config))
    original = Llama(self.config.llm)
    llm = pretrained_lib.llm_from_twin(
        abstract_params(self.config)["llm"], self.llm_params,
        scanned=original.config.scan_layers,
        decode_layout=self.llm.decode_layout and not original.decode_layout,
        fetch=self.layout.gather)
    thunks = {f"llm{pretrained_lib.SEP}{k}": f for k, f in llm.items()}
    for name, leaf in pretrained_lib.flat_tensors(
        {k: v for k, v in self.params.items() if k != "llm"}).items():
      thunks[name] = functools.partial(self.layout.gather, leaf)
    if set(thunks) != set(specs):
      raise AssertionError(f"engine parameters differ from the model's: "
                           f"{sorted(set(thunks) ^ set(specs))[:10]}")

    def cast(name):  # to the stage config's dtype (exact for a float32 copy of bfloat16)
      return np.asarray(thunks[name]()).astype(specs[name].dtype, copy=False)
    return specs, {k: functools.partial(cast, k) for k in specs}

  def save_pretrained(self, directory: str, *,
                      max_shard_size: int | str = pretrained_lib.DEFAULT_MAX_SHARD_SIZE
                      ) -> list[str]:
    """Writes the whole model as one folder (local or gs://) that `from_pretrained` reads:
    config.json (the stage config), model.safetensors -- or, past `max_shard_size` (bytes or
    "5GB", "500MB"), model-0000i-of-0000N.safetensors and model.safetensors.index.json --
    and tokenizer.model when the tokenizer is not the built-in one. Tensor names are the
    parameter paths joined with "." (hawk_jax/infer/pretrained.py); dtypes the stage
    config's. Replaces an earlier save's weight files there. Under several processes every
    process calls it and process 0 writes. Returns the file names written."""
    specs, thunks = self._hawk_tensors()
    proto = self.tokenizer.__getstate__()["proto"]
    with open(default_tokenizer_path(), "rb") as f:
      builtin = f.read() == proto
    return pretrained_lib.write_pretrained(
        directory, self.cfg, specs, lambda name: thunks[name](),
        tokenizer_proto=None if builtin else proto, max_shard_size=max_shard_size,
        write=distributed.is_main_process())


class Chat:
  """A conversation about one video for notebooks (`Engine.chat`): `ask` returns the whole
  answer, `stream` yields it in pieces; both keep `history` ([(question, answer)]).
  `conversation` is the hawk_jax.infer.conversation.Conversation underneath (KV cache, video
  encoded once); ContextFull when a turn no longer fits, `reset()` to start over."""

  def __init__(self, conversation):
    self.conversation = conversation

  @property
  def video(self) -> Video:
    return self.conversation.video

  @property
  def history(self) -> list[tuple[str, str]]:
    return self.conversation.history

  def reset(self) -> None:
    self.conversation.reset()

  def stream(self, question: str) -> Iterator[str]:
    deltas = self.conversation.ask(question)
    while True:
      with self.conversation.engine.layout.activate():  # the turn's arrays on the mesh
        delta = next(deltas, None)
      if delta is None:
        return
      yield delta

  def ask(self, question: str) -> str:
    for _ in self.stream(question):
      pass
    return self.history[-1][1]

  def __repr__(self) -> str:
    return f"Chat({self.video.path or 'video'}, {len(self.history)} turn(s))"


# Imported last: conversation.py imports Engine, GenerationOptions and Video from this module.
from hawk_jax.infer import conversation as conversation_lib  # noqa: E402
