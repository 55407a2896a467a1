"""One entry point for every evaluation, chosen by --task, so that a user finds the text scores
and the frame-level anomaly localization under one command:

  python -m hawk_jax.evaluate --predictions preds.jsonl --out eval_dir      # --task generation
  python -m hawk_jax.evaluate --task localization --scores timeline.jsonl \
      --annotations Temporal_Anomaly_Annotation.txt --format ucf [--out DIR] [--threshold 0.5]

--task generation (the default) is `python -m hawk_jax.eval`: BLEU-1..4 and the GPT-guided
judge on description/QA predictions (hawk_jax/eval/cli.py). --task localization is frame-level
ROC-AUC / AP of per-frame anomaly scores against UCF-Crime or XD-Violence temporal annotations
(hawk_jax/eval/localization.py). Every other flag goes to the task: `--task TASK --help` lists a
task's flags.
"""
from __future__ import annotations

import sys
from typing import Sequence

from hawk_jax import console
from hawk_jax.eval import cli as generation_cli
from hawk_jax.eval import localization

PROG = "python -m hawk_jax.evaluate"
TASKS = {"generation": generation_cli.main, "localization": localization.main}
DEFAULT_TASK = "generation"


def _parser():
  parser = console.parser(PROG, __doc__, log_level="WARNING")
  parser.add_argument("--task", choices=list(TASKS), default=DEFAULT_TASK,
                      help="what to evaluate; every other flag goes to the task (see "
                           "--task TASK --help)")
  return parser


def split_task(argv: Sequence[str]) -> tuple[str | None, list[str]]:
  """(the --task value or None, the other arguments in order); `--task X` and `--task=X` both
  count, the last one wins. A --task without a value or with an unknown one exits 2 with
  argparse's usage and error lines."""
  task, rest = None, []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == "--task":
      if i + 1 == len(args):
        _parser().error("argument --task: expected one argument")
      task, i = args[i + 1], i + 2
      continue
    if arg.startswith("--task="):
      task = arg.split("=", 1)[1]
    else:
      rest.append(arg)
    i += 1
  if task is not None and task not in TASKS:
    _parser().error(f"argument --task: invalid choice: {task!r} (choose from "
                    f"{', '.join(repr(t) for t in TASKS)})")
  return task, rest


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  task, rest = split_task(argv)
  if task is None and any(a in ("-h", "--help") for a in rest):
    _parser().parse_args(["--help"])  # this command's help (exits 0); a task's: --task T --help
  return TASKS[task or DEFAULT_TASK](rest)


if __name__ == "__main__":
  sys.exit(main())
