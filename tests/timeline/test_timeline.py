"""The anomaly score (one prefill) against the training forward pass, and the timeline command
on a random tiny model: schema, batching, descriptions, pictures, errors."""
import json

import cv2
import jax
import numpy as np
import pytest

from hawk_jax.infer.engine import Engine
from hawk_jax.models.hawk import Hawk
from hawk_jax.text import prompts
from hawk_jax.text.tokenizer import default_tokenizer_path, load_tokenizer
from hawk_jax.timeline import cli
from hawk_jax.timeline import frames as frames_lib
from hawk_jax.timeline import windows as windows_lib
from hawk_jax.timeline.scoring import (
  ANOMALY_QUESTION,
  AnomalyScorer,
  YesNoTokens,
  motion_frames,
  with_suffix,
)
from tests.support import assert_one_error_line, random_stage2_workdir
from tests.timeline.test_windows import _video


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return random_stage2_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def engine(workdir):
  return Engine.from_workdir(workdir)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("long")
  return [_video(root / "a.mp4", n=60, seed=1), _video(root / "b.mp4", n=45, seed=2)]


class _Pieces:
  """A tokenizer stand-in: each word is a fixed id sequence."""

  def __init__(self, table):
    self.table = table

  def encode(self, text):
    return self.table[text]

  def id_to_piece(self, i):
    return f"<{i}>"


def test_yes_no_tokens_of_the_tiny_tokenizer_share_a_leading_piece():
  tok = load_tokenizer(default_tokenizer_path())
  t = YesNoTokens.of(tok)
  assert [tok.id_to_piece(i) for i in t.prefix] == ["▁"]
  assert "Y" in [tok.id_to_piece(i) for i in t.yes]
  assert "N" in [tok.id_to_piece(i) for i in t.no]
  assert not set(t.yes) & set(t.no)


def test_yes_no_tokens_single_token_words_and_a_refused_tokenizer():
  llama_like = _Pieces({"Yes": [3869], "yes": [4874], "YES": [22483], "No": [1939],
                        "no": [694], "NO": [11698]})
  t = YesNoTokens.of(llama_like)
  assert t.prefix == () and t.yes == (3869, 4874, 22483) and t.no == (694, 1939, 11698)
  same = _Pieces({w: [5, 6] for w in ("Yes", "yes", "YES", "No", "no", "NO")})
  with pytest.raises(ValueError, match="tells yes from no"):
    YesNoTokens.of(same)
  lp = np.log(np.full((1, 30000), 1e-9))
  lp[0, [3869, 4874]] = np.log([0.3, 0.1])
  lp[0, 1939] = np.log(0.2)
  score, mass = t.score(lp)
  assert score[0] == pytest.approx((0.4 + 1e-9) / (0.6 + 4e-9), rel=1e-6)
  assert mass[0] == pytest.approx(0.6, rel=1e-6)


def test_next_token_logprobs_equal_the_training_forward(engine, long_videos):
  """Two windows' prompts of different lengths, left-padded into one prefill, against the
  training forward pass (Hawk.__call__) over each unpadded prompt: the last position."""
  source = frames_lib.FileSource(long_videos[0])
  plan = windows_lib.plan_windows(source.num_frames, source.fps, 2.0, 2.0, engine.num_frames)
  got = list(frames_lib.assemble(source, plan[:2], engine.image_size))
  frames = np.stack([g.frames for g in got])
  motion = np.stack([motion_frames(g.frames, g.prev_frames, engine.motion_mode) for g in got])
  visual = engine.encode(frames, motion)
  batch = [engine.test_prompt(ANOMALY_QUESTION, got[0].window.timestamps),
           engine.test_prompt("Is it normal?", None)]
  lp = engine.next_token_logprobs(visual, batch)
  assert lp.shape == (2, engine.config.llm.vocab_size)
  loaded = engine.hawk_params()
  model = Hawk(engine.config)
  for i, p in enumerate(batch):
    out = model.apply({"params": loaded}, frames[i:i + 1], motion[i:i + 1], p.input_ids[None],
                      np.ones((1, len(p)), np.int32), p.visual_mask[None])
    ref = np.asarray(jax.nn.log_softmax(out["logits"][0, -1].astype(np.float32)))
    np.testing.assert_allclose(lp[i], ref, atol=2e-4)


def test_scores_do_not_depend_on_the_batch(engine, long_videos):
  source = frames_lib.FileSource(long_videos[0])
  plan = windows_lib.plan_windows(source.num_frames, source.fps, 2.0, 1.0, engine.num_frames)
  got = list(frames_lib.assemble(source, plan, engine.image_size))
  frames = np.stack([g.frames for g in got])
  motion = np.stack([motion_frames(g.frames, g.prev_frames, engine.motion_mode) for g in got])
  stamps = [g.window.timestamps for g in got]
  three = AnomalyScorer(engine, batch_size=3)
  one = AnomalyScorer(engine, batch_size=1)
  batched = np.concatenate([three.score(three.visual(frames[i:i + 3], motion[i:i + 3]),
                                        stamps[i:i + 3])[0] for i in range(0, len(got), 3)])
  alone = np.array([one.score(one.visual(frames[i:i + 1], motion[i:i + 1]), stamps[i:i + 1])[0][0]
                    for i in range(len(got))])
  np.testing.assert_allclose(batched, alone, atol=1e-5)
  # the forced prefix is really appended
  p = with_suffix(engine.test_prompt(ANOMALY_QUESTION, stamps[0]), three.tokens.prefix)
  assert list(p.input_ids[-len(three.tokens.prefix):]) == list(three.tokens.prefix)
  assert prompts.IGNORE_INDEX == p.labels[-1]


def test_timeline_command_writes_json_png_and_jsonl(workdir, engine, long_videos, tmp_path,
                                                    capsys):
  out = tmp_path / "tl"
  code = cli.main(["--checkpoint", workdir, *long_videos, "--out", str(out), "--window_s", "2",
                   "--stride_s", "1", "--batch_size", "3", "--describe",
                   "--describe_threshold", "0", "--max_new_tokens", "3"])
  text = capsys.readouterr().out
  assert code == 0, text
  lines = (out / "timelines.jsonl").read_text().splitlines()
  assert len(lines) == 2
  scorer = AnomalyScorer(engine, batch_size=1)
  for path, line, n in zip(long_videos, lines, (60, 45)):
    name = path.rsplit("/", 1)[-1][:-4]
    t = json.loads((out / name / "timeline.json").read_text())
    assert t == json.loads(line)
    assert t["video"] == path and t["fps"] == 10.0 and t["num_frames"] == n
    assert len(t["frame_scores"]) == n
    plan = windows_lib.plan_windows(n, 10.0, 2.0, 1.0, engine.num_frames)
    assert [(w["start_s"], w["end_s"]) for w in t["windows"]] == [
        (round(w.start_s, 3), round(w.end_s, 3)) for w in plan]
    assert all(0 <= w["score"] <= 1 and isinstance(w["description"], str)
               for w in t["windows"])
    # window 1 scored alone, by hand, equals the command's (batched, padded) score
    source = frames_lib.FileSource(path)
    [g] = frames_lib.assemble(source, [plan[1]], engine.image_size)
    mot = motion_frames(g.frames, g.prev_frames, engine.motion_mode)
    s, _ = scorer.score(scorer.visual(g.frames[None], mot[None]), [g.window.timestamps])
    assert t["windows"][1]["score"] == pytest.approx(float(s[0]), abs=1e-4)
    fs = np.asarray(t["frame_scores"])
    np.testing.assert_allclose(fs, windows_lib.frame_scores(
        plan, [w["score"] for w in t["windows"]], n), atol=2e-5)
    for iv in t["intervals"]:
      assert (fs[iv["start_frame"]:iv["end_frame"] + 1] >= t["threshold"]).all()
    png = cv2.imread(str(out / name / "timeline.png"))
    assert png is not None and png.shape[1] > 600
  assert "2 timeline(s)" in text


def test_one_video_writes_into_out_itself(workdir, long_videos, tmp_path, capsys):
  out = tmp_path / "one"
  assert cli.main(["--checkpoint", workdir, long_videos[1], "--out", str(out)]) == 0
  capsys.readouterr()
  t = json.loads((out / "timeline.json").read_text())
  assert len(t["windows"]) == 2 and t["windows"][0]["start_s"] == 0.0  # 4.5 s, windows of 4 s
  assert (out / "timeline.png").stat().st_size > 10_000


def test_bad_input_is_one_error_line(workdir, long_videos, tmp_path, capsys):
  code = cli.main(["--checkpoint", workdir, long_videos[0], str(tmp_path / "gone.mp4"),
                   "--out", str(tmp_path / "o")])
  assert_one_error_line(code, *capsys.readouterr(), "gone.mp4", "missing file")
  code = cli.main(["--checkpoint", workdir, long_videos[0], "--out", str(tmp_path / "o"),
                   "--stride_s", "0"])
  assert_one_error_line(code, *capsys.readouterr(), "--stride_s")
  code = cli.main(["--checkpoint", str(tmp_path / "nowhere"), long_videos[0], "--out",
                   str(tmp_path / "o")])
  assert_one_error_line(code, *capsys.readouterr(), "nowhere")
  assert not (tmp_path / "o").exists()
