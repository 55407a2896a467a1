"""Scores predictions the paper's way: BLEU-1..4 and the GPT-guided judge, per task (DESIGN.md §8).

  python -m hawk_jax.evaluate --predictions preds.jsonl --out eval_dir \
      [--judge_model gpt-4o] [--no_judge]
  python -m hawk_jax.evaluate --checkpoint runs/stage2 --data_dir data/hawk --out eval_dir \
      [--max_items N] [--batch_size B] [--no_judge]     # generate the predictions first

Each line of the predictions file is
`{"task": "description"|"qa", "video": ..., "question": ..., "reference": ..., "prediction": ...}`.
Description and QA are scored separately. The judge runs when OPENAI_BASE_URL is set or
--judge_model is given (OPENAI_API_KEY is sent when set), unless --no_judge. Writes
report.json and report.md into --out (and the judge's answer cache, so a rerun asks only what is
missing) and prints the Markdown table.

`evaluate_predictions(records, out_dir, judge=...)` is the entry point for callers that make the
predictions themselves (a route that generates them from a checkpoint first plugs in there).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Mapping, Sequence

from hawk_jax import metrics
from hawk_jax.eval import report as report_lib
from hawk_jax.eval.judge import TASKS, Judge, JudgeConfig, JudgeSetupError
from hawk_jax.infer import predict as predict_lib

# Our choice when --judge_model is not given; the paper names no judge model version.
DEFAULT_JUDGE_MODEL = "gpt-4o"
_BLEU_NOTE = ("corpus BLEU as pycocoevalcap's Bleu(4) computes it, on text lower-cased and "
              "PTB-style tokenised with the COCO punctuation removed (hawk_jax.metrics."
              "coco_tokenize); the NLTK row is nltk corpus_bleu without smoothing on the same "
              "tokens.")


def check_record(record, where: str) -> dict:
  """A validated copy of one prediction record; `where` names it in errors (file:line)."""
  if not isinstance(record, Mapping):
    raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
  task = record.get("task")
  if task not in TASKS:
    raise ValueError(f"{where}: key 'task' is {task!r}; expected one of {list(TASKS)}")
  out = {"task": task}
  for key in ("reference", "prediction", "question", "video"):
    value = record.get(key, "")
    if value is None:
      value = ""
    if not isinstance(value, str):
      raise ValueError(f"{where}: key {key!r} must be a string, got {type(value).__name__}: "
                       f"{value!r}")
    out[key] = value
  if "prediction" not in record:
    raise ValueError(f"{where}: key 'prediction' is missing")
  if not out["reference"].strip():
    raise ValueError(f"{where}: key 'reference' is missing or empty")
  if task == "qa" and not out["question"].strip():
    raise ValueError(f"{where}: a 'qa' record needs a non-empty 'question'")
  return out


def load_predictions(path: str) -> list[dict]:
  """The records of a predictions JSON-lines file, checked line by line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such predictions file")
  records = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError as e:
        raise ValueError(f"{path}:{line_no}: not valid JSON ({e})") from None
      records.append(check_record(record, f"{path}:{line_no}"))
  if not records:
    raise ValueError(f"{path}: no predictions in the file")
  return records


def _task_report(records: Sequence[dict], judge: Judge | None) -> dict:
  references = [r["reference"] for r in records]
  predictions = [r["prediction"] for r in records]
  task_report = {"items": len(records), "bleu": metrics.bleu(references, predictions),
                 "bleu_nltk": None, "judge": None, "judge_failures": []}
  if metrics.nltk_available():
    task_report["bleu_nltk"] = metrics.bleu_nltk(references, predictions)
  if judge is not None:
    result = judge.score(records)
    task_report["judge"] = result.summary()
    task_report["judge_failures"] = [
        {"item": f.item, "video": f.video, "dimension": f.dimension, "attempts": f.attempts,
         "reason": f.reason} for f in result.failures]
    task_report["judge_requests"] = result.requests
    task_report["judge_cache_hits"] = result.cache_hits
  return task_report


def evaluate_predictions(records: Iterable[Mapping[str, str]], out_dir: str,
                         judge: Judge | None = None,
                         judge_skipped: str = "no judge given") -> dict:
  """Scores the records per task, writes report.json and report.md into out_dir.

  Args:
    records: {"task", "reference", "prediction"[, "question", "video"]} mappings.
    out_dir: where the report goes.
    judge: the GPT-guided judge, or None to skip it.
    judge_skipped: why there is no judge, for the report.

  Returns:
    The report dict (what report.json holds).
  """
  checked = [check_record(r, f"record {i}") for i, r in enumerate(records)]
  if not checked:
    raise ValueError("no prediction records to evaluate")
  tasks = {}
  for task in TASKS:
    task_records = [r for r in checked if r["task"] == task]
    tasks[task] = _task_report(task_records, judge) if task_records else {"items": 0}
  if judge is None:
    judge_info = {"skipped": judge_skipped}
  else:
    judge_info = {"model": judge.config.model, "base_url": judge.config.base_url,
                  "cache": judge.config.cache_path}
  report = {"tasks": tasks, "paper_hawk": report_lib.PAPER_HAWK, "judge": judge_info,
            "bleu_note": _BLEU_NOTE}
  report_lib.write_report(report, out_dir)
  return report


def _parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m hawk_jax.evaluate", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
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
  return args


def make_judge(args) -> tuple[Judge | None, str]:
  """(judge or None, why there is none) from the flags and the environment."""
  if args.no_judge:
    return None, "--no_judge"
  if not os.environ.get("OPENAI_BASE_URL") and not args.judge_model:
    return None, "OPENAI_BASE_URL is not set and no --judge_model was given"
  config = JudgeConfig.from_env(
      model=args.judge_model or DEFAULT_JUDGE_MODEL,
      cache_path=args.judge_cache or os.path.join(args.out, "judge_cache.jsonl"),
      workers=args.judge_workers, timeout_s=args.judge_timeout,
      max_attempts=args.judge_attempts)
  return Judge(config), ""


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  try:
    judge, skipped = make_judge(args)  # first: a bad judge setup fails before generation
    if args.checkpoint:  # generate from a trained workdir (writes OUT/predictions.jsonl)
      records = predict_lib.predictions_from_checkpoint(args)
    else:
      records = load_predictions(args.predictions)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if judge is None:
    print(f"GPT-guided judge skipped: {skipped}.", file=sys.stderr)
  try:
    report = evaluate_predictions(records, args.out, judge=judge, judge_skipped=skipped)
  except JudgeSetupError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report_lib.report_markdown(report), end="")
  print(f"wrote {os.path.join(args.out, 'report.json')} and "
        f"{os.path.join(args.out, 'report.md')}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
