"""Tokenizer, prompt layouts and motion text (hawk_jax/text)."""
import os
import pickle

import numpy as np
import pytest

from hawk_jax.models.model_config import hawk_config
from hawk_jax.text import caption as caption_lib
from hawk_jax.text import motion_text, prompts, tiny_tokenizer
from hawk_jax.text.tokenizer import (
  Tokenizer,
  check_fits_vocab,
  default_tokenizer_path,
  load_tokenizer,
)

NV = hawk_config("tiny").num_visual_tokens  # 16


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer()


# ------------------------------------------------------------------------------- tokenizer

def test_tokenizer_has_llama_ids_and_fits_tiny_vocab(tok):
  assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
  assert [tok.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
  # LLaMA's byte pieces sit right after the specials: <0x0A> (newline) is id 13.
  assert tok.id_to_piece(3) == "<0x00>" and tok.id_to_piece(13) == "<0x0A>"
  assert tok.vocab_size == 512
  check_fits_vocab(tok, hawk_config("tiny").llm.vocab_size)
  with pytest.raises(ValueError, match="512 pieces but the LLM vocabulary is 100"):
    check_fits_vocab(tok, 100)


@pytest.mark.parametrize("text", [
    "A man in a red shirt falls down the stairs while a woman watches him.",
    "[INST] <<SYS>>\n \n<</SYS>>\n\n<Video></Video> The video contains 3 frames sampled at "
    "0.0, 1.5, 3.0 seconds. Can you describe the anomaly in the video? [/INST]",
    "héllo wörld — 日本語 🚗 crash!", "  two  spaces\tand tab\n", "x"])
def test_tokenizer_round_trip(tok, text):
  ids = tok.encode(text)
  assert all(0 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text
  assert tok.encode(text, bos=True, eos=True) == [1] + ids + [2]
  assert tok.decode([1] + ids + [2, -100, -100]) == text


def test_tokenizer_pickles_and_rejects_bad_files(tok, tmp_path):
  clone = pickle.loads(pickle.dumps(tok))
  assert clone.encode("a car hits a wall") == tok.encode("a car hits a wall")
  with pytest.raises(FileNotFoundError, match="nope.model"):
    Tokenizer(str(tmp_path / "nope.model"))
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a sentencepiece model")
  with pytest.raises(ValueError, match="bad.model"):
    Tokenizer(str(bad))
  with pytest.raises(ValueError, match="out of range"):
    tok.decode([600])


def test_tiny_tokenizer_rebuilds_byte_for_byte(tmp_path):
  path = tiny_tokenizer.train(str(tmp_path / "t.model"))
  with open(path, "rb") as a, open(default_tokenizer_path(), "rb") as b:
    assert a.read() == b.read(), "shipped tokenizer differs from `python -m hawk_jax.text." \
                                 "tiny_tokenizer`; rebuild and commit it"


def test_load_tokenizer_accepts_a_directory(tmp_path):
  os.symlink(default_tokenizer_path(), tmp_path / "tokenizer.model")
  assert load_tokenizer(str(tmp_path)).vocab_size == 512


# --------------------------------------------------------------------------------- prompts

def _span(ids, start, end):
  return [int(i) for i in ids[start:end]]


def test_caption_prompt_layout(tok):
  caption = caption_lib.normalize_caption("A Man falls; the (red) car stops!")
  assert caption == "a man falls the red car stops"
  p = prompts.caption_prompt(tok, caption, NV)
  text = tok.encode(caption + "\n")
  assert p.input_ids[0] == tok.bos_id
  np.testing.assert_array_equal(p.visual_positions, np.arange(1, 1 + NV))
  assert _span(p.input_ids, 1 + NV, None) == text
  assert (p.labels[:1 + NV] == -100).all()
  assert _span(p.labels, 1 + NV, None) == text
  long = prompts.caption_prompt(tok, "word " * 100, NV)
  assert len(long) == 1 + NV + prompts.MAX_CAPTION_TOKENS


def test_instruct_prompt_layout_and_label_mask(tok):
  qa = [{"q": "What happens?", "a": "A car hits a man."}, {"q": "Where?", "a": "On a road."}]
  p = prompts.instruct_prompt(tok, qa, NV, [0.0, 1.5, 3.0])
  ids, labels = p.input_ids, p.labels
  vis = p.visual_positions
  assert len(vis) == NV and (np.diff(vis) == 1).all()
  assert ids[0] == tok.bos_id
  assert tok.decode(ids[:vis[0]]) == "[INST] <<SYS>>\n \n<</SYS>>\n\n<Video>"
  # The first turn ends with the time message, the question and [/INST], then the answer.
  first_end = np.flatnonzero(ids == tok.eos_id)[0]
  expected_tail = tok.encode("</Video> The video contains 3 frames sampled at 0.0, 1.5, 3.0 "
                             "seconds. What happens? [/INST]")
  answer = tok.encode("A car hits a man.")
  assert _span(ids, vis[-1] + 1, first_end) == expected_tail + answer
  # Exactly the answers and their </s> are supervised, in order.
  supervised = labels[labels != -100].tolist()
  assert supervised == answer + [tok.eos_id] + tok.encode("On a road.") + [tok.eos_id]
  assert (labels[labels != -100] == ids[labels != -100]).all()
  # Second turn: <s>[INST] q [/INST] a </s>.
  assert ids.tolist().count(tok.bos_id) == 2 and ids.tolist().count(tok.eos_id) == 2
  second = ids.tolist().index(tok.bos_id, 1)
  assert tok.decode(ids[second + 1:second + 1 + len(tok.encode("[INST] Where? [/INST]"))]) == \
      "[INST] Where? [/INST]"
  assert int(ids[-1]) == tok.eos_id and labels[-1] == tok.eos_id


def test_instruct_prompt_truncates_but_never_cuts_visual_tokens(tok):
  qa = [{"q": "What happens?", "a": "word " * 300}]
  p = prompts.instruct_prompt(tok, qa, NV, [0.0], max_len=100)
  assert len(p) == 100 and p.visual_mask.sum() == NV
  with pytest.raises(ValueError, match="would cut the visual placeholders"):
    prompts.instruct_prompt(tok, qa, NV, [0.0], max_len=20)


def test_test_prompt_is_the_training_prefix(tok):
  qa = [{"q": "Can you describe the anomaly in the video?", "a": "A fall."}]
  train = prompts.instruct_prompt(tok, qa, NV, [0.0, 2.0])
  test = prompts.instruct_test_prompt(tok, qa[0]["q"], NV, [0.0, 2.0])
  n = len(test)
  np.testing.assert_array_equal(test.input_ids, train.input_ids[:n])
  np.testing.assert_array_equal(test.visual_mask, train.visual_mask[:n])
  assert (test.labels == -100).all()
  assert _span(train.labels, n, None) == tok.encode("A fall.") + [tok.eos_id]
  assert tok.decode(test.input_ids[-8:]).endswith("in the video? [/INST]")


def test_chat_and_released_demo_prompts(tok):
  chat = prompts.chat_prompt(tok, [("What happens?", "A fall."), ("Why?", None)], NV)
  assert chat.visual_mask.sum() == NV
  assert tok.decode(chat.input_ids[:chat.visual_positions[0]]).startswith(
      "[INST] <<SYS>>\n" + prompts.DEMO_SYSTEM_PROMPT)
  assert tok.decode(chat.input_ids[-8:]).endswith("Why? [/INST]")
  with pytest.raises(ValueError, match="last chat turn"):
    prompts.chat_prompt(tok, [("q", "a")], NV)
  demo = prompts.released_demo_prompt(tok, "What happens?", NV)
  vis = demo.visual_positions
  assert tok.decode(demo.input_ids[:vis[0]]).endswith("What happens? [/INST] <Video>")
  assert int(demo.input_ids[-1]) == tok.eos_id  # the released app's prompt ends in </s>


def test_description_questions():
  assert len(prompts.DESCRIPTION_QUESTIONS) == 20
  assert len(set(prompts.DESCRIPTION_QUESTIONS)) == 20
  assert prompts.DESCRIPTION_QUESTIONS[0] == "Can you describe the anomaly in the video?"


def test_description_swap_is_seeded_and_about_half():
  qa = [{"q": "Q1", "a": "A1"}, {"q": "Q2", "a": "A2"}]
  swaps = 0
  for seed in range(400):
    out, swapped = prompts.description_swap(qa, "the description", np.random.default_rng(seed))
    again, swapped_again = prompts.description_swap(qa, "the description",
                                                    np.random.default_rng(seed))
    assert (out, swapped) == (again, swapped_again)
    assert out[1] == {"q": "Q2", "a": "A2"}
    if swapped:
      assert out[0]["a"] == "the description"
      assert out[0]["q"] in prompts.DESCRIPTION_QUESTIONS
    else:
      assert out[0] == {"q": "Q1", "a": "A1"}
    swaps += swapped
  assert 160 < swaps < 240
  assert qa[0] == {"q": "Q1", "a": "A1"}  # not modified in place
  out, swapped = prompts.description_swap([], "desc", np.random.default_rng(0))
  assert swapped and out[0]["a"] == "desc"
  with pytest.raises(ValueError, match="lacks the field 'a'"):
    prompts.description_swap([{"q": "x"}], "desc", np.random.default_rng(0))


def test_timestamps_message():
  assert prompts.timestamps_message(np.float32([0.0, 0.333, 1.25, 12.96])) == (
      "The video contains 4 frames sampled at 0.0, 0.3, 1.2, 13.0 seconds. ")


def test_padding(tok):
  p = prompts.caption_prompt(tok, "a man falls", 4)
  right = prompts.pad_right(p, 20, tok.pad_id)
  n = len(p)
  assert right["attention_mask"].tolist() == [1] * n + [0] * (20 - n)
  assert (right["labels"][n:] == -100).all() and (right["input_ids"][n:] == 0).all()
  left = prompts.pad_left(p, 20, tok.pad_id)
  assert left["attention_mask"].tolist() == [0] * (20 - n) + [1] * n
  np.testing.assert_array_equal(left["input_ids"][20 - n:], p.input_ids)
  assert all(v.dtype == np.int32 for v in (*right.values(), *left.values()))


# ----------------------------------------------------------------------------- motion text

REAL_SENTENCES = [
    ("A man in a red shirt falls down the stairs while a woman watches him.",
     "man falls, woman watches him"),
    ("A white car collides with a motorcycle at the intersection.", "car collides"),
    ("Two men are fighting on the sidewalk and one of them is knocked to the ground.",
     "men fighting, one knocked"),
    ("A person is riding a bicycle on the walkway, which is not allowed.",
     "person riding bicycle, which allowed"),
    ("The man grabs the woman's bag and runs away.", "man grabs bag, runs"),
    ("A car hits a pedestrian who is crossing the road.", "car hits pedestrian, who crossing road"),
    ("A man was hit by a car while crossing the street.", "man hit, crossing street"),
    ("The thief tries to steal a bike from the rack.", "thief tries, steal bike"),
    ("A man wearing a black hat throws a bottle at the police.",
     "wearing hat, man throws bottle"),
    ("A man who is wearing a hat falls down.", "who wearing hat, man falls"),
    ("The driver loses control and the truck overturns on the highway.",
     "driver loses control, truck overturns"),
    ("A woman slips on the wet floor and drops her phone.", "woman slips, drops phone"),
    ("The truck turns left and hits a parked car.", "truck turns, hits car, parked"),
    ("After the car hits him, the cyclist falls off his bike.", "car hits him, cyclist falls"),
    ("A man picks up the bag and puts it in his car.", "man picks bag, puts it"),
    ("There is a fight between two groups of students in the hallway.", ""),
]


@pytest.mark.parametrize("sentence,expected", REAL_SENTENCES)
def test_rules_motion_text_on_real_sentences(sentence, expected):
  assert motion_text.extract_motion_text(sentence, backend="rules") == expected


def test_motion_text_normalisation_and_limits():
  text = motion_text.extract_motion_text("The Man kicks the Door. He RUNS!", backend="rules")
  assert text == "man kicks door, he runs"
  many = " ".join(f"A man hits a car{i}." for i in range(40))
  out = motion_text.extract_motion_text(many, backend="rules")
  assert len(out.split(" ")) == 50 and out.startswith("man hits car0, man hits car1")
  assert motion_text.extract_motion_text("", backend="rules") == ""
  assert motion_text.extract_motion_text(b"A dog runs.", backend="rules") == "dog runs"
  with pytest.raises(ValueError, match="unknown motion-text backend"):
    motion_text.extract_motion_text("A man falls.", backend="nltk")


def test_the_backend_is_a_choice_not_whatever_is_installed():
  # The default is the rules backend on every machine; "auto" (spaCy when installed) is gone.
  assert motion_text.extract_motion_text("A man falls.") == "man falls"
  with pytest.raises(ValueError, match="unknown motion-text backend 'auto'"):
    motion_text.check_backend("auto")
  if not motion_text.spacy_available():  # asking for spaCy without it is an error
    with pytest.raises(ValueError, match="motion_text_backend=rules"):
      motion_text.check_backend("spacy")


@pytest.mark.skipif(not motion_text.spacy_available(),
                    reason="spaCy's en_core_web_sm is not installed: `pip install spacy && python "
                    "-m spacy download en_core_web_sm` (a GitHub release, not on PyPI, so CI's "
                    "package-registry-only machines run without it)")
@pytest.mark.parametrize("sentence,expected", REAL_SENTENCES[:2] + REAL_SENTENCES[4:5])
def test_spacy_backend_agrees_on_plain_sentences(sentence, expected):
  assert motion_text.extract_motion_text(sentence, backend="spacy") == expected
