"""Builds the shipped tiny LLaMA-style tokenizer (`assets/tiny_llama_bpe.model`).

LLaMA-2's own `tokenizer.model` cannot be fetched here, and the tiny LLM has a vocabulary of
512, so tests and the CPU run use a SentencePiece BPE model trained the way LLaMA's was
(byte fallback, split digits, identity normalisation, whitespace kept, unk=0 <s>=1 </s>=2,
no pad) on a small generated corpus: the chat template and its system prompts, the 20
description questions, timestamp messages, and anomaly-description sentences about people,
vehicles and what they do (walking, running, falling, colliding, fighting ...). Anything else
still encodes, through byte pieces.

The corpus is generated from a fixed seed and the trainer runs single-threaded, so

    python -m hawk_jax.text.tiny_tokenizer [OUTPUT]

rewrites the shipped file byte for byte (tests check this).
"""
from __future__ import annotations

import io
import sys
from typing import Sequence

import numpy as np
import sentencepiece as spm
from etils import epath

from hawk_jax import console
from hawk_jax.text import prompts
from hawk_jax.text.tokenizer import default_tokenizer_path

VOCAB_SIZE = 512
CORPUS_SEED = 20240614

SUBJECTS = ("man", "woman", "person", "people", "boy", "girl", "child", "driver", "pedestrian",
            "cyclist", "biker", "motorcyclist", "worker", "student", "crowd", "group", "police",
            "officer", "thief", "robber", "customer", "car", "truck", "bus", "van", "vehicle",
            "motorcycle", "bicycle", "train", "dog", "he", "she", "they", "someone")
VERBS = ("walks", "runs", "falls", "collides", "crashes", "fights", "hits", "kicks", "pushes",
         "punches", "throws", "steals", "grabs", "chases", "drives", "rides", "crosses", "stops",
         "turns", "jumps", "climbs", "attacks", "breaks", "enters", "leaves", "moves", "slips",
         "rolls", "drops", "carries", "holds", "stands", "sits", "lies", "fires", "explodes",
         "burns", "waves", "argues", "loiters", "skateboards", "speeds", "overtakes",
         "walking", "running", "falling", "fighting", "driving", "riding", "crossing",
         "collided", "crashed", "fell", "ran", "hit", "threw", "stole", "fought", "drove",
         "sways", "waits", "sprints", "collapses", "approaches", "knocks", "speeds up")
OBJECTS = ("man", "woman", "person", "car", "truck", "bus", "wall", "pole", "fence", "door",
           "window", "bag", "bike", "ball", "box", "stone", "rock", "bottle", "phone", "wallet",
           "store", "shop", "road", "street", "sidewalk", "crosswalk", "intersection", "lane",
           "stairs", "floor", "ground", "platform", "tracks", "camera", "him", "her", "them")
PLACES = ("on the road", "on the street", "in the street", "on the sidewalk", "at the "
          "intersection", "in a parking lot", "in a store", "in front of the camera",
          "near the entrance", "across the road", "down the stairs", "in the crowd",
          "on the highway", "at night", "in the hallway", "on the campus walkway",
          "in the subway station", "on the grass", "in the square", "in the courtyard",
          "in the parking lot", "to the left", "to the right", "toward each other")
ADJECTIVES = ("red", "white", "black", "blue", "green", "yellow", "purple", "orange", "young",
              "old", "large", "small", "other",
              "parked", "moving", "sudden", "dangerous", "abnormal", "unusual", "normal")
CONNECTORS = ("while", "and", "then", "because", "when", "after", "as")
ANOMALY_WORDS = ("The anomaly in the video is", "This is abnormal because",
                 "The video shows", "In the video,", "An accident happens when",
                 "There is a fight between", "A traffic accident occurs as",
                 "The abnormal event is that", "It is dangerous because")
QA_QUESTIONS = ("What is the man doing?", "Why is this event abnormal?",
                "Who is involved in the anomaly?", "Where does the accident happen?",
                "What happens after the collision?", "How many people are fighting?",
                "Is anyone injured?", "What vehicle is involved?",
                "What should people do in this situation?", "When does the anomaly start?",
                "What unusual event happens?", "Is there anything abnormal in this video?",
                "Is this video normal or anomalous?", "Where does the scene take place?",
                "What does the red car do?")
# Phrasing of scene summaries (also what data_pipelines.synthetic writes).
SUMMARIES = ("Nothing unusual happens; the scene is normal.", "There is no anomaly in this video.",
             "It is anomalous.", "It is normal.", "The scene takes place in a courtyard.",
             "The sudden run is an anomaly.", "This collision is an anomaly, which is abnormal.",
             "The movement is regular and nothing abnormal occurs.",
             "They collide in the middle and both fall down.",
             "It loses balance halfway and falls to the ground at high speed.")


def _np(rng, seq):
  return seq[int(rng.integers(len(seq)))]


def _noun_phrase(rng, words) -> str:
  word = _np(rng, words)
  if word in ("he", "she", "they", "him", "her", "them", "someone", "people", "police"):
    return word
  det = _np(rng, ("a", "the", "a", "another"))
  if rng.random() < 0.4:
    return f"{det} {_np(rng, ADJECTIVES)} {word}"
  return f"{det} {word}"


def _sentence(rng) -> str:
  parts = [_noun_phrase(rng, SUBJECTS), _np(rng, VERBS)]
  if rng.random() < 0.6:
    parts.append(_noun_phrase(rng, OBJECTS))
  if rng.random() < 0.6:
    parts.append(_np(rng, PLACES))
  if rng.random() < 0.4:
    parts += [_np(rng, CONNECTORS), _noun_phrase(rng, SUBJECTS), _np(rng, VERBS)]
  text = " ".join(parts)
  if rng.random() < 0.3:
    text = f"{_np(rng, ANOMALY_WORDS)} {text}"
  return text[0].upper() + text[1:] + "."


def corpus(num_sentences: int = 3000, seed: int = CORPUS_SEED) -> list[str]:
  """The training text: templates (repeated so BPE merges them) and generated sentences."""
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(150):
    lines.append(prompts._sys_header(prompts.TRAIN_SYSTEM_PROMPT) + "<Video></Video> ")
    lines.append(prompts._sys_header(prompts.DEMO_SYSTEM_PROMPT) + "<Video></Video> ")
    lines.append("[INST] [/INST] </s> <s>")
  lines += list(prompts.DESCRIPTION_QUESTIONS) * 10
  lines += list(QA_QUESTIONS) * 6
  lines += list(SUMMARIES) * 6
  for _ in range(200):
    n = int(rng.integers(4, 33))
    fps = float(_np(rng, (10.0, 24.0, 25.0, 30.0)))
    idx = np.sort(rng.choice(2000, size=n, replace=False))
    lines.append(prompts.timestamps_message(idx / fps))
  for _ in range(num_sentences):
    a, b = _sentence(rng), _sentence(rng)
    lines.append(a if rng.random() < 0.5 else f"{a} {b}")
    lines.append(a.lower().rstrip("."))  # stage-1 captions and motion text are lower-cased
  return lines


def train(output_path: str, vocab_size: int = VOCAB_SIZE) -> str:
  """Trains the tokenizer on `corpus()` and writes the model to `output_path`."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus()), model_writer=model, model_type="bpe",
      vocab_size=vocab_size, byte_fallback=True, split_digits=True, character_coverage=1.0,
      add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
      allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
      unk_surface=" \u2047 ", num_threads=1, max_sentence_length=4096, minloglevel=2,
      shuffle_input_sentence=False)
  out = epath.Path(output_path)  # local or gs://
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(model.getvalue())
  return output_path


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m hawk_jax.text.tiny_tokenizer", __doc__)
  p.add_argument("output", nargs="?", default=default_tokenizer_path(),
                 help="where to write the model (default: the shipped file)")
  args = p.parse_args(argv)
  console.setup_logging(args.log_level)
  print(train(args.output))
  return 0


if __name__ == "__main__":
  sys.exit(main())
