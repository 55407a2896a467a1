"""Inference from a trained workdir: the engine's generation against a cache-free argmax loop,
batching, the describe / chat CLIs and `evaluate --checkpoint`.

One tiny workdir (random parameters written the way training writes them) and two short videos
serve every test; shapes are kept few so the compilations are shared."""
import io
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.common import base_config
from data_pipelines import motion, records
from data_pipelines.synthetic import write_mp4
from hawk_jax.eval import cli as eval_cli
from hawk_jax.infer import chat, describe
from hawk_jax.infer import conversation as conversation_lib
from hawk_jax.infer import engine as engine_lib
from hawk_jax.infer.engine import Engine, GenerationOptions
from hawk_jax.infer.text_stream import TextStream
from hawk_jax.models.llama import Llama
from hawk_jax.text import prompts
from hawk_jax.text.tokenizer import load_tokenizer
from tests.support import write_random_workdir, write_records

NUM_FRAMES = 4
MAX_NEW = 8
QUESTION = prompts.DESCRIPTION_QUESTIONS[0]
LONG_QUESTION = "Who is in the video and what do they do after that?"


@pytest.fixture(scope="module")
def tiny_cfg():
  cfg = base_config(2, "size=tiny")
  cfg.data.num_frames = NUM_FRAMES
  cfg.generate.max_new_tokens = MAX_NEW
  return cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_cfg):
  path = str(tmp_path_factory.mktemp("stage2"))
  saved = write_random_workdir(path, tiny_cfg, steps=(10, 20), std=0.08)
  return path, saved


def _clip(seed, size=48, n=10):
  """A smooth random background with a square moving across it."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
  import cv2
  bg = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
  frames = np.repeat(bg[None], n, axis=0).copy()
  for t in range(n):
    x = 2 + 3 * t
    frames[t, 10:22, x:x + 12] = (255, 40 * seed % 256, 20)
  return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  paths = []
  for seed in (1, 2):
    path = str(root / f"clip{seed}.mp4")
    write_mp4(path, _clip(seed), fps=5.0)
    paths.append(path)
  return paths


@pytest.fixture(scope="module")
def engine(workdir):
  return Engine.from_workdir(workdir[0])


# --- generation ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoded(engine, videos):
  vids = [engine.load_video(p) for p in videos]
  visual = engine.encode(np.stack([v.frames for v in vids]), np.stack([v.motion for v in vids]))
  return vids, visual


def _reference_greedy(engine, llm_params, emb, n):
  """Greedy tokens by full forward passes over the growing sequence (no KV cache), with the
  LLM as the workdir holds it (the engine decodes through its converted twin)."""
  llm = Llama(engine.config.llm)
  length = emb.shape[1]
  buf = jnp.zeros((1, length + n, emb.shape[2]), emb.dtype).at[:, :length].set(emb)

  @jax.jit
  def logits_of(buf):  # causal: the unfilled tail does not reach earlier positions
    return llm.apply({"params": llm_params}, inputs_embeds=buf)

  @jax.jit
  def embed(ids):
    return llm.apply({"params": llm_params}, ids, method=Llama.embed)

  out = []
  for i in range(n):
    token = int(jnp.argmax(logits_of(buf)[0, length + i - 1]))
    out.append(token)
    if token == engine.tokenizer.eos_id:
      break
    buf = buf.at[:, length + i].set(embed(jnp.asarray([[token]]))[0, 0])
  return out


def test_greedy_equals_cache_free_argmax_loop(engine, encoded, workdir):
  vids, visual = encoded
  # The engine holds the LLM once, as its decoding twin, plus the token table for prompts.
  assert engine.llm.decode_layout and not engine.llm.config.scan_layers
  assert set(engine.params["llm"]) == {"embed_tokens"}
  prompt = engine.test_prompt(QUESTION, vids[0].timestamps)
  answer = engine.generate(visual[:1], [prompt], GenerationOptions(max_new_tokens=MAX_NEW))[0]
  emb = engine.embed(visual[:1], prompt.input_ids[None], prompt.visual_mask[None])
  want = _reference_greedy(engine, workdir[1]["frozen"]["llm"], emb, MAX_NEW)
  got = answer.tokens + ([engine.tokenizer.eos_id] if answer.stopped_at_eos else [])
  assert got == want
  assert answer.text == engine.tokenizer.decode(answer.tokens).strip()


def test_batch_of_two_prompts_equals_each_alone(engine, encoded):
  vids, visual = encoded
  batch = [engine.test_prompt(QUESTION, vids[0].timestamps),
           engine.test_prompt(LONG_QUESTION, vids[1].timestamps)]
  assert len(batch[0]) != len(batch[1])  # so one row is left-padded
  options = GenerationOptions(max_new_tokens=MAX_NEW)
  together = engine.generate(visual, batch, options)
  alone = [engine.generate(visual[i:i + 1], [batch[i]], options)[0] for i in range(2)]
  assert [a.tokens for a in together] == [a.tokens for a in alone]
  assert together[0].tokens != together[1].tokens


def test_stream_sampling_and_beam(engine, encoded):
  vids, visual = encoded
  prompt = engine.test_prompt(QUESTION, vids[0].timestamps)
  greedy = engine.generate(visual[:1], [prompt], GenerationOptions(max_new_tokens=MAX_NEW))[0]
  deltas = list(engine.stream(visual[:1], prompt, GenerationOptions(max_new_tokens=MAX_NEW)))
  assert len(deltas) > 1 and "".join(deltas) == greedy.text
  sample = GenerationOptions(max_new_tokens=MAX_NEW, strategy="sample", temperature=1.5,
                             top_p=0.95, seed=3)
  first = engine.generate(visual[:1], [prompt], sample)[0]
  assert engine.generate(visual[:1], [prompt], sample)[0].tokens == first.tokens
  beam = engine.generate(visual[:1], [prompt], GenerationOptions(
      max_new_tokens=MAX_NEW, strategy="beam", num_beams=2))[0]
  assert 0 < len(beam.tokens) <= MAX_NEW


def test_generation_options_from_config_and_bad_values(tiny_cfg):
  opts = GenerationOptions.from_config(tiny_cfg.generate, strategy=None, top_p=0.5)
  assert (opts.max_new_tokens, opts.strategy, opts.top_p, opts.num_beams) == (MAX_NEW, "greedy",
                                                                              0.5, 4)
  with pytest.raises(ValueError, match="num_beams >= 2"):
    GenerationOptions(strategy="beam", num_beams=1)
  with pytest.raises(ValueError, match="strategy 'topk'"):
    GenerationOptions(strategy="topk")
  with pytest.raises(ValueError, match="temperature > 0"):
    GenerationOptions(strategy="sample", temperature=0.0)


def test_text_stream_holds_back_partial_characters():
  tok = load_tokenizer()
  text = "Un café à côté — naïve 東京 ok"
  ids = tok.encode(text)
  stream = TextStream(tok.decode)
  deltas = [stream.push(i) for i in ids] + [stream.flush()]
  assert "".join(deltas) == tok.decode(ids)
  assert not any("\ufffd" in d for d in deltas)


# --- CLIs ----------------------------------------------------------------------------------------

def test_describe_cli_prints_the_greedy_description(workdir, videos, engine, encoded, capsys):
  vids, visual = encoded
  want = engine.generate(visual[:1], [engine.test_prompt(QUESTION, vids[0].timestamps)],
                         engine.default_options())[0].text
  assert describe.main(["--checkpoint", workdir[0], videos[0]]) == 0
  out = capsys.readouterr().out
  assert out == want + "\n" and want
  assert describe.main(["--checkpoint", workdir[0], "--question", LONG_QUESTION, videos[0],
                        videos[1]]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert [line.split("\t")[0] for line in lines] == videos
  assert describe.main(["--checkpoint", workdir[0], "/no/such/video.mp4"]) == 2
  assert "/no/such/video.mp4" in capsys.readouterr().err


class _Counting:
  def __init__(self, fn):
    self.fn, self.calls = fn, 0

  def __call__(self, *args, **kwargs):
    self.calls += 1
    return self.fn(*args, **kwargs)


def test_chat_two_turns_encode_once_and_match_describe(workdir, videos, engine, encoded,
                                                       monkeypatch, capsys):
  vids, visual = encoded
  want = engine.generate(visual[:1], [engine.test_prompt(QUESTION, vids[0].timestamps)],
                         engine.default_options())[0].text
  encode = _Counting(engine_lib._encode_video)
  embed = _Counting(engine_lib._prompt_embeddings)
  monkeypatch.setattr(engine_lib, "_encode_video", encode)
  monkeypatch.setattr(engine_lib, "_prompt_embeddings", embed)
  stdin = f"{QUESTION}\nAnd what happens next?\n/reset\n{QUESTION}\n/quit\nnever asked\n"
  monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
  assert chat.main(["--checkpoint", workdir[0], "--system", " ", videos[0]]) == 0
  captured = capsys.readouterr()
  answers = captured.out.splitlines()
  assert len(answers) == 3 and "[conversation reset]" in captured.err
  assert answers[0] == want and answers[2] == want   # /reset starts over on the same video
  # The video went through the towers once and was spliced into a prompt once per
  # conversation: the second turn only appended its own tokens to the cache.
  assert encode.calls == 1 and embed.calls == 2


def test_conversation_turn_layout_matches_chat_prompt(engine, encoded):
  vids, _ = encoded
  tok = engine.tokenizer
  answer = tok.encode("A man falls.")
  first = prompts.chat_prompt(tok, [("q one", None)], engine.num_visual_tokens,
                              vids[0].timestamps)
  follow = conversation_lib.continuation_ids(tok, "q two", answer[-1:])
  whole = prompts.chat_prompt(tok, [("q one", "A man falls."), ("q two", None)],
                              engine.num_visual_tokens, vids[0].timestamps)
  assert list(first.input_ids) + answer[:-1] + follow == list(whole.input_ids)
  # An answer that already ended in </s> does not get a second one.
  assert conversation_lib.continuation_ids(tok, "q", [tok.eos_id])[:2] == [tok.eos_id,
                                                                           tok.bos_id]


def test_conversation_refuses_what_does_not_fit(engine, encoded):
  vids, _ = encoded
  chat_ = conversation_lib.Conversation(engine, vids[0], max_context=40,
                                        options=GenerationOptions(max_new_tokens=MAX_NEW))
  with pytest.raises(conversation_lib.ContextFull, match="of 40 cache slots"):
    list(chat_.ask(QUESTION))


# --- evaluate --checkpoint -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, videos):
  examples = []
  for i, path in enumerate(videos):
    clip = motion.extract(path, num_frames=NUM_FRAMES, size=48, mode="flow_soft")
    qa = [{"q": "What moves across the scene?", "a": "A red square moves to the right."},
          {"q": "Is anyone hurt?", "a": "No one is hurt."}]
    examples.append(records.make_example(
        records.encode_visual(clip), video=os.path.basename(path), source="test",
        motion_mode="flow_soft", description=f"A red square slides right in clip {i}.", qa=qa))
  return write_records({"test": examples}, tmp_path_factory.mktemp("hawk_data"))


def test_evaluate_checkpoint_writes_predictions_and_bleu(workdir, data_dir, tmp_path, capsys):
  out = str(tmp_path / "stage3")
  argv = ["--checkpoint", workdir[0], "--data_dir", data_dir, "--out", out, "--no_judge",
          "--batch_size", "2", "--max_items", "5"]
  assert eval_cli.main(argv) == 0
  with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as f:
    preds = [json.loads(line) for line in f]
  assert [p["task"] for p in preds] == ["description", "qa", "qa", "description", "qa"]
  assert all(set(p) == {"task", "video", "question", "reference", "prediction"} for p in preds)
  assert preds[0]["question"] == QUESTION and preds[1]["reference"].startswith("A red square")
  assert {p["video"] for p in preds if p["task"] == "description"} == {"clip1.mp4", "clip2.mp4"}
  with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert report["tasks"]["description"]["items"] == 2 and report["tasks"]["qa"]["items"] == 3
  assert set(report["tasks"]["qa"]["bleu"]) >= {"bleu_1", "bleu_4"}
  assert os.path.exists(os.path.join(out, "report.md"))
  assert "BLEU-1" in capsys.readouterr().out
  assert eval_cli.main(["--checkpoint", workdir[0], "--out", out]) == 2  # no --data_dir
