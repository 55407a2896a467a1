"""The CPU run's stand-in for pretrained towers: the LLM's corpus keeps the video's place and
fills it with text, the random image Q-Formers pass what the ViT sees, and the tiny config's
prompts keep the first answer."""
import json

import jax
import numpy as np

from configs.common import base_config
from data_pipelines.synthetic import ANOMALY_QUESTION
from hawk_jax import losses
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import host_random_params
from hawk_jax.text import motion_text, prompts
from hawk_jax.text.tokenizer import load_tokenizer
from hawk_jax.train import pretrain_llm

CAPTION = "a red man falls down in the street"
DESCRIPTION = "The red man walks across the street and suddenly falls to the ground."


def _records(monkeypatch, rows):
  monkeypatch.setattr(pretrain_llm.records, "open_split", lambda d, split: rows)


def test_corpus_puts_caption_and_motion_text_where_the_video_goes(monkeypatch):
  tok = load_tokenizer(None)
  qa = [{"q": ANOMALY_QUESTION, "a": "Yes."}, {"q": "What happens?", "a": "He falls."}]
  _records(monkeypatch, [{"caption": CAPTION, "description": DESCRIPTION,
                          "qa_json": json.dumps(qa), "timestamps": np.arange(1, 9) * 0.4}])
  seqs = pretrain_llm.corpus_sequences(["d"], tok, num_visual_tokens=16)
  assert len(seqs) == 4  # caption, motion-language, description, QA
  moving = motion_text.extract_motion_text(CAPTION, "rules")
  for p, halves in zip(seqs, (True, False, True, True)):
    where = np.flatnonzero(p.visual_mask)
    assert (p.labels[where] == prompts.IGNORE_INDEX).all()  # the stand-in is never a label
    if halves:
      assert where.size == 16
      seen = tok.encode(CAPTION)[:8]
      assert list(p.input_ids[where[:len(seen)]]) == seen
      motion = tok.encode(moving)[:8]
      assert list(p.input_ids[where[8:8 + len(motion)]]) == motion
      assert (p.input_ids[where[8 + len(motion):]] == tok.unk_id).all()
    else:
      assert where.size == 8
      motion = tok.encode(moving)[:8]
      assert list(p.input_ids[where[:len(motion)]]) == motion
  ids, labels, mask = pretrain_llm.pack(seqs, 64)
  assert ids.shape == labels.shape == mask.shape == (4, 64)
  first = seqs[0]
  n = min(len(first), 64)
  assert mask[0, :n].all() and not mask[0, n:].any()  # placeholders are attended to
  vis = np.flatnonzero(first.visual_mask[:64])
  assert (labels[0, vis] == losses.IGNORE).all()
  text = np.setdiff1d(np.arange(n), vis)
  np.testing.assert_array_equal(labels[0, text], first.input_ids[text])


def test_signal_preserving_qformers_redraw_only_the_image_qformer_kernels():
  cfg = base_config(2, "size=tiny")
  config = HawkConfig.from_stage_config(cfg)
  params = host_random_params(config, seed=0, std=0.02)
  out = pretrain_llm.signal_preserving_qformers(params, seed=0)
  for branch in ("appearance", "motion"):
    for name, x in (("vit", out[branch]["vit"]), ("video_qformer", out[branch]["video_qformer"])):
      same = jax.tree.map(np.array_equal, x, params[branch][name])
      assert all(jax.tree.leaves(same)), name  # untouched
    layer = out[branch]["qformer"]["layers_0"]["cross_attention"]
    value = np.asarray(layer["value"]["kernel"])  # [embed, heads, head_dim]: fan-in = embed
    assert abs(value.std() * np.sqrt(value.shape[0]) - 1) < 0.1
    o = np.asarray(layer["out"]["kernel"])        # [heads, head_dim, embed]
    assert abs(o.std() * np.sqrt(o.shape[0] * o.shape[1]) - 1) < 0.1
    norm = layer["norm"]["scale"]
    np.testing.assert_array_equal(norm, params[branch]["qformer"]["layers_0"][
        "cross_attention"]["norm"]["scale"])


def test_the_tiny_config_keeps_the_first_answer_of_a_long_first_question():
  """At 128 tokens the yes/no question's answer fell off every tiny stage-2 prompt."""
  cfg = base_config(2, "size=tiny")
  config = HawkConfig.from_stage_config(cfg)
  tok = load_tokenizer(None)
  qa = [{"q": ANOMALY_QUESTION, "a": "No."},
        {"q": "What is the anomaly in the video?", "a": "There is no anomaly."}]
  p = prompts.instruct_prompt(tok, qa, config.num_visual_tokens,
                              np.round(np.arange(1, 9) * 0.35, 2), max_len=cfg.data.max_len)
  supervised = tok.decode([int(t) for t in p.labels if t != prompts.IGNORE_INDEX])
  assert supervised.startswith("No.")
