"""Scores predictions the paper's way: BLEU-1..4 and the GPT-guided judge, per task, into
report.json and report.md. The command line is hawk_jax/eval/cli.py (`python -m hawk_jax.eval`).

A prediction record is
`{"task": "description"|"qa", "video": ..., "question": ..., "reference": ..., "prediction": ...}`;
description and QA are scored separately. `evaluate_predictions(records, out_dir, judge=...)`
is the entry point for callers that make the predictions themselves (a route that generates
them from a checkpoint first plugs in there). Files are read and written through etils.epath,
so predictions and reports may live on gs://.
"""
from __future__ import annotations

import json
from typing import Iterable, Mapping, Sequence

from etils import epath

from hawk_jax.eval import bleu as bleu_lib
from hawk_jax.eval import report as report_lib
from hawk_jax.eval.judge import TASKS, Judge

_BLEU_NOTE = ("corpus BLEU as pycocoevalcap's Bleu(4) computes it, on text lower-cased and "
              "PTB-style tokenised with the COCO punctuation removed (hawk_jax.eval.bleu."
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


def read_predictions(path) -> tuple[list[dict], list[str]]:
  """(records, bad lines) of a predictions JSON-lines file (local or gs://): every good line's
  checked record, and one `FILE:LINE: why` for each line that is not one (not UTF-8, not JSON,
  not a prediction record). Blank lines are neither. A missing file is FileNotFoundError."""
  p = epath.Path(path)
  if not p.is_file():
    raise FileNotFoundError(f"{path}: no such predictions file")
  records, bad = [], []
  for line_no, raw in enumerate(p.read_bytes().splitlines(), 1):
    where = f"{path}:{line_no}"
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      bad.append(f"{where}: not UTF-8 text (byte {e.start})")
      continue
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      bad.append(f"{where}: not valid JSON ({e})")
      continue
    try:
      records.append(check_record(record, where))
    except ValueError as e:
      bad.append(str(e))
  return records, bad


def load_predictions(path) -> list[dict]:
  """The records of a predictions JSON-lines file (local or gs://), every line checked; a bad
  line is a ValueError naming it (FILE:LINE), an empty file one naming the file.
  `read_predictions` keeps the good lines instead."""
  records, bad = read_predictions(path)
  if bad:
    raise ValueError(bad[0] + (f" (and {len(bad) - 1} more bad line(s))" if len(bad) > 1
                               else ""))
  if not records:
    raise ValueError(f"{path}: no predictions in the file")
  return records


def _task_report(records: Sequence[dict], judge: Judge | None) -> dict:
  references = [r["reference"] for r in records]
  predictions = [r["prediction"] for r in records]
  task_report = {"items": len(records), "bleu": bleu_lib.bleu(references, predictions),
                 "bleu_nltk": None, "judge": None, "judge_failures": []}
  if bleu_lib.nltk_available():
    task_report["bleu_nltk"] = bleu_lib.bleu_nltk(references, predictions)
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
                         judge_skipped: str = "no judge given",
                         skipped_lines: Sequence[str] = ()) -> dict:
  """Scores the records per task, writes report.json and report.md into out_dir.

  Args:
    records: {"task", "reference", "prediction"[, "question", "video"]} mappings.
    out_dir: where the report goes.
    judge: the GPT-guided judge, or None to skip it.
    judge_skipped: why there is no judge, for the report.
    skipped_lines: the `FILE:LINE: why` of predictions that could not be read
      (`read_predictions`), listed in the report as not scored.

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
            "bleu_note": _BLEU_NOTE, "skipped_lines": list(skipped_lines)}
  write_report(report, out_dir)
  return report


def write_report(report: dict, out_dir) -> tuple[epath.Path, epath.Path]:
  """report.json, report.md and its charts in `out_dir` (local or gs://); returns the paths of
  the first two (hawk_jax/eval/report.py writes them)."""
  json_path, md_path = report_lib.write_report(report, out_dir)
  return epath.Path(json_path), epath.Path(md_path)
