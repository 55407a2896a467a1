"""A multi-turn conversation about one video, kept in the LLM's KV cache.

The video is encoded once and enters the cache once, inside the first user message (LLaMA-2
chat layout of `prompts.chat_prompt`, the released demo's system prompt by default). Each later
turn appends only its own tokens -- the end of the previous answer, then
`</s><s>[INST] {question} [/INST]` -- so a turn costs the new tokens, never the whole history.

  chat = Conversation(engine, engine.load_video("clip.mp4"))
  for delta in chat.ask("What is unusual here?"): print(delta, end="")
  for delta in chat.ask("Who is involved?"): print(delta, end="")
  chat.reset()   # a new conversation about the same (already encoded) video

The cache has a fixed number of slots (`max_context`, default the LLM's
max_position_embeddings); a turn that does not fit raises ContextFull, and `reset` empties it.
New-turn tokens are left-padded to a bucket with masked slots (the cache keeps pad slots masked
forever), so turns of similar length share one compiled call.
"""
from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from hawk_jax.infer import generate as generate_lib
from hawk_jax.infer.engine import Engine, GenerationOptions, Video, round_up
from hawk_jax.infer.text_stream import TextStream
from hawk_jax.models.llama import Llama
from hawk_jax.models.llama_decoding import for_decoding
from hawk_jax.text import prompts


class ContextFull(RuntimeError):
  """The conversation no longer fits the KV cache."""


@functools.partial(jax.jit, static_argnames=("model",), donate_argnames=("cache",))
def _extend(model: Llama, params, input_ids, mask, cache):
  """Appends [B, T] tokens (mask 0 = padding) to a cache -> (last-position logits [B, V], cache).

  hawk_jax.infer.generate's `prefill` starts a fresh cache and `decode_step` takes one token; a new
  chat turn is several tokens on top of an existing cache."""
  logits, cache = model.apply({"params": params}, input_ids, attention_mask=mask, cache=cache,
                              last_only=True)
  return logits[:, -1], cache


@jax.jit
def _sample(logits, key, temperature, top_p):
  logits = generate_lib.process_logits(logits, temperature, 0, top_p)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def continuation_ids(tokenizer, question: str, pending: list[int]) -> list[int]:
  """Tokens that follow an answer in the cache: the tokens chosen but not yet fed, `</s>` when
  the answer did not end with it, then the next user message (`prompts` chat layout)."""
  ids = list(pending)
  if not ids or ids[-1] != tokenizer.eos_id:
    ids.append(tokenizer.eos_id)
  return ids + [tokenizer.bos_id] + tokenizer.encode(f"[INST] {question} [/INST]")


class Conversation:
  """See the module docstring. `history` holds the finished (question, answer) turns."""

  def __init__(self, engine: Engine, video: Video, *,
               system: str = prompts.DEMO_SYSTEM_PROMPT,
               options: GenerationOptions | None = None, max_context: int | None = None):
    self.engine = engine
    self.video = video
    self.system = system
    self.options = options or engine.default_options()
    if self.options.strategy == "beam":
      raise ValueError("chat streams its answers: use greedy or sample, not beam search")
    llm_cfg = engine.config.llm
    self.max_context = int(max_context or llm_cfg.max_position_embeddings)
    self.visual = engine.encode(video.frames[None], video.motion[None])
    # The engine's LLM is already the decoding twin (converted once at load); for_decoding
    # passes a twin through unchanged.
    self._llm, self._llm_params = for_decoding(engine.llm, engine.llm_params)
    self._key = jax.random.PRNGKey(self.options.seed)
    self._draws = 0
    self.reset()

  def reset(self) -> None:
    """Forgets the conversation (the encoded video stays)."""
    self._cache = None
    self._pending: list[int] = []   # chosen tokens not yet fed to the cache
    self.history: list[tuple[str, str]] = []

  @property
  def used_slots(self) -> int:
    return 0 if self._cache is None else int(self._cache["index"])

  def ask(self, question: str) -> Iterator[str]:
    """Streams the answer to `question` as text deltas; the turn joins `history` when done."""
    if not question.strip():
      raise ValueError("the question is empty")
    logits = self._feed(question)
    eng, tok = self.engine, self.engine.tokenizer
    text = TextStream(eng.decode)
    for i in range(self.options.max_new_tokens):
      token = self._choose(logits)
      if token == tok.eos_id:
        self._pending = [token]
        break
      delta = text.push(token)
      if delta:
        yield delta
      if i + 1 == self.options.max_new_tokens or self.used_slots + 1 > self.max_context:
        # The answer ends here; its last token enters the cache with the next turn (which
        # raises ContextFull when the cache is full).
        self._pending = [token]
        break
      logits, self._cache = generate_lib.decode_step(
          self._llm, self._llm_params, jnp.asarray([token], jnp.int32), self._cache)
    rest = text.flush()
    if rest:
      yield rest
    self.history.append((question, text.text))

  def _feed(self, question: str):
    """Puts the next user message into the cache; returns the logits after it [1, V]."""
    eng = self.engine
    if self._cache is None:
      prompt = prompts.chat_prompt(eng.tokenizer, [(question, None)], eng.num_visual_tokens,
                                   self.video.timestamps, system=self.system)
      arrays = eng.pad_prompts([prompt])
      self._check_room(arrays["input_ids"].shape[1])
      emb = eng.embed(self.visual, arrays["input_ids"], arrays["visual_mask"])
      logits, self._cache = generate_lib.prefill(
          self._llm, self._llm_params, emb, jnp.asarray(arrays["attention_mask"]),
          self.max_context)
      return logits
    ids = continuation_ids(eng.tokenizer, question, self._pending)
    length = round_up(len(ids), eng.prompt_bucket)
    self._check_room(self.used_slots + length)
    pad = length - len(ids)
    input_ids = np.asarray([[eng.tokenizer.pad_id] * pad + ids], np.int32)
    mask = np.asarray([[0] * pad + [1] * len(ids)], np.int32)
    self._pending = []
    logits, self._cache = _extend(self._llm, self._llm_params, input_ids, mask, self._cache)
    return logits

  def _check_room(self, needed: int) -> None:
    if needed + 1 > self.max_context:
      raise ContextFull(f"the conversation needs {needed + 1} of {self.max_context} cache "
                        "slots; /reset to start over (or raise --max_context)")

  def _choose(self, logits) -> int:
    if self.options.strategy == "greedy":
      return int(jnp.argmax(logits[0]))
    key = jax.random.fold_in(self._key, self._draws)
    self._draws += 1
    return int(_sample(logits, key, jnp.float32(self.options.temperature),
                       jnp.float32(self.options.top_p))[0])
