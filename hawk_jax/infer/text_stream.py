"""Turning a growing list of token ids into printable text deltas.

SentencePiece text is not a concatenation of per-token strings: a piece's leading-space marker
becomes a space only between words, and byte-fallback pieces (`<0xE2>` ...) make a character
only once all its bytes are there. So the stream decodes everything generated so far and hands
out what is new, holding back a trailing incomplete character.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

_INCOMPLETE = "\ufffd"  # what a partial UTF-8 sequence decodes to


class TextStream:
  """Feed token ids one at a time (or several); get back the text that became final."""

  def __init__(self, decode: Callable[[Sequence[int]], str]):
    self._decode = decode
    self._ids: list[int] = []
    self._shown = ""

  @property
  def ids(self) -> list[int]:
    return list(self._ids)

  @property
  def text(self) -> str:
    """Everything decoded so far (including a held-back tail)."""
    return self._decode(self._ids)

  def push(self, ids: int | Iterable[int]) -> str:
    """Adds ids; returns the newly printable text ("" when nothing new is final)."""
    self._ids.extend([int(ids)] if isinstance(ids, int) else [int(i) for i in ids])
    text = self._decode(self._ids)
    if text.endswith(_INCOMPLETE):
      return ""
    return self._advance(text)

  def flush(self) -> str:
    """The rest, incomplete characters included (call once the sequence has ended)."""
    return self._advance(self._decode(self._ids))

  def _advance(self, text: str) -> str:
    if not text.startswith(self._shown):
      # Decoding can rewrite the tail (rare: a byte piece completing a character that was
      # shown as its replacement). Show only what extends the common prefix.
      common = 0
      for a, b in zip(text, self._shown):
        if a != b:
          break
        common += 1
      self._shown = text[:common]
    delta = text[len(self._shown):]
    self._shown = text
    return delta
