"""The web demo's logic without a browser: the page's handlers (hawk_jax.demo.app.Callbacks)
called directly, what they show for bad input, and the command line's refusals.

The description must be `describe`'s (same prompt, greedy: same text), the chat `chat`'s (a
Conversation about the same video), and the video encoded once whatever follows."""
import socket
import sys

import numpy as np
import pytest

from data_pipelines import loaders, records
from hawk_jax.demo import __main__ as demo_main
from hawk_jax.demo.session import Demo, DemoError
from hawk_jax.infer.conversation import Conversation
from hawk_jax.infer.engine import DEFAULT_QUESTION, Engine, GenerationOptions
from hawk_jax.infer.predict import predict
from tests.demo.conftest import MAX_NEW, NUM_FRAMES, write_not_a_video

# strategy, max tokens, temperature, top p, beams, seed: the page's settings, in order
GREEDY = ("greedy", MAX_NEW, 1.0, 0.9, 4, 0)


def _out(names, values):
  return dict(zip(names, values))


def _skipped(value) -> bool:
  return isinstance(value, dict) and value == {"__type__": "update"}


@pytest.fixture(scope="module")
def app():
  """hawk_jax.demo.app, which imports gradio (tests without it are skipped)."""
  pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
  from hawk_jax.demo import app
  return app


@pytest.fixture(scope="module")
def callbacks(app, demo_engine, demo_data_dir):
  return app.Callbacks(Demo(demo_engine, data_dir=demo_data_dir))


def test_describe_streams_describes_greedy_answer(app, callbacks, demo_engine, demo_video):
  expected = demo_engine.describe([demo_video],
                                  options=GenerationOptions(max_new_tokens=MAX_NEW))[0].text
  assert expected  # a random tiny model still says something in 8 tokens
  steps = [_out(app.DESCRIBE_OUTPUTS, v)
           for v in callbacks.describe(demo_video, None, None, DEFAULT_QUESTION, *GREEDY)]
  first, last = steps[0], steps[-1]
  # The first step loads the video (nothing was loaded) and shows its frames and motion.
  clip = first["clip"]
  assert clip.key == ("file", demo_video) and clip.name == "square.webm"
  assert len(first["gallery"]) == NUM_FRAMES
  image, caption = first["gallery"][0]
  assert image.dtype == np.uint8 and image.shape[1] > 2 * image.shape[0]  # frame | motion
  assert caption.startswith("#1 ")
  # Streamed: every step's text extends the previous one, and the last is describe's.
  texts = [s["description"] for s in steps if isinstance(s["description"], str)]
  assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
  assert last["description"] == expected
  assert "done" in last["status"] and "error" not in last["status"]


def test_chat_is_a_conversation_and_the_video_is_encoded_once(app, callbacks, demo_engine,
                                                              demo_video):
  loaded = _out(app.LOAD_OUTPUTS, callbacks.upload(demo_video, None))
  clip = loaded["clip"]
  assert "4 frames" in loaded["status"] and loaded["chat"] == []
  encoded = demo_engine.encode_calls
  greedy = GenerationOptions(max_new_tokens=MAX_NEW)
  reference = Conversation(demo_engine, demo_engine.load_video(demo_video), options=greedy)
  expected = ["".join(reference.ask(q)) for q in ("What happens?", "Who is there?")]
  encoded_by_reference = demo_engine.encode_calls - encoded

  history = []
  for question in ("What happens?", "Who is there?"):
    steps = [_out(app.CHAT_OUTPUTS, v)
             for v in callbacks.chat(question, history, demo_video, None, clip, *GREEDY)]
    assert all(_skipped(s["clip"]) for s in steps)  # the loaded clip is the page's video
    history = steps[-1]["chat"]
    assert steps[0]["message"] == ""  # the question box is emptied
  assert [m["content"] for m in history] == ["What happens?", expected[0],
                                             "Who is there?", expected[1]]
  assert [m["role"] for m in history] == ["user", "assistant"] * 2
  # A describe and a new chat reuse the same visual tokens.
  list(callbacks.describe(demo_video, None, clip, "What is unusual?", *GREEDY))
  reset = _out(app.RESET_OUTPUTS, callbacks.reset(clip))
  assert reset["chat"] == [] and clip.conversation.history == []
  steps = [_out(app.CHAT_OUTPUTS, v)
           for v in callbacks.chat("What happens?", [], demo_video, None, clip, *GREEDY)]
  assert steps[-1]["chat"][-1]["content"] == expected[0]
  assert demo_engine.encode_calls - encoded == encoded_by_reference  # none by the demo


def test_a_test_video_is_evaluations_item(app, callbacks, demo_engine, demo_data_dir):
  demo = callbacks.demo
  labels = demo.test_labels()   # "INDEX: VIDEO", in the split's record order
  assert sorted(label.split(": ")[1] for label in labels) == ["clips/a.mp4", "clips/b.mp4"]
  label = next(label for label in labels if label.endswith("b.mp4"))
  index = int(label.split(":")[0])
  loaded = _out(app.LOAD_OUTPUTS, callbacks.pick(label, None))
  clip = loaded["clip"]
  assert clip.key == ("test", index)
  assert loaded["reference"]["visible"] and "slides right (b.mp4)" in loaded["reference"]["value"]
  assert loaded["other_source"]["value"] is None  # the uploaded video is cleared
  rec = records.decode_record(records.open_split(demo_data_dir, "test")[index])
  frames, motion, timestamps = loaders.plain_visual(rec, demo_engine.num_frames,
                                                    demo_engine.image_size)
  np.testing.assert_array_equal(clip.video.frames, frames)
  np.testing.assert_array_equal(clip.video.motion, motion)
  np.testing.assert_array_equal(clip.video.timestamps, timestamps)
  # Its greedy description is evaluation's prediction for the record.
  steps = list(callbacks.describe(None, label, clip, DEFAULT_QUESTION, *GREEDY))
  [prediction] = [r for r in predict(demo_engine, demo_data_dir, batch_size=1,
                                     options=GenerationOptions(max_new_tokens=MAX_NEW))
                  if r["task"] == "description" and r["video"] == "clips/b.mp4"]
  assert _out(app.DESCRIBE_OUTPUTS, steps[-1])["description"] == prediction["prediction"]


def test_bad_input_is_a_message_on_the_page(app, callbacks, demo_video, tmp_path):
  def status_of(names, values):
    return _out(names, values)["status"]

  def last(gen):
    return list(gen)[-1]

  # No video at all.
  status = status_of(app.DESCRIBE_OUTPUTS, last(callbacks.describe(None, None, None, "", *GREEDY)))
  assert "no video" in status and 'class="error"' in status
  # A file that is not a video: named by its own name, not the server's temp path.
  loaded = _out(app.LOAD_OUTPUTS, callbacks.upload(write_not_a_video(tmp_path), None))
  assert loaded["clip"] is None and loaded["gallery"] is None
  assert "notes.mp4" in loaded["status"] and str(tmp_path) not in loaded["status"]
  # Settings out of range, beam search for chat, an empty question, a test video not there.
  bad = [("greedy", 0, 1.0, 0.9, 4, 0), ("sample", MAX_NEW, 0.0, 0.9, 4, 0),
         ("beam", MAX_NEW, 1.0, 0.9, 1, 0), ("greedy", 2.5, 1.0, 0.9, 4, 0),
         ("greedy", MAX_NEW, 1.0, 0.9, 4, float("inf"))]
  for settings in bad:
    status = status_of(app.DESCRIBE_OUTPUTS,
                       last(callbacks.describe(demo_video, None, None, "", *settings)))
    assert 'class="error"' in status, settings
  for message, settings in [("Who?", ("beam",) + GREEDY[1:]), ("  ", GREEDY)]:
    out = _out(app.CHAT_OUTPUTS, last(callbacks.chat(message, [], demo_video, None, None,
                                                     *settings)))
    assert 'class="error"' in out["status"] and _skipped(out["chat"])
  status = status_of(app.LOAD_OUTPUTS, callbacks.pick("7: nope.mp4", None))
  assert "no test video" in status
  # Clearing the pick (or the upload) changes nothing else.
  assert all(_skipped(v) for v in callbacks.pick(None, None) + callbacks.upload(None, None))
  with pytest.raises(DemoError, match="beam"):
    list(callbacks.demo.ask(None, "Who?", GenerationOptions(strategy="beam")))


def test_a_chat_that_outgrows_the_cache_says_so(demo_engine, demo_video):
  demo = Demo(demo_engine, max_context=240)  # the first turn takes ~180 slots
  clip = demo.load_file(demo_video)
  options = GenerationOptions(max_new_tokens=MAX_NEW)
  turns = 0
  with pytest.raises(DemoError, match="start a new chat"):
    for turns in range(20):
      list(demo.ask(clip, "What happens next in the video?", options))
  assert turns >= 1  # the first turns fit
  demo.reset_chat(clip)
  assert list(demo.ask(clip, "What happens?", options))


def test_page_builds(app, callbacks):
  import gradio as gr
  page = app.build(callbacks.demo, checkpoint="runs/stage2")
  assert isinstance(page, gr.Blocks)


def test_cli_without_gradio_is_one_line(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
  assert demo_main.main(["--checkpoint", "runs/stage2"]) == 2
  assert capsys.readouterr().err == "the demo needs gradio: pip install -e '.[demo]'\n"


@pytest.mark.parametrize("extra", [[], ["--step", "99"], ["--data_dir", "MISSING"]])
def test_cli_bad_input_is_one_line(app, extra, demo_workdir, tmp_path, capsys):
  checkpoint = str(tmp_path / "nope") if not extra else demo_workdir
  if extra[-1:] == ["MISSING"]:
    extra = ["--data_dir", str(tmp_path / "no_data")]
  assert demo_main.main(["--checkpoint", checkpoint, *extra]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err


def test_sampling_and_beam_settings(app, callbacks, demo_engine, demo_video):
  def described(*settings):
    steps = list(callbacks.describe(demo_video, None, None, DEFAULT_QUESTION, *settings))
    out = _out(app.DESCRIBE_OUTPUTS, steps[-1])
    assert "done" in out["status"], out["status"]
    return out["description"]

  beam = GenerationOptions(max_new_tokens=MAX_NEW, strategy="beam", num_beams=3)
  assert described("beam", MAX_NEW, 1.0, 0.9, 3, 0) == demo_engine.describe(
      [demo_video], options=beam)[0].text
  sampled = [described("sample", MAX_NEW, 0.8, 0.95, 4, seed) for seed in (1, 1, 2)]
  assert sampled[0] == sampled[1]  # seeded


def test_cli_port_in_use_is_one_line_before_loading(app, demo_workdir, capsys, monkeypatch):
  def no_load(*args, **kwargs):
    raise AssertionError("the weights were read before the port was checked")

  monkeypatch.setattr(Engine, "from_workdir", no_load)
  with socket.create_server(("127.0.0.1", 0)) as taken:
    port = taken.getsockname()[1]
    assert demo_main.main(["--checkpoint", demo_workdir, "--port", str(port)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"error: 127.0.0.1:{port}: cannot serve there (Address already in use); "
                 "pass another --port or --host"]
