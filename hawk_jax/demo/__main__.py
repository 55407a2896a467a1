"""The HAWK web demo: upload a video (or pick one of a dataset's test split), see its sampled
frames and motion, get a streamed description and chat about it.

  python -m hawk_jax.demo --checkpoint runs/stage2
  python -m hawk_jax.demo --checkpoint runs/stage2 --step 800 --port 7861 --data_dir data/hawk

Then open http://127.0.0.1:7860 (--host and --port choose where it is served; --data_dir
offers the test videos of a pre-extracted dataset). The description is
`python -m hawk_jax.infer.describe`'s (the same prompt; greedy gives the same text) and the chat
`python -m hawk_jax.infer.chat`'s; the video is encoded once, whatever follows. Generation
settings (greedy, sampling, beam search, max tokens) are on the page; their defaults are the run
config's `generate` section.

Needs gradio (`pip install -e '.[demo]'`): without it, one line on stderr and exit status 2.
Bad input on the command line (a --checkpoint that is not a workdir, a --step it lacks, a
--data_dir without the split, a port in use) is one `error: ...` line and exit status 2, before
any weight is read where it can be; bad input on the page (no video, an undecodable one,
settings out of range) is a message on the page.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Sequence

from hawk_jax import console
from hawk_jax.demo.session import Demo
from hawk_jax.infer import cli_flags
from hawk_jax.infer.engine import Engine
from hawk_jax.infer.predict import open_split
from hawk_jax.workdir import DTYPE_CHOICES

NEEDS_GRADIO = "the demo needs gradio: pip install -e '.[demo]'"


def _parse_args(argv):
  parser = console.parser("python -m hawk_jax.demo", __doc__)
  parser.add_argument("--checkpoint", required=True,
                      help="a trained stage-2 workdir (config.json, frozen/, checkpoints/)")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step to load (default: the latest finished one)")
  parser.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (0.0.0.0: every interface of this machine)")
  parser.add_argument("--port", type=int, default=7860, help="port to serve on")
  parser.add_argument("--data_dir", default=None,
                      help="a pre-extracted dataset whose test videos can be picked on the page")
  parser.add_argument("--split", default="test", help="the --data_dir split to offer")
  parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                      help="weights/compute dtype (as describe's --dtype; auto = float32 on CPU)")
  parser.add_argument("--tokenizer", default=None,
                      help="LLaMA tokenizer.model (default: the run config's tokenizer_path)")
  parser.add_argument("--max_context", type=int, default=None,
                      help="KV-cache slots of a chat (default: the LLM's max_position_embeddings)")
  return parser.parse_args(argv)


def check_port(host: str, port: int) -> None:
  """Raises OSError naming HOST:PORT when it cannot be served on (taken, or not an address of
  this machine): before the weights are read rather than after."""
  if not 0 <= port <= 65535:
    raise ValueError(f"--port {port}: expected 0..65535")
  try:
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
      s.bind(address)
  except OSError as e:
    raise OSError(f"{host}:{port}: cannot serve there ({e.strerror or e}); pass another "
                  "--port or --host") from None


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  try:
    import gradio  # noqa: F401
  except ImportError:
    print(NEEDS_GRADIO, file=sys.stderr)
    return 2
  console.setup_logging(args.log_level)
  from hawk_jax.demo import app as app_lib  # imports gradio

  t0 = time.perf_counter()
  try:
    # Bad input fails in a moment, before the weights are read (as describe and chat do).
    cfg = cli_flags.check_checkpoint(args)
    cli_flags.generation_options(cfg, argparse.Namespace(
        **{k: None for k in cli_flags.GENERATION_FLAGS}))
    if args.data_dir:
      open_split(args.data_dir, args.split)
    check_port(args.host, args.port)
    engine = Engine.from_workdir(args.checkpoint, args.step, dtype=args.dtype,
                                 tokenizer_path=args.tokenizer)
    demo = Demo(engine, data_dir=args.data_dir, split=args.split, max_context=args.max_context)
    page = app_lib.build(demo, checkpoint=args.checkpoint)
    app_lib.launch(page, args.host, args.port, block=False)
  except cli_flags.USER_ERRORS as e:  # OSError: the port is taken
    return cli_flags.fail(e)
  url = f"http://{args.host}:{page.server_port}"
  print(f"[HAWK demo of {args.checkpoint} at {url} (ready in {time.perf_counter() - t0:.1f}s; "
        f"{engine.layout.describe()}); Ctrl+C stops it]", file=sys.stderr, flush=True)
  page.block_thread()
  return 0


if __name__ == "__main__":
  sys.exit(main())
