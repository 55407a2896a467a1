"""The web page (Gradio) over hawk_jax.demo.session.Demo.

`Callbacks` holds the page's event handlers as plain methods (the tests call them directly):
each takes the values of its input components and returns (or, streaming, yields) the values
of its output components in the order of the `*_OUTPUTS` names below; `gr.skip()` leaves a
component as it is; the generation settings come last, in the order of SETTINGS. Bad input
never raises out of a handler: its DemoError message is shown in the status line, in red.
`build(demo)` lays the page out and wires the handlers; every handler that touches the model
shares one queue slot (`concurrency_id`), so one browser's describe never runs beside another's
chat turn.
"""
from __future__ import annotations

import html
from typing import Any, Iterator

import gradio as gr

from hawk_jax.demo.session import CHAT_STRATEGIES, Clip, Demo, DemoError
from hawk_jax.infer.engine import DEFAULT_QUESTION, STRATEGIES

TITLE = "HAWK: video anomaly understanding"
# Output names, in order, of each handler.
LOAD_OUTPUTS = ("clip", "gallery", "status", "reference", "other_source", "description", "chat")
DESCRIBE_OUTPUTS = ("clip", "gallery", "status", "reference", "description", "chat")
CHAT_OUTPUTS = ("clip", "gallery", "status", "reference", "chat", "message")
RESET_OUTPUTS = ("chat", "status")
SETTINGS = ("strategy", "max_new_tokens", "temperature", "top_p", "num_beams", "seed")

CSS = """
#status p { margin: 0; }
#status .error { color: #b91c1c; font-weight: 600; }
#frames .thumbnail-item { aspect-ratio: 2 / 1.12; }
#frames .grid-wrap { min-height: 160px !important; max-height: 600px; }
"""


def ok(text: str) -> str:
  return f'<span class="ok">{html.escape(text)}</span>'


def error(text: str) -> str:
  return f'<span class="error">⚠ {html.escape(text)}</span>'


class Callbacks:
  """The page's event handlers (see the module docstring)."""

  def __init__(self, demo: Demo):
    self.demo = demo

  def _loaded(self, clip: Clip, reloaded: bool) -> dict[str, Any]:
    """Outputs for a clip: everything about it (and an empty chat) when it was (re)loaded,
    else left as they are."""
    if not reloaded:
      return dict(clip=gr.skip(), gallery=gr.skip(), reference=gr.skip())
    return dict(clip=clip, gallery=self.demo.gallery(clip), chat=[],
                reference=gr.update(value=clip.reference, visible=bool(clip.reference)))

  @staticmethod
  def _emit(names, values: dict[str, Any]) -> tuple:
    return tuple(values.get(n, gr.skip()) for n in names)

  # --- loading ------------------------------------------------------------------------------

  def upload(self, path: str | None, clip: Clip | None) -> tuple:
    """A file was uploaded: decode and encode it; the test pick is cleared."""
    if not path:
      return self._emit(LOAD_OUTPUTS, {})
    return self._load(lambda: self.demo.load(path, None, clip), clip,
                      other_source=gr.update(value=None))

  def pick(self, label: str | None, clip: Clip | None) -> tuple:
    """A test video was picked: decode and encode it; the uploaded file is cleared."""
    if not label:
      return self._emit(LOAD_OUTPUTS, {})
    return self._load(lambda: self.demo.load(None, label, clip), clip,
                      other_source=gr.update(value=None))

  def _load(self, load, old: Clip | None, **extra) -> tuple:
    try:
      clip = load()
    except DemoError as e:
      return self._emit(LOAD_OUTPUTS, dict(clip=None, gallery=None, status=error(str(e)),
                                           reference=gr.update(value="", visible=False),
                                           description="", chat=[], **extra))
    self.demo.reset_chat(clip)  # the chat box is emptied: so is the conversation
    values = self._loaded(clip, clip is not old)
    return self._emit(LOAD_OUTPUTS, dict(values, status=ok(self.demo.summary(clip)),
                                         description="", chat=[], **extra))

  def _current(self, path, label, clip) -> tuple[Clip, dict[str, Any]]:
    """The clip of the page's video (loading it when the state is not that one yet, e.g. a
    describe clicked before the upload's own load finished) and its outputs."""
    current = self.demo.load(path, label, clip)
    return current, self._loaded(current, current is not clip)

  # --- describe -----------------------------------------------------------------------------

  def describe(self, path: str | None, label: str | None, clip: Clip | None, question: str,
               *settings) -> Iterator[tuple]:
    """Streams the description (`describe`'s prompt and answer) into the description box."""
    try:
      options = self.demo.options(*settings)
      clip, values = self._current(path, label, clip)
    except DemoError as e:
      yield self._emit(DESCRIBE_OUTPUTS, dict(status=error(str(e))))
      return
    status = f"{clip.name}: describing ({options.strategy}, up to {options.max_new_tokens} tokens)"
    yield self._emit(DESCRIBE_OUTPUTS, dict(values, status=ok(status + " ..."), description=""))
    text = ""
    try:
      for text in self.demo.describe(clip, question, options):
        yield self._emit(DESCRIBE_OUTPUTS, dict(description=text))
    except DemoError as e:
      yield self._emit(DESCRIBE_OUTPUTS, dict(status=error(str(e))))
      return
    yield self._emit(DESCRIBE_OUTPUTS, dict(status=ok(f"{status}: done"), description=text))

  # --- chat ---------------------------------------------------------------------------------

  def chat(self, message: str, history: list | None, path: str | None, label: str | None,
           clip: Clip | None, *settings) -> Iterator[tuple]:
    """One chat turn: the question joins the chat, the answer streams in after it."""
    history = list(history or [])
    try:
      options = self.demo.options(*settings)
      if options.strategy not in CHAT_STRATEGIES:
        raise DemoError("chat streams its answers: choose greedy or sample, not beam search")
      if not (message or "").strip():
        raise DemoError("type a question first")
      new_clip, values = self._current(path, label, clip)
    except DemoError as e:
      yield self._emit(CHAT_OUTPUTS, dict(status=error(str(e))))
      return
    if new_clip is not clip:
      history = []  # another video: a new conversation
    clip = new_clip
    history += [{"role": "user", "content": message.strip()},
                {"role": "assistant", "content": ""}]
    yield self._emit(CHAT_OUTPUTS, dict(values, status=ok(f"{clip.name}: answering ..."),
                                        chat=history, message=""))
    try:
      for text in self.demo.ask(clip, message, options):
        history[-1] = {"role": "assistant", "content": text}
        yield self._emit(CHAT_OUTPUTS, dict(chat=history))
    except DemoError as e:
      history = history[:-2]
      yield self._emit(CHAT_OUTPUTS, dict(status=error(str(e)), chat=history, message=message))
      return
    turns = len(clip.conversation.history) if clip.conversation else 0
    yield self._emit(CHAT_OUTPUTS, dict(status=ok(f"{clip.name}: {turns} turn(s), "
                                                  f"{clip.conversation.used_slots} cache slots"),
                                        chat=history))

  def reset(self, clip: Clip | None) -> tuple:
    """A new chat about the same video (still encoded)."""
    self.demo.reset_chat(clip)
    return self._emit(RESET_OUTPUTS, dict(chat=[], status=ok("new chat")))


def build(demo: Demo, *, checkpoint: str = "") -> gr.Blocks:
  """The page: the video (upload or test pick), frames and motion, settings, describe, chat."""
  cb = Callbacks(demo)
  d = demo.defaults
  llm = demo.engine.config.llm
  token_limit = max(d.max_new_tokens, min(1024, llm.max_position_embeddings // 2))
  with gr.Blocks(title="HAWK demo", analytics_enabled=False) as page:
    clip = gr.State(None)
    gr.Markdown(f"## {TITLE}\n`{checkpoint}` · {demo.engine.layout.describe()}")
    with gr.Row():
      with gr.Column(scale=2):
        video = gr.Video(label="Video", sources=["upload"], height=320, elem_id="video")
        test_pick = gr.Dropdown(demo.test_labels(), value=None, label=(
            f"... or a {demo.split} video of {demo.data_dir}"), visible=bool(demo.test_videos),
            elem_id="test_pick")
        status = gr.Markdown("upload a video" + (" or pick a test video" if demo.test_videos
                                                 else ""), elem_id="status")
        reference = gr.Markdown(visible=False, elem_id="reference")
        with gr.Accordion("Generation settings", open=False):
          strategy = gr.Radio(list(STRATEGIES), value=d.strategy, label="strategy",
                              info="chat: greedy or sample", elem_id="strategy")
          max_new_tokens = gr.Slider(1, token_limit, value=d.max_new_tokens, step=1,
                                     label="max new tokens", elem_id="max_new_tokens")
          temperature = gr.Slider(0.05, 2.0, value=d.temperature, step=0.05,
                                  label="temperature (sample)", elem_id="temperature")
          top_p = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="top p (sample)",
                            elem_id="top_p")
          num_beams = gr.Slider(2, 8, value=max(2, d.num_beams), step=1, label="beams (beam)",
                                elem_id="num_beams")
          seed = gr.Number(value=d.seed, precision=0, label="seed (sample)", elem_id="seed")
      with gr.Column(scale=3):
        gallery = gr.Gallery(label="Sampled frames | their motion", columns=4,
                             object_fit="contain", allow_preview=True, elem_id="frames")
        with gr.Row():
          question = gr.Textbox(value=DEFAULT_QUESTION, label="Question", scale=4,
                                elem_id="question")
          describe = gr.Button("Describe", variant="primary", scale=1, elem_id="describe")
        description = gr.Textbox(label="Description", lines=3, interactive=False,
                                 elem_id="description")
        chat = gr.Chatbot(label="Chat about the video", height=300, render_markdown=False,
                          feedback_options=None, buttons=["copy", "copy_all"],
                          elem_id="chat")
        with gr.Row():
          message = gr.Textbox(placeholder="Ask about the video and press Enter",
                               show_label=False, scale=4, elem_id="message")
          send = gr.Button("Send", scale=1, elem_id="send")
          reset = gr.Button("New chat", scale=1, elem_id="reset")

    comps = dict(clip=clip, gallery=gallery, status=status, reference=reference,
                 description=description, chat=chat, message=message)
    settings = [strategy, max_new_tokens, temperature, top_p, num_beams, seed]
    # One queue slot for everything that touches the model; the page only (no API endpoints).
    model = dict(concurrency_id="hawk", concurrency_limit=1, api_visibility="private")

    def outputs(names, **extra):
      return [extra[n] if n in extra else comps[n] for n in names]

    video.upload(cb.upload, [video, clip], outputs(LOAD_OUTPUTS, other_source=test_pick),
                 **model)
    test_pick.input(cb.pick, [test_pick, clip], outputs(LOAD_OUTPUTS, other_source=video),
                    **model)
    for trigger in (describe.click, question.submit):
      trigger(cb.describe, [video, test_pick, clip, question, *settings],
              outputs(DESCRIBE_OUTPUTS), **model)
    for trigger in (send.click, message.submit):
      trigger(cb.chat, [message, chat, video, test_pick, clip, *settings],
              outputs(CHAT_OUTPUTS), **model)
    for trigger in (reset.click, chat.clear):   # the chat's own bin button too
      trigger(cb.reset, [clip], outputs(RESET_OUTPUTS), **model)
  return page


def launch(page: gr.Blocks, host: str, port: int, *, block: bool = True):
  """Serves the page (no share link, no analytics, no server-side rendering)."""
  page.queue(default_concurrency_limit=1)
  return page.launch(server_name=host, server_port=port, share=False, ssr_mode=False,
                     show_error=False, quiet=True, prevent_thread_lock=not block,
                     footer_links=[], css=CSS, theme=gr.themes.Default())
