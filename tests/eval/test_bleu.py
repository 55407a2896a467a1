"""BLEU against pycocoevalcap's Bleu(4) (fed the same tokens), NLTK beside it, the tokeniser."""
import random
import shutil

import pytest

from hawk_jax.eval import bleu as metrics

Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu


def coco_bleu(references, hypotheses):
  """pycocoevalcap's corpus BLEU on our tokenisation (what its PTB step would hand it)."""
  gts, res = {}, {}
  for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
    refs = [ref] if isinstance(ref, str) else ref
    gts[i] = [metrics.coco_normalize(r) for r in refs]
    res[i] = [metrics.coco_normalize(hyp)]
  scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
  return scores


def assert_matches_coco(references, hypotheses):
  ours = metrics.bleu(references, hypotheses)
  theirs = coco_bleu(references, hypotheses)
  assert list(ours) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4"]
  for k, want in enumerate(theirs):
    # Same float operations in the same order: equal bit for bit, not just to 1e-9.
    assert ours[f"bleu_{k + 1}"] == want, (k, ours, theirs)


HAND_MADE = [
    # Typical anomaly descriptions, punctuation and case differing between sides.
    (["A man in a red shirt is fighting with another man on the street.",
      "Two cars collide at the intersection; one of them catches fire!",
      "The video shows a person (possibly drunk) lying on the road."],
     ["a man is fighting another man in the street",
      "Two cars crash at an intersection and one car catches fire.",
      "Someone lies on the road, maybe drunk."]),
    # Perfect match.
    (["the car drives into the crowd"], ["The car drives into the crowd."]),
    # No n-gram in common at all.
    (["a fire breaks out in the building"], ["people walk calmly"]),
    # Unigrams match, no bigram does.
    (["one two three four five"], ["five four three two one"]),
    # Empty and one-word hypotheses (shorter than every n-gram order above 1).
    (["a man runs", "the bus stops at the station", "nothing unusual happens"],
     ["", "bus", "..."]),
    # All hypotheses empty.
    (["a man runs", "a dog barks"], ["", ""]),
    # Hypotheses longer than the references (no brevity penalty).
    (["a fight"], ["a fight a fight a fight breaks out between two men near a fight"]),
    # Clipping: a repeated word counts at most as often as in the reference.
    (["the the cat"], ["the the the the the the"]),
    # Several references per hypothesis ("closest" length, max counts over references).
    ([["a man falls off a bike", "a cyclist falls down on the road near a car"]],
     ["a cyclist falls off the bike on the road"]),
    # ... where the closest reference is the shorter one, and a length tie (4 and 6 for 5).
    ([["a man falls off a bike", "a cyclist falls down on the road near a car"],
      ["a dog bites someone", "a dog bites a man badly"]],
     ["a cyclist falls off the bike", "a dog bites a man"]),
]


@pytest.mark.parametrize("references,hypotheses", HAND_MADE)
def test_bleu_equals_pycocoevalcap_on_hand_made_corpora(references, hypotheses):
  assert_matches_coco(references, hypotheses)


def _random_sentence(rng, vocab, max_len):
  words = [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]
  # Sprinkle punctuation and case so the tokeniser has work to do on both sides.
  if words and rng.random() < 0.5:
    words[0] = words[0].capitalize()
  if rng.random() < 0.5:
    words.append(rng.choice([".", "!", ",", "?"]))
  return " ".join(words)


@pytest.mark.parametrize("seed", range(6))
def test_bleu_equals_pycocoevalcap_on_random_corpora(seed):
  rng = random.Random(seed)
  vocab = ["a", "man", "car", "runs", "the", "street", "fire", "crash", "into", "people",
           "at", "night"][:rng.randint(3, 12)]
  n = rng.randint(1, 40)
  references = [_random_sentence(rng, vocab, rng.choice([3, 12, 30])) or "x"
                for _ in range(n)]
  hypotheses = [_random_sentence(rng, vocab, rng.choice([1, 4, 12, 30])) for _ in range(n)]
  assert_matches_coco(references, hypotheses)


def test_bleu_of_identical_corpus_is_one_and_disjoint_is_about_zero():
  text = ["a man runs across the street at night", "two cars crash into each other"]
  assert all(v == pytest.approx(1.0) for v in metrics.bleu(text, text).values())
  scores = metrics.bleu(text, ["zzz yyy xxx www vvv uuu ttt sss", "qqq ppp ooo nnn mmm lll"])
  assert all(v < 1e-6 for v in scores.values())


def test_bleu_rejects_bad_input():
  with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
    metrics.bleu(["a"], ["a", "b"])
  with pytest.raises(ValueError, match="empty corpus"):
    metrics.bleu([], [])
  with pytest.raises(TypeError, match=r"hypotheses\[1\]"):
    metrics.bleu(["a", "b"], ["a", None])
  with pytest.raises(TypeError, match=r"references\[0\]"):
    metrics.bleu([3], ["a"])
  with pytest.raises(TypeError, match="not one string"):
    metrics.bleu("a man", "a man")


def test_tokenisation_follows_the_coco_pipeline():
  tok = metrics.coco_normalize
  assert tok("A man (possibly drunk) doesn't stop, it's 10:30 p.m.!") == (
      "a man -lrb- possibly drunk -rrb- does n't stop it 's 10:30 p.m.")
  assert tok("“Stop!” she shouted... The well-known street’s light costs $1,000 — 50%.") == (
      "stop she shouted the well-known street 's light costs $ 1,000 50 %")
  assert tok("I can't and won't; cannot.") == "i ca n't and wo n't can not"
  assert tok("the cars' fault: e.g. Mr. Smith's") == "the cars fault e.g. mr. smith 's"
  assert tok("intersection,where 3.5m") == "intersection where 3.5 m"
  assert tok("") == "" and tok(" ... ") == ""
  with pytest.raises(TypeError):
    metrics.coco_tokenize(None)


@pytest.mark.skipif(shutil.which("java") is None, reason="the Java PTBTokenizer needs java")
def test_tokenisation_agrees_with_the_java_ptb_tokenizer():
  """Where Java exists, the real COCO pipeline gives the same tokens on caption-style text."""
  ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
  sentences = [
      "A man in a red shirt is running across the street, while a car drives by.",
      "The video shows a man (possibly drunk) fighting with another man; he doesn't stop.",
      "It's 10:30 p.m. and the U.S. flag is at 3.5 m height, costing $1,000 -- roughly 50%.",
      '"Stop!" she shouted... The well-known street\'s traffic light is red/green.',
      "Two people [in black] walk {slowly} & quietly -- isn't it strange? Yes: it's the cars' "
      "fault.",
      "The anomaly is a car crash at an intersection,where the vehicle hits a pedestrian.",
      "e.g. the man's bag; i.e. nothing. He said 'hello' and `quoted' text.",
      "I'm sure they'll come, we've seen you'd go. Can't won't cannot gonna.",
      "Mr. Smith and Dr. Jones at 5 p.m. Ave. St. vs. etc.",
      "A skateboarder rides on the pedestrian walkway at ShanghaiTech campus!!!",
      "The man’s car isn’t “parked” — it is blocking the road… 2nd time, at 5pm.",
  ]
  theirs = ptb.PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
  for i, sentence in enumerate(sentences):
    assert metrics.coco_normalize(sentence) == theirs[i][0], sentence


def test_nltk_bleu_runs_and_agrees_where_no_smoothing_matters():
  pytest.importorskip("nltk")
  references = ["a man is running across the busy street at night",
                "two cars crash into each other at the crossing"]
  hypotheses = ["a man is running across the street at night",
                "two cars crash into each other at the crossing today"]
  ours, theirs = metrics.bleu(references, hypotheses), metrics.bleu_nltk(references, hypotheses)
  assert set(theirs) == set(ours)
  # Every n-gram order has matches, so only the 1e-15/1e-9 constants separate the two.
  for key in ours:
    assert theirs[key] == pytest.approx(ours[key], rel=1e-6)
  # With no 4-gram match pycocoevalcap keeps a tiny positive value; NLTK floors at ~0.
  sparse = metrics.bleu_nltk(["one two three four five"], ["five four three two one"])
  assert sparse["bleu_1"] == pytest.approx(1.0) and sparse["bleu_4"] < 1e-100
