"""Caption clean-up as HAWK's `blip_caption` text processor does it.

Stage-1 captions and the motion text pass through it: lower-cased, the characters
`. ! " ( ) * # : ; ~` replaced by spaces, runs of whitespace collapsed, at most `max_words`
words (the released config keeps the processor's default of 50).
"""
from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")

MAX_CAPTION_WORDS = 50


def normalize_caption(text: str, max_words: int = MAX_CAPTION_WORDS) -> str:
  """Lower-cases, strips BLIP's punctuation set, collapses whitespace, keeps `max_words`."""
  if not isinstance(text, str):
    raise TypeError(f"caption must be str, got {type(text).__name__}")
  text = _PUNCTUATION.sub(" ", text.lower())
  text = _SPACES.sub(" ", text)
  text = text.rstrip("\n").strip(" ")
  words = text.split(" ")
  if len(words) > max_words:
    text = " ".join(words[:max_words])
  return text
