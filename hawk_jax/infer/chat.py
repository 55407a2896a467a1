"""Chat about a video with a trained HAWK, on stdin/stdout.

  python -m hawk_jax.infer.chat --checkpoint runs/stage2 clip.mp4
  printf 'What happens?\\nWho?\\n' | python -m hawk_jax.infer.chat --checkpoint runs/stage2 clip.mp4

Each input line is a question; the answer is streamed to stdout as its tokens are decoded, then
a newline. `/reset` starts a new conversation about the same video, `/quit` or end of input
ends. The video is encoded once and given to the model once, in the first message; the
conversation lives in the LLM's KV cache, so later turns add only their own tokens
(hawk_jax.infer.conversation). The system prompt is the released demo's unless --system is
given (--system " " gives the training layout, whose first answer equals `describe`'s).
Bad input is one `error: PATH: what is wrong` line on stderr and exit status 2, before the
weights are read (as in describe).

--layout places the weights (hawk_jax/infer/serving_layout.py; default auto). With
--distributed every process of a pod runs this same command (the model is sharded over all of
them): process 0 reads stdin and sends each line to the others, every process takes the same
turn, and process 0 alone prints.
"""
from __future__ import annotations

import io
import sys
import time
from typing import Sequence, TextIO

import jax
import numpy as np
from jax.experimental import multihost_utils

from hawk_jax import console, distributed
from hawk_jax.infer import cli_flags
from hawk_jax.infer.conversation import ContextFull, Conversation
from hawk_jax.text import prompts


def _parse_args(argv):
  parser = console.parser("python -m hawk_jax.infer.chat", __doc__, log_level="WARNING")
  parser.add_argument("video", metavar="VIDEO", help="video file")
  parser.add_argument("--system", default=None,
                      help="system prompt (default: the released demo's)")
  parser.add_argument("--max_context", type=int, default=None,
                      help="KV-cache slots for the whole conversation (default: the LLM's "
                           "max_position_embeddings)")
  cli_flags.add_model_args(parser)
  cli_flags.add_generation_args(parser, strategies=("greedy", "sample"))
  return parser.parse_args(argv)


class SharedInput:
  """Process 0's input, line by line, on every process (two broadcasts a line): in a pod only
  one process has the user's terminal, and every process must take the same turns."""

  def __init__(self, stream: TextIO):
    self.stream = stream
    self.main = distributed.is_main_process()

  def isatty(self) -> bool:
    return self.main and self.stream.isatty()

  def readline(self) -> str:
    if jax.process_count() == 1:
      return self.stream.readline()
    line = self.stream.readline().encode("utf-8") if self.main else b""
    size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(line), np.int64)))
    data = np.zeros((size,), np.uint8)
    if self.main:
      data[:] = np.frombuffer(line, np.uint8)
    data = multihost_utils.broadcast_one_to_all(data) if size else data
    return bytes(np.asarray(data, np.uint8)).decode("utf-8")


def run(conversation, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
  """The read-answer loop; returns the number of answered questions."""
  interactive = stdin.isatty()
  answered = 0
  while True:
    if interactive:
      stderr.write("you> ")
      stderr.flush()
    line = stdin.readline()
    if not line:
      break
    question = line.strip()
    if not question:
      continue
    if question == "/quit":
      break
    if question == "/reset":
      conversation.reset()
      stderr.write("[conversation reset]\n")
      continue
    try:
      for delta in conversation.ask(question):
        stdout.write(delta)
        stdout.flush()
    except ContextFull as e:
      stderr.write(f"[{e}]\n")
      continue
    stdout.write("\n")
    stdout.flush()
    answered += 1
  return answered


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  console.setup_logging(args.log_level)
  cli_flags.start(args)  # --distributed: before anything touches a device
  t0 = time.perf_counter()
  try:
    # Bad input fails in a moment, before the weights are read (as in describe).
    cfg = cli_flags.check_checkpoint(args)
    if cli_flags.generation_options(cfg, args).strategy == "beam":  # the config may say beam
      raise ValueError("chat streams its answers: pass --strategy greedy or sample")
    [video] = cli_flags.read_videos(cfg, [args.video])
    engine, options = cli_flags.load_engine(args)
    system = prompts.DEMO_SYSTEM_PROMPT if args.system is None else args.system
  except cli_flags.USER_ERRORS as e:
    return cli_flags.fail(e)
  main_process = distributed.is_main_process()
  out = sys.stdout if main_process else io.StringIO()
  err = sys.stderr if main_process else io.StringIO()
  # The conversation's own calls (prefill, turns, token choice) run inside the layout's mesh
  # too, so the arrays they create are global.
  with engine.layout.activate():
    conversation = Conversation(engine, video, system=system, options=options,
                                max_context=args.max_context)
    print(f"[ready in {time.perf_counter() - t0:.1f}s: {args.video} encoded; "
          f"{engine.layout.describe()}; ask away, /reset, /quit]", file=err)
    run(conversation, SharedInput(sys.stdin), out, err)
  return 0


if __name__ == "__main__":
  sys.exit(main())
