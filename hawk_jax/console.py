"""What every command line prints, and how: one logging setup, one --help style.

  parser = console.parser("python -m hawk_jax.train", __doc__)   # defaults shown, examples kept
  console.add_log_level(parser)                                   # --log_level
  args = parser.parse_args(argv)
  console.setup_logging(args.log_level)

Logging: the project's loggers (hawk_jax.*, data_pipelines.*) at the level asked for (INFO by
default); the libraries' (Orbax and TFDS through absl, Grain, JAX, TensorFlow, etc.) at WARNING,
less a few warnings that are part of normal operation and say nothing to a user (TFDS's "custom
data configuration" and "no dataset_info.json" on every dataset a run reads); at DEBUG
everything shows. Log lines go through tqdm, so a progress bar is not broken by them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PROJECT_LOGGERS = ("hawk_jax", "data_pipelines")
# Libraries whose INFO lines are per-file or per-step internals.
LIBRARY_LOGGERS = ("absl", "orbax", "jax", "jax._src", "tensorflow", "tensorflow_datasets",
                   "grain", "etils", "urllib3", "google", "gcsfs", "fsspec", "matplotlib",
                   "PIL", "httpx", "tensorboardX", "apache_beam")
# Warnings libraries print on every normal run (matched against the start of the message).
_ROUTINE_WARNINGS = (
    "Using custom data configuration",           # TFDS, on every builder config we make
    "Variant folder",                            # TFDS: "... has no dataset_info.json"
    "No dataset_info.json",
    "Waiting for previous save to complete",     # Orbax, when saves are frequent (tiny runs)
    "NaN or Inf found in input tensor",          # tensorboardX; the loop reports skipped steps
)


class _RoutineFilter(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith(_ROUTINE_WARNINGS)


class _TqdmHandler(logging.StreamHandler):
  """Writes through tqdm.write when tqdm is importable, so an active bar is redrawn below the
  line instead of being split by it."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      from tqdm import tqdm
    except ImportError:
      super().emit(record)
      return
    try:
      tqdm.write(self.format(record), file=self.stream)
      self.flush()
    except Exception:  # noqa: BLE001 -- logging must never raise
      self.handleError(record)


def setup_logging(level: str = "INFO") -> None:
  """Root logging for a command line (see the module docstring)."""
  level = level.upper()
  if level not in LEVELS:
    raise ValueError(f"log level {level!r}: expected one of {LEVELS}")
  handler = _TqdmHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(levelname).1s %(asctime)s %(name)s: %(message)s",
                                         datefmt="%H:%M:%S"))
  if level != "DEBUG":
    handler.addFilter(_RoutineFilter())
  logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
  for name in PROJECT_LOGGERS:
    logging.getLogger(name).setLevel(level)
  for name in LIBRARY_LOGGERS:
    logging.getLogger(name).setLevel("DEBUG" if level == "DEBUG" else "WARNING")
  with contextlib.suppress(ImportError):  # absl's own handler would print a second copy
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.DEBUG if level == "DEBUG" else absl_logging.WARNING)
    absl_logging.use_python_logging(quiet=True)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
  """--help with every flag's default shown and the description's examples kept as written."""


def parser(prog: str, doc: str | None, log_level: str = "INFO",
           **kwargs) -> argparse.ArgumentParser:
  """An ArgumentParser in the project's style: `doc` (the module docstring: what the command
  does, then examples) as the description, defaults shown, --log_level added (default
  `log_level`: WARNING for commands that print their own progress, like describe)."""
  p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=HelpFormatter,
                              **kwargs)
  add_log_level(p, log_level)
  return p


def add_log_level(p: argparse.ArgumentParser, default: str = "INFO") -> None:
  p.add_argument("--log_level", default=default, choices=LEVELS, type=str.upper,
                 help="the project's log level; libraries log warnings only, DEBUG shows all "
                      "(default: %(default)s)")


def require(module: str, extra: str, what: str) -> None:
  """Exit with one line naming the extra to install when an optional dependency is missing."""
  if importlib.util.find_spec(module) is None:
    print(f"error: {what} needs {module}: pip install -e '.[{extra}]' (or pip install "
          f"'hawk-jax[{extra}]')", file=sys.stderr)
    raise SystemExit(2)
