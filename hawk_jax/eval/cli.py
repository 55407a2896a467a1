"""Score predictions (or generate them from a checkpoint first), BLEU-1..4 and the judge.

  python -m hawk_jax.eval --predictions preds.jsonl --out eval_dir \
      [--judge_model gpt-4o] [--no_judge]
  python -m hawk_jax.eval --checkpoint runs/stage2 --data_dir data/hawk --out eval_dir \
      [--max_items N] [--batch_size B] [--no_judge]     # generate the predictions first

Each line of the predictions file is
`{"task": "description"|"qa", "video": ..., "question": ..., "reference": ..., "prediction": ...}`.
Description and QA are scored separately. The judge runs when OPENAI_BASE_URL is set or
--judge_model is given (OPENAI_API_KEY is sent when set), unless --no_judge. Writes
report.json and report.md into --out (and the judge's answer cache, so a rerun asks only what is
missing) and prints the Markdown table. --out may be a gs:// path.

A predictions line that cannot be read (not UTF-8, not JSON, not such a record) is named on
stderr as `error: FILE:LINE: why`; every good line is still scored, the bad ones are listed in
the report, and the exit status is 2. Other bad input (a missing file, a --checkpoint that is not
a workdir, a --step it lacks or that is damaged, a missing --data_dir or split) is one
`error: ...` line and exit status 2, before any weight is read where it can be.

With --checkpoint, --layout places the weights (hawk_jax/infer/serving_layout.py; default
auto). Under a pod, `--distributed` (every process runs the same command) shares the test items
among the processes, whose generation runs on one model sharded over all of them
(hawk_jax/infer/predict.py); process 0 alone writes predictions.jsonl, scores them, asks the
judge and writes the report, which equal a one-process run's.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from etils import epath

from hawk_jax import console, distributed
from hawk_jax.eval import report as report_lib
from hawk_jax.eval.evaluate import evaluate_predictions, read_predictions
from hawk_jax.eval.judge import Judge, JudgeConfig, JudgeSetupError
from hawk_jax.infer import cli_flags
from hawk_jax.infer import predict as predict_lib

# Our choice when --judge_model is not given; the paper names no judge model version.
DEFAULT_JUDGE_MODEL = "gpt-4o"
# The --checkpoint route's flags whose default is None (so giving one can be told).
_CHECKPOINT_ONLY = ("step", "data_dir", "max_items", "tokenizer", "max_new_tokens", "strategy",
                    "temperature", "top_p", "num_beams")


def _parse_args(argv):
  parser = console.parser("python -m hawk_jax.eval", __doc__, log_level="WARNING")
  parser.add_argument("--brief", action="store_true",
                      help="print one line per task instead of report.md's tables")
  parser.add_argument("--predictions", default=None,
                      help="predictions JSON-lines file (or generate them: --checkpoint)")
  parser.add_argument("--out", required=True, help="output directory for the report")
  parser.add_argument("--judge_model", default=None,
                      help=f"judge model name (default {DEFAULT_JUDGE_MODEL}); giving it turns "
                           "the judge on even without OPENAI_BASE_URL (then api.openai.com)")
  parser.add_argument("--no_judge", action="store_true", help="BLEU only")
  parser.add_argument("--judge_cache", default=None,
                      help="judge answer cache (JSON lines); default OUT/judge_cache.jsonl")
  parser.add_argument("--judge_workers", type=int, default=8, help="concurrent judge requests")
  parser.add_argument("--judge_timeout", type=float, default=60., help="seconds per request")
  parser.add_argument("--judge_attempts", type=int, default=5,
                      help="attempts per request before the item counts as failed")
  # The --checkpoint route: --checkpoint DIR --data_dir DIR [--max_items N] [--batch_size B].
  predict_lib.add_predict_args(parser)
  args = parser.parse_args(argv)
  if (args.predictions is None) == (args.checkpoint is None):
    parser.error("give either --predictions FILE or --checkpoint DIR --data_dir DIR")
  if args.predictions is not None:  # flags that would be ignored are refused, not dropped
    given = [f"--{k}" for k in _CHECKPOINT_ONLY if getattr(args, k) is not None]
    if given:
      parser.error(f"{', '.join(given)} only apply with --checkpoint; --predictions scores "
                   "the file as it is")
  return args


def make_judge(args) -> tuple[Judge | None, str]:
  """(judge or None, why there is none) from the flags and the environment."""
  if args.no_judge:
    return None, "--no_judge"
  if not os.environ.get("OPENAI_BASE_URL") and not args.judge_model:
    return None, "OPENAI_BASE_URL is not set and no --judge_model was given"
  config = JudgeConfig.from_env(
      model=args.judge_model or DEFAULT_JUDGE_MODEL,
      cache_path=args.judge_cache or str(epath.Path(args.out) / "judge_cache.jsonl"),
      workers=args.judge_workers, timeout_s=args.judge_timeout,
      max_attempts=args.judge_attempts)
  return Judge(config), ""


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  console.setup_logging(args.log_level)
  cli_flags.start(args)  # --distributed: before anything touches a device
  bad_lines: list[str] = []
  try:
    judge, skipped = make_judge(args)  # first: a bad judge setup fails before generation
    if args.checkpoint:  # generate from a trained workdir (writes OUT/predictions.jsonl)
      records = predict_lib.predictions_from_checkpoint(args)
    else:
      # Every good line is scored; each bad one is named (FILE:LINE: why) here and in the
      # report, and makes the exit status 2.
      records, bad_lines = read_predictions(args.predictions)
      _print_bad_lines(bad_lines)
      if not records:
        raise ValueError(f"{args.predictions}: no prediction to score"
                         + (f" (all {len(bad_lines)} non-blank line(s) are bad)" if bad_lines
                            else " (the file is empty or blank)"))
  except cli_flags.USER_ERRORS as e:
    return cli_flags.fail(e)
  if args.distributed and not distributed.is_main_process():
    return 0  # process 0 scores, asks the judge and writes the report
  if judge is None:
    print(f"GPT-guided judge skipped: {skipped}.", file=sys.stderr)
  try:
    report = evaluate_predictions(records, args.out, judge=judge, judge_skipped=skipped,
                                  skipped_lines=bad_lines)
  except (JudgeSetupError, OSError) as e:  # no judge there; the report cannot be written
    return cli_flags.fail(e)
  if not args.brief:
    print(report_lib.report_markdown(report), end="")
  else:  # one line per task; the tables are in report.md
    for task, t in sorted((report.get("tasks") or {}).items()):
      b = t.get("bleu") or {}
      if b:
        print(f"{task}: {t.get('items', '?')} items, BLEU-1..4 "
              + " ".join(f"{b.get(f'bleu_{i}', 0):.3f}" for i in range(1, 5)))
  out = epath.Path(args.out)
  print(f"wrote {out / 'report.json'} and {out / 'report.md'} (tables and charts)",
        file=sys.stderr)
  if bad_lines:
    print(f"error: {len(bad_lines)} bad line(s) of {args.predictions} not scored (listed "
          f"above and in the report); {len(records)} prediction(s) scored", file=sys.stderr)
    return 2
  return 0


# Bad lines printed one by one; the rest are counted (all of them are in the report).
_MAX_PRINTED_BAD_LINES = 20


def _print_bad_lines(bad_lines) -> None:
  for line in bad_lines[:_MAX_PRINTED_BAD_LINES]:
    print(f"error: {cli_flags.one_line(line)}", file=sys.stderr)
  if len(bad_lines) > _MAX_PRINTED_BAD_LINES:
    print(f"error: ... and {len(bad_lines) - _MAX_PRINTED_BAD_LINES} more bad line(s)",
          file=sys.stderr)


if __name__ == "__main__":
  sys.exit(main())
