"""LLaMA SentencePiece tokenizer: `tokenizer.model` in, token ids out.

Production uses LLaMA-2's own `tokenizer.model` (32000 pieces, unk=0, <s>=1, </s>=2, no pad).
Tests and the CPU smoke run use the small byte-fallback BPE model shipped in `assets/`
(`default_tokenizer_path()`, built by `hawk_jax.text.tiny_tokenizer`), which keeps LLaMA's
special ids and byte pieces so the same code paths run.

LLaMA has no pad piece; like the released code (`pad_token = unk_token`) padding uses id 0.
Visual placeholders need no vocabulary entry: prompts mark their positions in a `visual_mask`
and hold the unk id there (see `hawk_jax.text.prompts`).
"""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import sentencepiece as spm
from etils import epath

ASSETS_DIR = os.path.join(os.path.dirname(__file__), "assets")
TINY_TOKENIZER_FILE = "tiny_llama_bpe.model"


def default_tokenizer_path() -> str:
  """The shipped tiny LLaMA-style tokenizer (vocabulary 512) for tests and CPU runs."""
  return os.path.join(ASSETS_DIR, TINY_TOKENIZER_FILE)


class Tokenizer:
  """A SentencePiece model with LLaMA conventions (BOS/EOS added on request, pad = unk = 0).

  Picklable (Grain worker processes get a copy): the serialized model travels, not the path.
  """

  def __init__(self, model_path: str | None = None, *, model_proto: bytes | None = None):
    if (model_path is None) == (model_proto is None):
      raise ValueError("give exactly one of model_path or model_proto")
    if model_path is not None:
      # Read through etils.epath (local or gs://) and loaded from bytes: SentencePiece itself
      # opens local files only.
      path = epath.Path(model_path)
      if not path.is_file():
        raise FileNotFoundError(f"tokenizer model not found: {model_path}")
      model_proto = path.read_bytes()
    self._path = model_path
    self._proto = model_proto
    self._sp = self._load(model_proto, model_path)

  @staticmethod
  def _load(proto: bytes, path: str | None) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    try:
      sp.LoadFromSerializedProto(proto)
    except Exception as e:  # sentencepiece raises a bare RuntimeError/OSError
      raise ValueError(f"not a SentencePiece model: {path or '<bytes>'}: {e}") from e
    if sp.bos_id() < 0 or sp.eos_id() < 0:
      raise ValueError(f"tokenizer {path or '<bytes>'} lacks BOS/EOS pieces "
                       f"(bos={sp.bos_id()}, eos={sp.eos_id()}); a LLaMA model has both")
    return sp

  def __getstate__(self):
    return {"path": self._path, "proto": self._proto}

  def __setstate__(self, state):
    self._path = state["path"]
    self._proto = state["proto"]
    self._sp = self._load(self._proto, self._path)

  def __repr__(self):
    return f"Tokenizer({self._path or '<bytes>'}, vocab_size={self.vocab_size})"

  @property
  def path(self) -> str | None:
    return self._path

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  @property
  def pad_id(self) -> int:
    """The model's pad id, or unk (0 in LLaMA) when it has none, as the released code pads."""
    pad = self._sp.pad_id()
    return pad if pad >= 0 else self._sp.unk_id()

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    """Token ids of `text` (SentencePiece adds its leading-space marker, as LLaMA's does)."""
    if not isinstance(text, str):
      raise TypeError(f"encode expects str, got {type(text).__name__}")
    ids = self._sp.encode(text, out_type=int)
    if bos:
      ids = [self.bos_id] + ids
    if eos:
      ids = ids + [self.eos_id]
    return ids

  def decode(self, ids: Iterable[int] | np.ndarray, skip_special: bool = True) -> str:
    """Text of `ids`. Drops negative ids (label padding) and, with `skip_special`, BOS, EOS
    and pad/unk (visual placeholders and padding carry that id)."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    drop = {self.bos_id, self.eos_id, self.pad_id} if skip_special else set()
    ids = [i for i in ids if i >= 0 and i not in drop]
    for i in ids:
      if i >= self.vocab_size:
        raise ValueError(f"token id {i} out of range for vocabulary of {self.vocab_size}")
    return self._sp.decode(ids)

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def pieces(self, text: str) -> list[str]:
    return self._sp.encode(text, out_type=str)


def load_tokenizer(path: str | None = None) -> Tokenizer:
  """`path` to a LLaMA `tokenizer.model` (a file, or a directory holding one; local or gs://);
  None gives the shipped tiny tokenizer."""
  if path is None:
    path = default_tokenizer_path()
  if epath.Path(path).is_dir():
    path = str(epath.Path(path) / "tokenizer.model")
  return Tokenizer(str(path))


def check_fits_vocab(tokenizer: Tokenizer, vocab_size: int) -> None:
  """Raises if the tokenizer can emit ids the LLM's embedding table lacks."""
  if tokenizer.vocab_size > vocab_size:
    raise ValueError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but the LLM "
                     f"vocabulary is {vocab_size}")
