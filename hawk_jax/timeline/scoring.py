"""An anomaly score read from the model's next-token distribution, not from parsed text.

For a window, the model is asked `ANOMALY_QUESTION` in the stage-2 test layout (chat template,
the window's visual tokens, window-relative timestamps) and one prefill gives the distribution
of the answer's first token. The score is

    P(yes) / (P(yes) + P(no)),

each side summing the tokenizer's variants of the word ("Yes", "yes", "YES"; "No", "no",
"NO"), each encoded as a training answer is encoded (its own piece of text, SentencePiece's
leading "▁" included). LLaMA-2's tokenizer has single tokens for "▁Yes" and "▁No", so the
answer's first token decides. A smaller vocabulary may split the words so that they begin with
a shared piece (the shipped tiny tokenizer writes " Yes" as "▁" "Y" "es" and " No" as "▁" "N"
"o"): that shared piece is then appended to the prompt, and the next token decides -- still one
prefill. A variant whose deciding token is claimed by both words is left out; if no token tells
them apart, the tokenizer is refused with the pieces named.

`yes_no_mass` = P(yes) + P(no) says how much of the distribution the two words hold: a model
never trained on the question spreads its mass elsewhere and its score means little.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from data_pipelines import motion as motion_lib
from hawk_jax.text import prompts

ANOMALY_QUESTION = "Is there any anomaly in this video? Answer yes or no."
YES_WORDS = ("Yes", "yes", "YES")
NO_WORDS = ("No", "no", "NO")


@dataclasses.dataclass(frozen=True)
class YesNoTokens:
  prefix: tuple[int, ...]  # forced after `[/INST]`: the pieces "Yes" and "No" share
  yes: tuple[int, ...]     # deciding tokens of the yes variants
  no: tuple[int, ...]

  @classmethod
  def of(cls, tokenizer) -> "YesNoTokens":
    seqs = {w: list(tokenizer.encode(w)) for w in YES_WORDS + NO_WORDS}
    a, b = seqs[YES_WORDS[0]], seqs[NO_WORDS[0]]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
      n += 1
    prefix = a[:n]

    def deciding(words):
      return {seqs[w][n] for w in words if seqs[w][:n] == prefix and len(seqs[w]) > n}

    yes, no = deciding(YES_WORDS), deciding(NO_WORDS)
    yes, no = yes - no, no - yes
    if not yes or not no:
      pieces = {w: [tokenizer.id_to_piece(t) for t in s] for w, s in seqs.items()}
      raise ValueError(f"this tokenizer has no token that tells yes from no after a shared "
                       f"prefix: {pieces}")
    return cls(tuple(prefix), tuple(sorted(yes)), tuple(sorted(no)))

  def score(self, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score, yes_no_mass) [B] from log-probabilities [B, V]."""
    lp = np.asarray(logprobs, np.float64)
    p_yes = np.exp(lp[:, list(self.yes)]).sum(-1)
    p_no = np.exp(lp[:, list(self.no)]).sum(-1)
    mass = p_yes + p_no
    with np.errstate(invalid="ignore", divide="ignore"):
      score = np.where(mass > 0, p_yes / np.maximum(mass, 1e-300), 0.5)
    return score.astype(np.float32), mass.astype(np.float32)


def with_suffix(prompt: prompts.Prompt, tokens: Sequence[int]) -> prompts.Prompt:
  """`prompt` with text `tokens` appended (not visual, not supervised)."""
  if not tokens:
    return prompt
  t = np.asarray(tokens, np.int32)
  return prompts.Prompt(np.concatenate([prompt.input_ids, t]),
                        np.concatenate([prompt.visual_mask, np.zeros_like(t)]),
                        np.concatenate([prompt.labels,
                                        np.full_like(t, prompts.IGNORE_INDEX)]))


def motion_frames(frames: np.ndarray, prev_frames: np.ndarray, mode: str) -> np.ndarray:
  """The motion frames of one window, as training computes them (data_pipelines/motion.py)."""
  return motion_lib.apply_weight(frames, motion_lib.motion_weights(prev_frames, frames, mode))


class AnomalyScorer:
  """Scores windows in batches of `batch_size` rows (a short batch is padded by repeating its
  last row, so every batch of a run shares one compilation)."""

  def __init__(self, engine, question: str = ANOMALY_QUESTION, batch_size: int = 8):
    if batch_size < 1:
      raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if not question.strip():
      raise ValueError("the anomaly question is empty")
    self.engine = engine
    self.question = question
    self.rows = engine.layout.global_rows(int(batch_size))
    self.tokens = YesNoTokens.of(engine.tokenizer)

  def visual(self, frames: np.ndarray, motion: np.ndarray):
    """Visual tokens of [n, T, S, S, 3] frames and motion, padded to the batch rows."""
    n = frames.shape[0]
    if n < self.rows:
      pad = [(0, self.rows - n)] + [(0, 0)] * (frames.ndim - 1)
      frames, motion = np.pad(frames, pad, mode="edge"), np.pad(motion, pad, mode="edge")
    return self.engine.encode(frames, motion)

  def score(self, visual, timestamps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, yes_no_mass) [n] for the first n = len(timestamps) rows of `visual`."""
    n = len(timestamps)
    batch = [with_suffix(self.engine.test_prompt(self.question, ts), self.tokens.prefix)
             for ts in timestamps]
    batch += [batch[-1]] * (self.rows - n)
    logprobs = self.engine.next_token_logprobs(visual, batch, rows=self.rows)
    return self.tokens.score(logprobs[:n])

  def describe(self, visual, rows: Sequence[int], timestamps: Sequence[np.ndarray],
               options, question: str) -> list[str]:
    """Descriptions of the chosen `rows` of `visual` (one generation call, padded rows)."""
    if not rows:
      return []
    batch = [self.engine.test_prompt(question, timestamps[r]) for r in rows]
    picked = visual[np.asarray(list(rows) + [rows[-1]] * (self.rows - len(rows)))]
    batch += [batch[-1]] * (self.rows - len(rows))
    answers = self.engine.generate(picked, batch, options, rows=self.rows)
    return [a.text.strip() for a in answers[:len(rows)]]
