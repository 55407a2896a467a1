"""HAWK's prompts as token-id sequences with visual-placeholder and label masks.

Every prompt is built from pieces -- BOS, EOS, text, and the block of `num_visual_tokens`
visual placeholders -- and tokenized piece by piece, so the placeholders never pass through the
tokenizer: they hold the unk id (0) and are marked in `visual_mask` (first half appearance,
second half motion tokens, as the released model concatenates them). Text pieces are encoded
separately, each with SentencePiece's leading-space marker; the released slow LlamaTokenizer
also encodes each stretch between special tokens on its own, so the ids agree with it except
for whitespace right next to a special token (the released `" answer </s>"` may carry one
extra space piece before `</s>`; we do not emit it).

Layouts (facts of the released code, `hawk/datasets/datasets/*.py`, `conversation_video.py`):

* Stage 1 (caption pretraining, prompt-less): `[BOS][visual][caption + "\\n"]`, the caption
  (already `normalize_caption`-ed) plus `"\\n"` cut to 32 tokens and fully supervised.
* Motion-language pass (L_ML): `[BOS][motion visual][motion text + "\\n"]`, same rules, over
  the `num_visual_tokens // 2` motion placeholders only.
* Stage 2 (instruction tuning), LLaMA-2 chat with system prompt `" "`:
  `<s>[INST] <<SYS>>\\n \\n<</SYS>>\\n\\n<Video>{visual}</Video> The video contains T frames
  sampled at t0, t1, ... seconds. {q0} [/INST] {a0} </s><s>[INST] {q1} [/INST] {a1} </s>...`
  Only answers and their `</s>` are supervised; everything else is -100. Right-truncated to
  512 tokens. With probability 0.5 the first QA pair becomes (one of `DESCRIPTION_QUESTIONS`,
  the description) -- `description_swap`.
* Test prompts: the same up to and including the first `[/INST]`.
* Chat (demo): the chat template with the demo's system prompt; `released_demo_prompt`
  reproduces the released app's layout, where the video message lands after the question in
  the assistant's slot and the prompt ends in `</s>` (a difference from training, kept as a
  switch so released weights can be run as released).

Labels are aligned with inputs, HuggingFace style (the model shifts them).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

IGNORE_INDEX = -100

# The 20 description questions of stage 2 (released `video_instruct_dataset.py`, paper app. D).
DESCRIPTION_QUESTIONS: tuple[str, ...] = (
    "Can you describe the anomaly in the video?",
    "How would you detail the anomaly found in the video?",
    "What anomaly can you identify in the video?",
    "Could you explain the anomaly observed in the video?",
    "Can you point out the anomaly in the video?",
    "What's the anomaly depicted in the video?",
    "Could you specify the anomaly present in the video?",
    "How do you perceive the anomaly in the video?",
    "Can you highlight the anomaly within the video?",
    "What anomaly is noticeable in the video?",
    "Could you characterize the anomaly seen in the video?",
    "Can you detail the specific anomaly encountered in the video?",
    "How would you describe the particular anomaly in the video?",
    "What details can you provide about the anomaly in the video?",
    "Could you elucidate on the anomaly detected in the video?",
    "Can you illustrate the nature of the anomaly in the video?",
    "What features of the anomaly in the video can you describe?",
    "Could you outline the anomaly observed in the video?",
    "How does the anomaly in the video manifest?",
    "Can you clarify the aspects of the anomaly in the video?",
)

TRAIN_SYSTEM_PROMPT = " "  # `llama_v2_video_conversation.system` of the released training
DEMO_SYSTEM_PROMPT = ("You are able to understand the visual content that the user provides. "
                      "Follow the instructions carefully and explain your answers in detail.")
CAPTION_END = "\n"          # the released `end_sym` of stage 1
MAX_CAPTION_TOKENS = 32     # the released `max_txt_len` of stage 1
MAX_INSTRUCT_TOKENS = 512   # the released tokenizer `max_length` of stage 2


class TokenizerLike(Protocol):
  bos_id: int
  eos_id: int
  unk_id: int
  pad_id: int

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    ...


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One unpadded prompt: int32 arrays of equal length."""
  input_ids: np.ndarray
  visual_mask: np.ndarray
  labels: np.ndarray

  def __len__(self):
    return int(self.input_ids.shape[0])

  @property
  def visual_positions(self) -> np.ndarray:
    return np.flatnonzero(self.visual_mask)


# Pieces: ("bos",) ("eos", supervised) ("text", str, supervised) ("visual", n).
def _tokenize(tokenizer: TokenizerLike, pieces, max_text_tokens: int | None = None) -> Prompt:
  ids, vis, sup = [], [], []
  for piece in pieces:
    kind = piece[0]
    if kind == "bos":
      ids.append(tokenizer.bos_id), vis.append(0), sup.append(False)
    elif kind == "eos":
      ids.append(tokenizer.eos_id), vis.append(0), sup.append(piece[1])
    elif kind == "visual":
      n = piece[1]
      ids += [tokenizer.unk_id] * n  # never embedded: the model puts visual tokens here
      vis += [1] * n
      sup += [False] * n
    elif kind == "text":
      t = tokenizer.encode(piece[1])
      if max_text_tokens is not None:
        t = t[:max_text_tokens]
      ids += t
      vis += [0] * len(t)
      sup += [piece[2]] * len(t)
    else:
      raise ValueError(f"unknown prompt piece {piece!r}")
  ids = np.asarray(ids, np.int32)
  labels = np.where(np.asarray(sup, bool), ids, IGNORE_INDEX).astype(np.int32)
  return Prompt(ids, np.asarray(vis, np.int32), labels)


def _check_visual(num_visual_tokens: int, even: bool = True) -> None:
  if num_visual_tokens <= 0 or (even and num_visual_tokens % 2):
    raise ValueError(f"num_visual_tokens must be a positive even number ([appearance; motion]), "
                     f"got {num_visual_tokens}")


def caption_prompt(tokenizer: TokenizerLike, caption: str, num_visual_tokens: int,
                   max_text_tokens: int = MAX_CAPTION_TOKENS) -> Prompt:
  """Stage 1: `[BOS][visual][caption + "\\n"]`, caption tokens supervised (cut to 32)."""
  _check_visual(num_visual_tokens)
  return _tokenize(tokenizer, [("bos",), ("visual", num_visual_tokens),
                               ("text", caption + CAPTION_END, True)], max_text_tokens)


def motion_language_prompt(tokenizer: TokenizerLike, motion_text: str, num_motion_tokens: int,
                           max_text_tokens: int = MAX_CAPTION_TOKENS) -> Prompt:
  """L_ML pass: `[BOS][motion visual][motion text + "\\n"]`, motion text supervised."""
  _check_visual(num_motion_tokens, even=False)
  return _tokenize(tokenizer, [("bos",), ("visual", num_motion_tokens),
                               ("text", motion_text + CAPTION_END, True)], max_text_tokens)


def timestamps_message(timestamps: Sequence[float]) -> str:
  """The released `load_video` message: seconds rounded to 0.1, trailing space included."""
  secs = ", ".join(str(round(float(t), 1)) for t in timestamps)
  return f"The video contains {len(timestamps)} frames sampled at {secs} seconds. "


def _sys_header(system: str) -> str:
  return f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"


def _chat_pieces(turns: Sequence[tuple[str, str | None]], num_visual_tokens: int,
                 video_prefix: str, system: str):
  """LLaMA-2 chat, video in the first user message (released `SeparatorStyle.LLAMA_2`)."""
  if not turns:
    raise ValueError("a chat needs at least one (question, answer) turn")
  pieces = []
  for i, (question, answer) in enumerate(turns):
    pieces.append(("bos",))
    if i == 0:
      pieces += [("text", _sys_header(system) + "<Video>", False),
                 ("visual", num_visual_tokens),
                 ("text", "</Video> " + video_prefix + question + " [/INST]", False)]
    else:
      pieces.append(("text", f"[INST] {question} [/INST]", False))
    if answer is None:
      if i != len(turns) - 1:
        raise ValueError(f"turn {i} has no answer but is not the last turn")
      break
    pieces += [("text", answer, True), ("eos", True)]
  return pieces


def instruct_prompt(tokenizer: TokenizerLike, qa_pairs: Sequence[dict], num_visual_tokens: int,
                    timestamps: Sequence[float] | None, *, system: str = TRAIN_SYSTEM_PROMPT,
                    max_len: int = MAX_INSTRUCT_TOKENS) -> Prompt:
  """Stage 2 training prompt over all QA pairs (`[{"q", "a"}, ...]`), answers supervised."""
  _check_visual(num_visual_tokens)
  turns = [(qa_field(p, "q"), qa_field(p, "a")) for p in qa_pairs]
  msg = timestamps_message(timestamps) if timestamps is not None else ""
  prompt = _tokenize(tokenizer, _chat_pieces(turns, num_visual_tokens, msg, system))
  return truncate(prompt, max_len)


def instruct_test_prompt(tokenizer: TokenizerLike, question: str, num_visual_tokens: int,
                         timestamps: Sequence[float] | None, *,
                         system: str = TRAIN_SYSTEM_PROMPT) -> Prompt:
  """Stage 3 generation prompt: the training layout up to and including `[/INST]`."""
  _check_visual(num_visual_tokens)
  msg = timestamps_message(timestamps) if timestamps is not None else ""
  return _tokenize(tokenizer, _chat_pieces([(question, None)], num_visual_tokens, msg, system))


def chat_prompt(tokenizer: TokenizerLike, turns: Sequence[tuple[str, str | None]],
                num_visual_tokens: int, timestamps: Sequence[float] | None = None, *,
                system: str = DEMO_SYSTEM_PROMPT) -> Prompt:
  """Multi-turn demo chat: `turns` = [(question, answer), ..., (question, None)]; the model
  continues after the last `[/INST]`. Earlier answers are labelled (useful for scoring)."""
  _check_visual(num_visual_tokens)
  if not turns or turns[-1][1] is not None:
    raise ValueError("the last chat turn must be (question, None): the model answers it")
  msg = timestamps_message(timestamps) if timestamps is not None else ""
  return _tokenize(tokenizer, _chat_pieces(turns, num_visual_tokens, msg, system))


def released_demo_prompt(tokenizer: TokenizerLike, question: str, num_visual_tokens: int, *,
                         system: str = DEMO_SYSTEM_PROMPT) -> Prompt:
  """The released `app.py` prompt: the question is asked first and the video message
  (`"<Video><ImageHere></Video> "`, no timestamps) is appended after it as a second user
  message, which the LLaMA-2 template renders in the assistant slot:
  `<s>[INST] <<SYS>>..<</SYS>>\\n\\n{q} [/INST] <Video>{visual}</Video>  </s>`."""
  _check_visual(num_visual_tokens)
  pieces = [("bos",), ("text", _sys_header(system) + question + " [/INST] <Video>", False),
            ("visual", num_visual_tokens), ("text", "</Video>  ", False), ("eos", False)]
  return _tokenize(tokenizer, pieces)


def description_swap(qa_pairs: Sequence[dict], description: str, rng: np.random.Generator,
                     probability: float = 0.5) -> tuple[list[dict], bool]:
  """With `probability`, replaces the first QA pair by (a random description question, the
  description). Returns (new pairs, whether swapped); the input is not modified (the released
  code edits its annotation list in place, so a swap there sticks for later epochs).

  A video without QA pairs always gets the description pair (the released code fails on it
  and resamples another video)."""
  pairs = [dict(q=qa_field(p, "q"), a=qa_field(p, "a")) for p in qa_pairs]
  draw = rng.random()
  question = DESCRIPTION_QUESTIONS[int(rng.integers(len(DESCRIPTION_QUESTIONS)))]
  if not pairs:
    if not description:
      raise ValueError("a video with neither QA pairs nor a description gives no training text")
    return [dict(q=question, a=description)], True
  if draw < probability and description:
    pairs[0] = dict(q=question, a=description)
    return pairs, True
  return pairs, False


def truncate(prompt: Prompt, max_len: int) -> Prompt:
  """Right-truncates to `max_len` tokens; refuses to cut into the visual placeholders."""
  n = len(prompt)
  if n <= max_len:
    return prompt
  vis = prompt.visual_positions
  if vis.size and vis[-1] >= max_len:
    raise ValueError(f"max_len {max_len} would cut the visual placeholders (they end at "
                     f"position {int(vis[-1]) + 1}); raise max_len")
  return Prompt(prompt.input_ids[:max_len], prompt.visual_mask[:max_len], prompt.labels[:max_len])


def pad_right(prompt: Prompt, length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Fixed-length training arrays: input_ids, attention_mask, visual_mask, labels (int32)."""
  prompt = truncate(prompt, length)
  n, extra = len(prompt), length - len(prompt)
  return {
      "input_ids": np.concatenate([prompt.input_ids, np.full(extra, pad_id, np.int32)]),
      "attention_mask": np.concatenate([np.ones(n, np.int32), np.zeros(extra, np.int32)]),
      "visual_mask": np.concatenate([prompt.visual_mask, np.zeros(extra, np.int32)]),
      "labels": np.concatenate([prompt.labels, np.full(extra, IGNORE_INDEX, np.int32)]),
  }


def pad_left(prompt: Prompt, length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Generation arrays, left-padded so that every prompt of a batch ends at the same column."""
  n = len(prompt)
  if n > length:
    raise ValueError(f"prompt of {n} tokens does not fit the padded length {length}")
  extra = length - n
  return {
      "input_ids": np.concatenate([np.full(extra, pad_id, np.int32), prompt.input_ids]),
      "attention_mask": np.concatenate([np.zeros(extra, np.int32), np.ones(n, np.int32)]),
      "visual_mask": np.concatenate([np.zeros(extra, np.int32), prompt.visual_mask]),
  }


def qa_field(pair, key: str) -> str:
  if not isinstance(pair, dict) or key not in pair:
    raise ValueError(f"QA pair {pair!r} lacks the field {key!r} (expected {{'q': .., 'a': ..}})")
  value = pair[key]
  if isinstance(value, bytes):
    value = value.decode("utf-8")
  if not isinstance(value, str):
    raise ValueError(f"QA pair field {key!r} must be text, got {type(value).__name__}")
  return value
