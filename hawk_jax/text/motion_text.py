"""Motion text for the motion-language loss: "subject verb object" phrases of a caption.

The released HAWK (`extract_actions_and_entities_sentence`, applied to the raw caption, then
its `blip_caption` processor) runs spaCy `en_core_web_sm` and, for every token whose POS is
VERB, writes `"{subjects} {verb} {objects}"` where subjects are its direct children with
dependency nsubj/nsubjpass and objects its children with dobj/pobj/obj (each the single token
text, several joined by " and "); the phrases are joined by ", ", lower-cased, BLIP's
punctuation set stripped and cut to 50 words. Because pobj hangs under a preposition, never
under a verb, objects are in practice direct objects: "A man in a red shirt falls down the
stairs while a woman watches him." gives "man falls, woman watches him".

Two backends, chosen by the config field `data.motion_text_backend` and recorded in the run's
config.json, so that one command trains on the same text on every machine:

* `"spacy"`: exactly that; spaCy and `en_core_web_sm` must be installed (the model is not on
  PyPI; install it yourself for the released behaviour), else asking for it is an error.
* `"rules"` (the default): a small rule-based tagger and clause parser that needs no model. It
  tags words with a closed-class lexicon, a list of common verbs with their inflections
  (`english_lexicon`) and context rules (a verb form after a determiner is a noun or, for a
  participle before a noun, an adjectival verb; after "to", an auxiliary or a subject it is a
  verb ...), then walks each sentence: the first noun phrase of a clause (not inside a
  prepositional phrase) is the subject of its first finite verb, the noun phrase right after
  a verb (or after its particle, for phrasal verbs like "pick up") is its object; relative
  pronouns are the subjects of their clauses; participles, gerunds, infinitives and verbs
  coordinated with an earlier verb ("grabs a bag and runs") have no subject, as in spaCy's
  trees. It agrees with spaCy on the common subject-verb-object sentences of anomaly
  descriptions. It differs where a statistical parser is needed: it gives at most one subject
  and one object (spaCy lists conjoined ones only when they are direct children, which is
  rare too), it may misread noun/verb homographs in unusual positions (a compound like
  "traffic light turns" can come out as a verb "light"), it does not know verbs outside its
  list (they count as nouns, so fewer phrases), it keeps copulas (is/are, AUX in spaCy) out
  as spaCy does, and it has no named entities or multi-word tokens.

`extract_motion_text(caption, backend="rules")`. There is no "whatever is installed" choice:
that made the same command train on different text on two machines.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re

from hawk_jax.text import english_lexicon as lex
from hawk_jax.text.caption import MAX_CAPTION_WORDS, normalize_caption

BACKENDS = ("rules", "spacy")
DEFAULT_BACKEND = "rules"


def extract_motion_text(caption: str, backend: str = DEFAULT_BACKEND,
                        max_words: int = MAX_CAPTION_WORDS) -> str:
  """The caption's "subject verb object" phrases, joined by ", ", normalized (lower-case,
  BLIP punctuation stripped, at most `max_words` words). "" when the caption has no verb."""
  if isinstance(caption, bytes):
    caption = caption.decode("utf-8")
  if not isinstance(caption, str):
    raise TypeError(f"caption must be str, got {type(caption).__name__}")
  return normalize_caption(", ".join(motion_phrases(caption, backend)), max_words)


def motion_phrases(caption: str, backend: str = DEFAULT_BACKEND) -> list[str]:
  """One "subject verb object" phrase per verb, in order, before normalisation."""
  if check_backend(backend) == "spacy":
    return _spacy_phrases(caption)
  return rules_phrases(caption)


# ----------------------------------------------------------------------------- spaCy backend

@functools.lru_cache(maxsize=1)
def _spacy_model():
  try:
    import spacy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RuntimeError("motion-text backend 'spacy' needs the spacy package") from e
  try:
    return spacy.load("en_core_web_sm")
  except OSError as e:
    raise RuntimeError("motion-text backend 'spacy' needs the en_core_web_sm model, which is "
                       "not on PyPI; install it or use backend='rules'") from e


@functools.lru_cache(maxsize=1)
def spacy_available() -> bool:
  """Whether spaCy and `en_core_web_sm` load (without importing spaCy, which takes seconds,
  when the model package is absent)."""
  if importlib.util.find_spec("en_core_web_sm") is None:
    return False
  try:
    _spacy_model()
    return True
  except RuntimeError:
    return False


def check_backend(backend: str) -> str:
  """`backend` if it can run here. Raises ValueError for an unknown name or for "spacy" without
  spaCy and en_core_web_sm installed (what to install, or which value to set, is said)."""
  if backend not in BACKENDS:
    raise ValueError(f"unknown motion-text backend {backend!r}; choose one of {BACKENDS} "
                     f"(--config.data.motion_text_backend)")
  if backend == "spacy" and not spacy_available():
    raise ValueError("data.motion_text_backend='spacy' needs spaCy and its en_core_web_sm model "
                     "(pip install spacy, then install en_core_web_sm from "
                     "github.com/explosion/spacy-models; it is not on PyPI), or set "
                     "--config.data.motion_text_backend=rules")
  return backend


def _spacy_phrases(caption: str) -> list[str]:
  phrases = []
  for token in _spacy_model()(caption):
    if token.pos_ == "VERB":
      subjects = " and ".join(c.text for c in token.children if c.dep_ in ("nsubj", "nsubjpass"))
      objects = " and ".join(c.text for c in token.children if c.dep_ in ("dobj", "pobj", "obj"))
      phrases.append(f"{subjects} {token.text} {objects}".strip())
  return phrases


# ----------------------------------------------------------------------------- rules backend

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+|[A-Za-z]+(?=n't)|n't|'[A-Za-z]+"
                    r"|[A-Za-z][A-Za-z0-9]*|\d+(?:[.,]\d+)*[A-Za-z]*|[^\sA-Za-z\d]")

# Tags.
DET, NUM, PRON, OPRON, REL, ADP, SCONJ, CCONJ, AUX, NEG, ADV, ADJ, NOUN, VERB, TO, POSS, PUNCT = (
    "DET NUM PRON OPRON REL ADP SCONJ CCONJ AUX NEG ADV ADJ NOUN VERB TO POSS PUNCT".split())
_NP_PARTS = frozenset({DET, NUM, ADJ, NOUN, POSS})


@dataclasses.dataclass
class _Token:
  text: str
  low: str
  tag: str = NOUN
  forms: frozenset = frozenset()
  lemma: str = ""
  finite: bool = False
  amod: bool = False  # participle used as an adjective inside a noun phrase


def rules_phrases(caption: str) -> list[str]:
  phrases = []
  for sentence in _SENTENCE_END.split(caption.strip()):
    tokens = [_Token(w, w.lower()) for w in _TOKEN.findall(sentence)]
    if tokens:
      _tag(tokens)
      phrases += _attach(tokens)
  return phrases


def _readings(low: str):
  return lex.verb_forms().get(low, ())


def _closed_class(low: str) -> bool:
  return (low in lex.DETERMINERS or low in lex.SUBJECT_PRONOUNS or low in lex.OBJECT_PRONOUNS
          or low in lex.RELATIVES or low in lex.PREPOSITIONS or low in lex.SUBORDINATORS
          or low in lex.COORDINATORS or low in lex.BE or low in lex.MODALS or low in lex.HAVE
          or low in lex.DO or low in lex.NEGATIONS or low in lex.ADVERBS or low == "to"
          or low == "that" or low in lex.CLAUSE_PREPOSITIONS or not low[:1].isalnum())


def _finite_reading(low: str) -> bool:
  return any(f in (lex.PRES3, lex.PAST) for _, f in _readings(low))


def _noun_head_next(words: list[str], j: int) -> bool:
  """Whether words[j] can head (or continue) a noun phrase rather than be the next verb."""
  if j >= len(words):
    return False
  low = words[j]
  if _closed_class(low):
    return False
  if low in lex.ADJECTIVES or low in lex.NOUNS or low in lex.NUMBERS:
    return True
  return not _finite_reading(low)


def _clause_follows(words: list[str], j: int) -> bool:
  """After a clause-opening preposition: a noun phrase and then a finite verb."""
  k = j
  while k < len(words) and (words[k] in lex.DETERMINERS or words[k] in lex.NUMBERS
                            or words[k] in lex.ADJECTIVES or words[k] == "'s"
                            or (not _closed_class(words[k]) and not _readings(words[k]))
                            or words[k] in lex.SUBJECT_PRONOUNS):
    k += 1
  if k == j or k >= len(words):
    return False
  w = words[k]
  return w in lex.BE or w in lex.MODALS or w in lex.HAVE or w in lex.DO or _finite_reading(w)


def _tag(tokens: list[_Token]) -> None:
  words = [t.low for t in tokens]
  finite_seen = False        # a finite verb (or auxiliary) in the current clause
  finite_before_conj = False
  in_relative = False
  last_verb_forms = frozenset()
  for i, tok in enumerate(tokens):
    low = tok.low
    prev = tokens[i - 1].tag if i else None
    k = i - 1
    while k >= 0 and tokens[k].tag in (ADV, NEG):
      k -= 1
    prev_c = tokens[k].tag if k >= 0 else None
    nxt = words[i + 1] if i + 1 < len(words) else ""

    if not low[:1].isalnum() and not low.startswith("'") and low != "n't":
      tok.tag = PUNCT
    elif low == "to":
      tok.tag = TO if any(f == lex.BASE for _, f in _readings(nxt)) else ADP
    elif low == "that":
      if prev in (NOUN, PRON, OPRON, NUM) and nxt and (
          nxt in lex.BE or nxt in lex.MODALS or nxt in lex.HAVE or _readings(nxt)
          or nxt in lex.SUBJECT_PRONOUNS or nxt in lex.DETERMINERS):
        tok.tag = REL
      elif prev == VERB:
        tok.tag = SCONJ
      elif _noun_head_next(words, i + 1) or nxt in lex.ADJECTIVES:
        tok.tag = DET
      else:
        tok.tag = OPRON
    elif low == "her":
      tok.tag = DET if (_noun_head_next(words, i + 1) or nxt in lex.ADJECTIVES) else OPRON
    elif low == "'s":
      tok.tag = POSS if prev in (NOUN, PRON) and (_noun_head_next(words, i + 1)
                                                  or nxt in lex.ADJECTIVES) else AUX
    elif low in lex.DETERMINERS:
      tok.tag = DET
    elif low in lex.NUMBERS or low[:1].isdigit():
      tok.tag = NUM
    elif low in lex.RELATIVES:
      tok.tag = REL
    elif low in lex.SUBJECT_PRONOUNS:
      tok.tag = PRON
    elif low in lex.OBJECT_PRONOUNS:
      tok.tag = OPRON
    elif low in lex.BE or (low in lex.MODALS and prev not in (DET, ADJ)):
      tok.tag = AUX
    elif low in lex.HAVE or low in lex.DO:
      j = i + 1
      while j < len(words) and (words[j] in lex.ADVERBS or words[j] in lex.NEGATIONS):
        j += 1
      after = {f for _, f in _readings(words[j])} if j < len(words) else set()
      is_aux = (lex.PART in after or lex.PAST in after) if low in lex.HAVE else (
          lex.BASE in after or (j > i + 1 and words[i + 1] in lex.NEGATIONS))
      if is_aux:
        tok.tag = AUX
      else:
        tok.tag, tok.lemma, tok.finite = VERB, ("have" if low in lex.HAVE else "do"), True
        tok.forms = frozenset({lex.PRES3 if low in ("has", "does") else
                               lex.PAST if low in ("had", "did") else lex.BASE})
    elif low in lex.NEGATIONS:
      tok.tag = NEG
    elif low in lex.COORDINATORS:
      tok.tag = CCONJ
    elif low in lex.SUBORDINATORS:
      tok.tag = SCONJ
    elif low in lex.CLAUSE_PREPOSITIONS:
      tok.tag = SCONJ if _clause_follows(words, i + 1) else ADP
    elif low in lex.DIRECTIONS and prev in (DET, POSS, ADJ):
      tok.tag = ADJ
    elif low in lex.DIRECTIONS and prev_c in (VERB, ADP, None, PUNCT):
      tok.tag = ADV
    elif low in lex.PREPOSITIONS:
      tok.tag = ADP
    elif low in lex.ADJECTIVES:
      tok.tag = ADJ
    elif low in lex.ADVERBS:
      tok.tag = ADV
    elif _readings(low):
      _resolve_verb(tok, tokens, words, i, prev, prev_c, finite_seen, finite_before_conj,
                    in_relative, last_verb_forms)
    elif low in lex.NOUNS:
      tok.tag = NOUN
    elif low.endswith("ly") and len(low) > 4:
      tok.tag = ADV
    else:
      tok.tag = NOUN

    # Clause bookkeeping for the next words' verb/noun decisions.
    if tok.tag == VERB and not tok.amod:
      if tok.finite:
        finite_seen = True
        if in_relative:
          in_relative = "done"
      last_verb_forms = tok.forms
    elif tok.tag == AUX:
      finite_seen = True
    elif tok.tag == REL:
      in_relative, finite_seen = True, False
    elif tok.tag == CCONJ:
      finite_before_conj, finite_seen = finite_seen, False
    elif tok.tag in (SCONJ, PUNCT):
      finite_seen = False


def _resolve_verb(tok, tokens, words, i, prev, prev_c, finite_seen, finite_before_conj,
                  in_relative, last_verb_forms):
  """Verb or noun for a word with verb readings, from its neighbours."""
  readings = _readings(tok.low)
  forms = frozenset(f for _, f in readings)
  tok.lemma = readings[0][0]
  nxt = words[i + 1] if i + 1 < len(words) else ""
  participle = bool(forms & {lex.GER, lex.PART, lex.PAST})

  def verb(finite, amod=False, keep=None):
    tok.tag, tok.finite, tok.amod = VERB, finite, amod
    tok.forms = frozenset(keep) if keep else forms

  def noun():
    tok.tag = NOUN

  if prev in (DET, POSS, NUM, ADJ):
    if participle and not forms & {lex.BASE, lex.PRES3} and _noun_head_next(words, i + 1):
      verb(False, amod=True)
    elif lex.GER in forms and _noun_head_next(words, i + 1) and prev != NUM:
      verb(False, amod=True, keep={lex.GER})
    else:
      noun()
  elif prev == TO:
    verb(False, keep={lex.BASE}) if lex.BASE in forms else noun()
  elif prev_c == AUX:
    verb(True)
  elif prev == ADP:
    verb(False, keep={lex.GER}) if lex.GER in forms else noun()
  elif prev_c in (PRON, REL):
    verb(True)
  elif prev_c == OPRON:
    verb(False) if forms & {lex.BASE, lex.GER} else noun()
  elif prev_c in (NOUN, NUM):
    if forms <= {lex.GER}:
      verb(False)  # "a man walking on the street": participle modifier
    elif participle and nxt == "by" and not forms & {lex.PRES3}:
      verb(False)  # reduced passive: "a man hit by a car"
    elif finite_seen and not (in_relative == "done"):
      noun()
    elif (tok.low in lex.NOUN_VERBS or tok.lemma in lex.NOUN_VERBS) and _finite_reading(nxt) \
        and nxt not in lex.DIRECTIONS \
        and not (_readings(nxt) and _readings(nxt)[0][0] in lex.NOUN_VERBS):
      noun()  # compound noun before the verb: "a car crash happens"
    elif forms <= {lex.GER, lex.PART}:
      verb(False)
    else:
      verb(True)
  elif prev_c == CCONJ:
    if not finite_before_conj:
      noun()
    elif forms & {lex.PRES3, lex.PAST}:
      verb(True)  # "grabs a bag and runs": coordinated verb, no subject of its own
    elif forms & last_verb_forms:
      verb(True)
    else:
      noun()
  elif prev_c in (None, SCONJ, PUNCT):
    if lex.GER in forms or (participle and nxt == "by"):
      verb(False)
    elif _readings(nxt) or nxt in lex.BE or nxt in lex.MODALS:
      noun()  # "Fire breaks out", "Smoke rises"
    else:
      verb(True)
  elif prev_c == VERB:
    verb(False) if forms & {lex.GER, lex.BASE} else noun()
  else:
    noun()


@dataclasses.dataclass
class _Clause:
  subject: str | None = None
  used: bool = False
  has_finite: bool = False   # a finite verb or an auxiliary
  has_verb: bool = False     # a finite verb took (or could have taken) this clause's subject
  relative: bool = False


def _attach(tokens: list[_Token]) -> list[str]:
  results: list[list] = []     # [subject, verb, object] in verb order
  clause = _Clause()
  outer: list[_Clause] = []
  pending = None               # "obj": the next noun phrase is the last verb's object
  after_conj = False
  i = 0
  while i < len(tokens):
    tok = tokens[i]
    tag = tok.tag
    if tag in _NP_PARTS or tag in (PRON, OPRON) or (tag == VERB and tok.amod):
      last_verb = len(results) - 1
      j, head = _noun_phrase(tokens, i, results)
      if tok.low == "there" and tag == PRON:
        pass  # expletive, never a subject (spaCy: expl)
      elif pending == "obj":
        results[last_verb][2] = head
      elif pending == "pobj":
        pass
      elif after_conj and clause.has_finite:
        clause = _Clause(subject=head)  # "... and a woman falls": a new clause
      elif after_conj:
        pass  # conjoined subject: spaCy hangs it under the first one
      elif clause.subject is None or clause.used:
        clause = _Clause(subject=head, relative=clause.relative) if not clause.used else \
            _Clause(subject=head)
      pending, after_conj = None, False
      i = j
      continue
    if tag == VERB:
      subject = None
      if tok.finite and not (after_conj and clause.has_finite):
        if clause.relative and clause.has_verb and outer:
          clause = outer.pop()  # the relative clause ended; back to the main clause
        if clause.subject is not None and not clause.used:
          subject, clause.used = clause.subject, True
        clause.has_finite = clause.has_verb = True
      results.append([subject, tok.text, None])
      pending, after_conj = "obj", False
    elif tag == ADP:
      transitive_particle = (pending == "obj" and tok.low in lex.PARTICLES and results
                             and _lemma_of(results[-1][1]) in lex.TRANSITIVE_PARTICLE_VERBS)
      pending = "obj" if transitive_particle else "pobj"
    elif tag == TO:
      pending = None
    elif tag == REL:
      outer.append(clause)
      starts_np = i + 1 < len(tokens) and tokens[i + 1].tag in (_NP_PARTS | {PRON})
      clause = _Clause(subject=None if starts_np else tok.text, relative=True)
      pending, after_conj = None, False
    elif tag == SCONJ:
      clause, pending, after_conj = _Clause(), None, False
    elif tag == PUNCT:
      if tok.low == "," and not clause.has_finite:
        pass  # "A man, wearing a hat, falls": the subject waits for its verb
      elif not (tok.low == "," and i + 1 < len(tokens) and tokens[i + 1].tag == REL):
        clause = _Clause()
      pending, after_conj = None, False
    elif tag == CCONJ:
      pending, after_conj = None, True
    elif tag == AUX:
      clause.has_finite = clause.has_finite or clause.subject is not None
    i += 1
  return [" ".join(x for x in r if x) for r in results]


def _noun_phrase(tokens, i, results):
  """Consumes a noun phrase from i; returns (end, head text). Adjectival participles inside it
  are verbs without arguments, as in spaCy (amod)."""
  tok = tokens[i]
  if tok.tag in (PRON, OPRON):
    return i + 1, tok.text
  j, head = i, None
  while j < len(tokens) and (tokens[j].tag in _NP_PARTS or (tokens[j].tag == VERB
                                                            and tokens[j].amod)):
    if tokens[j].tag == VERB:
      results.append([None, tokens[j].text, None])
    elif tokens[j].tag in (NOUN, NUM):
      head = tokens[j].text
    j += 1
  if head is None:  # determiner or adjective alone ("the injured")
    head = tokens[j - 1].text
  return j, head


def _lemma_of(surface: str) -> str:
  readings = _readings(surface.lower())
  return readings[0][0] if readings else surface.lower()
