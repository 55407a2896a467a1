"""Corpus BLEU-1..4 as the COCO caption toolkit computes it (docs/model.md, "Evaluation").

`bleu` reproduces pycocoevalcap's `Bleu(4).compute_score` exactly (its n-gram clipping, its
"closest" reference length for the brevity penalty and its 1e-15 / 1e-9 smoothing constants),
in pure Python, so no evaluation extra is needed at run time. `bleu_nltk` gives NLTK's
`corpus_bleu` on the same tokens beside it; the two differ slightly by design (NLTK has no
smoothing constants and scores 0 as soon as no unigram matches).

Tokenisation. The COCO pipeline runs Stanford's PTBTokenizer (Java) with `-lowerCase` and then
drops the punctuation tokens in `PUNCTUATIONS`. `coco_tokenize` is a pure-Python stand-in for
that pipeline, written against CoreNLP 3.4.1's output on typical caption English:
- lowercase; curly quotes become straight ones, em/en dashes become "--";
- punctuation is split off words: `.` `,` `;` `:` `?` `!` quotes, `--`, `...`, and symbols such
  as `$ % & * #`, which then stay as tokens unless they are in `PUNCTUATIONS`;
- kept whole: numbers with inner separators (`1,000`, `3.5`, `10:30`, `1/2`), words with inner
  `-` `.` `/` `@` (`well-known`, `red/green`, `x.com`), letter-dot abbreviations (`u.s.`,
  `p.m.`, `e.g.`) and a few titles (`mr.`, `dr.`, `etc.`, ...);
- clitics are split the PTB way: `doesn't` -> `does n't`, `can't` -> `ca n't`, `it's` -> `it 's`,
  `cars'` -> `cars '`, `cannot` -> `can not`, `gonna` -> `gon na`;
- brackets become `-lrb-` `-rrb-` `-lsb-` `-rsb-` `-lcb-` `-rcb-` and are KEPT, as in the real
  pipeline, whose (upper-case) punctuation list misses the lower-cased bracket names.
Known differences from PTBTokenizer: signed numbers (`-5`), `#1`/`@home`-style tokens, `'90s`,
`rock'n'roll` and PTB's full abbreviation list. Both sides of every comparison go through the
same function, so these only matter when comparing with numbers from the Java pipeline.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Sequence

# pycocoevalcap/tokenizer/ptbtokenizer.py: tokens removed after PTB tokenisation.
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?",
                          "!", ",", ":", "-", "--", "...", ";"])

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_UNICODE_PUNCT = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"',
                  "\u201d": '"', "\u201e": '"', "\u2014": " -- ", "\u2013": " -- ",
                  "\u2026": "..."}
_TITLES = ("mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "ltd", "corp",
           "ave", "mt", "ft", "gov", "gen", "sgt", "capt", "lt", "col", "rev")
# PTB splits these words into two tokens although they hold no apostrophe.
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                "wanna": ("wan", "na"), "gimme": ("gim", "me"), "lemme": ("lem", "me")}

_ALNUM = r"[^\W_]"
# Clitics are split off first, as PTB does, so the token pattern below sees `does n't`, `it 's`.
_NEGATION_RE = re.compile(r"(?<=[^\W_])n't\b")
_CLITIC_RE = re.compile(r"(?<=[^\W_])'(s|re|ve|ll|d|m)\b")
_TOKEN_RE = re.compile(
    "|".join([
        r"(?P<ellipsis>\.{3,})",
        r"(?P<dashes>--+)",
        r"(?P<bangs>[?!]+)",
        # `u.s.`, `p.m.`, and a lone initial such as the `a.` PTB keeps at a sentence end.
        r"(?P<abbrev>(?:[^\W\d_]\.)+)(?![^\W_])",
        r"(?P<title>(?:" + "|".join(_TITLES) + r")\.)(?![^\W_])",
        r"(?P<number>\d+(?:[.,:/]\d+)+)",
        r"(?P<clitic>n't|'(?:s|re|ve|ll|d|m))(?![^\W_])",
        # Letters/digits with inner - . / @ (never a final one), or an o'clock-style word.
        rf"(?P<word>{_ALNUM}+(?:'{_ALNUM}+)?(?:[-./@]{_ALNUM}+)*)",
        r"(?P<quote>``|''|[`'\"])",
        r"(?P<other>\S)",
    ]))


def coco_tokenize(text: str) -> list[str]:
  """Lower-cased PTB-style tokens of `text` with the COCO punctuation removed (module doc)."""
  if not isinstance(text, str):
    raise TypeError(f"expected a string to tokenise, got {type(text).__name__}: {text!r}")
  text = unicodedata.normalize("NFC", text).lower()
  for char, ascii_form in _UNICODE_PUNCT.items():
    text = text.replace(char, ascii_form)
  text = _CLITIC_RE.sub(r" '\1", _NEGATION_RE.sub(" n't", text))
  tokens = []
  for match in _TOKEN_RE.finditer(text):
    kind, token = match.lastgroup, match.group()
    if kind == "ellipsis":
      tokens.append("...")
    elif kind == "dashes":
      tokens.append("--")
    elif kind == "word" and token in _SPLIT_WORDS:
      tokens.extend(_SPLIT_WORDS[token])
    elif token == '"':
      tokens.append("''")  # PTB turns straight double quotes into `` or ''.
    elif kind == "other" and token in _BRACKETS:
      tokens.append(_BRACKETS[token])
    else:
      tokens.append(token)
  return [t for t in tokens if t not in PUNCTUATIONS]


def coco_normalize(text: str) -> str:
  """`coco_tokenize` joined by single spaces: what pycocoevalcap's scorers expect."""
  return " ".join(coco_tokenize(text))


# pycocoevalcap/bleu/bleu_scorer.py constants: `tiny` keeps a zero match count at ~0 rather than
# making the product exactly 0; `small` keeps a zero guess count from dividing by zero.
_TINY = 1e-15
_SMALL = 1e-9


def _ngram_counts(tokens: Sequence[str], max_n: int) -> Counter:
  counts = Counter()
  for n in range(1, max_n + 1):
    for i in range(len(tokens) - n + 1):
      counts[tuple(tokens[i:i + n])] += 1
  return counts


def _as_reference_list(reference, index: int) -> list[str]:
  if isinstance(reference, str):
    return [reference]
  if (isinstance(reference, Sequence) and reference
      and all(isinstance(r, str) for r in reference)):
    return list(reference)
  raise TypeError(f"references[{index}]: expected a string or a non-empty list of strings, "
                  f"got {reference!r}")


def _tokenized_corpus(references, hypotheses, tokenize: bool):
  """[(hypothesis tokens, [reference tokens, ...]), ...] after checking the inputs line up."""
  if isinstance(references, str) or isinstance(hypotheses, str):
    raise TypeError("references and hypotheses must be sequences of strings, not one string")
  references, hypotheses = list(references), list(hypotheses)
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: BLEU needs "
                     "one reference (or one list of references) per hypothesis")
  if not hypotheses:
    raise ValueError("BLEU of an empty corpus is undefined: no hypotheses given")
  split = coco_tokenize if tokenize else str.split
  corpus = []
  for i, (refs, hyp) in enumerate(zip(references, hypotheses)):
    if not isinstance(hyp, str):
      raise TypeError(f"hypotheses[{i}]: expected a string, got {type(hyp).__name__}: {hyp!r}")
    corpus.append((split(hyp), [split(r) for r in _as_reference_list(refs, i)]))
  return corpus


def bleu(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str],
         max_n: int = 4, tokenize: bool = True) -> dict[str, float]:
  """Corpus BLEU-1..max_n, equal to pycocoevalcap's `Bleu(max_n).compute_score`.

  Args:
    references: one reference string per hypothesis (or a list of them).
    hypotheses: the generated texts.
    max_n: the largest n-gram order.
    tokenize: apply `coco_tokenize` (the COCO normalisation) first; False splits on whitespace,
      as pycocoevalcap does with already-tokenised text.

  Returns:
    {"bleu_1": ..., ..., f"bleu_{max_n}": ...}.
  """
  if not isinstance(max_n, int) or max_n < 1:
    raise ValueError(f"max_n must be a positive integer, got {max_n!r}")
  correct = [0] * max_n
  guess = [0] * max_n
  total_test_len = 0
  total_ref_len = 0
  for hyp, refs in _tokenized_corpus(references, hypotheses, tokenize):
    # Clip each hypothesis n-gram count by its largest count in any one reference.
    max_ref_counts = Counter()
    for ref in refs:
      max_ref_counts |= _ngram_counts(ref, max_n)
    for ngram, count in _ngram_counts(hyp, max_n).items():
      correct[len(ngram) - 1] += min(max_ref_counts[ngram], count)
    for k in range(max_n):
      guess[k] += max(0, len(hyp) - k)
    test_len = len(hyp)
    # "closest" reference length; ties go to the shorter reference.
    total_ref_len += min((abs(len(ref) - test_len), len(ref)) for ref in refs)[1]
    total_test_len += test_len

  # The same float operations in the same order as bleu_scorer.compute_score, so the result is
  # bit-for-bit the same.
  scores = []
  product = 1.
  for k in range(max_n):
    product *= float(correct[k] + _TINY) / (guess[k] + _SMALL)
    scores.append(product ** (1. / (k + 1)))
  ratio = (total_test_len + _TINY) / (total_ref_len + _SMALL)
  if ratio < 1:
    scores = [s * math.exp(1 - 1 / ratio) for s in scores]
  return {f"bleu_{k + 1}": s for k, s in enumerate(scores)}


def nltk_available() -> bool:
  try:
    import nltk.translate.bleu_score  # noqa: F401
  except ImportError:
    return False
  return True


def bleu_nltk(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str],
              max_n: int = 4, tokenize: bool = True) -> dict[str, float]:
  """Corpus BLEU-1..max_n from NLTK's `corpus_bleu` (no smoothing) on the same tokens as `bleu`.

  Raises ImportError when NLTK is not installed (it is in the `eval` extra).
  """
  import warnings

  from nltk.translate.bleu_score import corpus_bleu
  corpus = _tokenized_corpus(references, hypotheses, tokenize)
  weights = [tuple([1. / n] * n) for n in range(1, max_n + 1)]
  with warnings.catch_warnings():
    # NLTK warns on every zero n-gram precision; a score of 0 already says so.
    warnings.simplefilter("ignore")
    scores = corpus_bleu([refs for _, refs in corpus], [hyp for hyp, _ in corpus],
                         weights=weights)
  return {f"bleu_{k + 1}": float(s) for k, s in enumerate(scores)}
