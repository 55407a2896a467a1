"""The evaluation report: JSON and Markdown laid out as the paper's Table 1 (docs/model.md,
"Evaluation").

One table per task ((A) description, (B) QA), columns BLEU-1..4 and the GPT-guided
Reasonability / Detail / Consistency, rows for our model (and NLTK's BLEU beside ours) and the
paper's HAWK row. Judge failures are shown under each table, because a mean over the scored
items says nothing about the items that were not scored; prediction lines that could not be
read are listed at the end, for the same reason.

Beside report.md, `write_report` draws `bleu.png` (BLEU-1..4 per task, ours beside the paper's
HAWK row) and, when the judge ran, `judge.png` (Reasonability / Detail / Consistency); the
Markdown links them (hawk_jax/eval/charts.py).
"""
from __future__ import annotations

import json

from etils import epath

from hawk_jax.eval import charts as charts_lib
from hawk_jax.eval.judge import DIMENSIONS, PROMPT_NOTE, TASKS

BLEU_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
COLUMNS = BLEU_KEYS + DIMENSIONS
COLUMN_TITLES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "Reasonability", "Detail",
                 "Consistency")
TASK_TITLES = {"description": "(A) Anomaly video description generation",
               "qa": "(B) Anomaly video question-answering"}

# Paper Table 1, the HAWK row.
PAPER_HAWK = {
    "description": {"bleu_1": .270, "bleu_2": .139, "bleu_3": .074, "bleu_4": .043,
                    "reasonability": .283, "detail": .320, "consistency": .218},
    "qa": {"bleu_1": .319, "bleu_2": .179, "bleu_3": .112, "bleu_4": .073,
           "reasonability": .840, "detail": .794, "consistency": .753},
}


def _cell(value) -> str:
  return "–" if value is None else f"{value:.3f}"


def _row(name: str, values: dict) -> str:
  return "| " + " | ".join([name] + [_cell(values.get(c)) for c in COLUMNS]) + " |"


def _ours(task_report: dict) -> dict:
  values = dict(task_report.get("bleu") or {})
  for dim, stats in (task_report.get("judge") or {}).items():
    values[dim] = stats["mean"]
  return values


def _judge_line(task_report: dict, judge_info: dict) -> str:
  judge = task_report.get("judge")
  if judge is None:
    return f"Judge: not run ({judge_info.get('skipped', 'no judge')})."
  counts = ", ".join(f"{dim} {stats['failed']}/{stats['scored'] + stats['failed']}"
                     for dim, stats in judge.items())
  return (f"Judge `{judge_info.get('model', '?')}`: failed (unscored) items — {counts}. "
          f"Means are over the scored items only. {PROMPT_NOTE}")


CHART_CAPTIONS = {
    charts_lib.BLEU_CHART: "BLEU-1..4 per task, ours and the paper's HAWK row",
    charts_lib.JUDGE_CHART: "GPT-guided Reasonability / Detail / Consistency per task, ours "
                            "and the paper's HAWK row",
}


def report_markdown(report: dict, charts: bool = True) -> str:
  """The report as Markdown tables in the paper's Table 1 layout; with `charts`, followed by
  links to the chart images write_report puts beside it (charts.chart_names: bleu.png, and
  judge.png when the judge ran)."""
  judge_info = report.get("judge") or {}
  lines = ["# HAWK evaluation", ""]
  for task in TASKS:
    task_report = report["tasks"].get(task) or {}
    items = task_report.get("items", 0)
    lines += [f"## {TASK_TITLES[task]} — {items} item{'s' if items != 1 else ''}", "",
              "| Method | " + " | ".join(COLUMN_TITLES) + " |",
              "|" + "---|" * (len(COLUMNS) + 1)]
    if items:
      lines.append(_row("Ours", _ours(task_report)))
      if task_report.get("bleu_nltk"):
        lines.append(_row("Ours, NLTK BLEU", task_report["bleu_nltk"]))
    lines.append(_row("HAWK (paper)", PAPER_HAWK[task]))
    lines.append("")
    if not items:
      lines += ["No predictions for this task.", ""]
      continue
    lines += [_judge_line(task_report, judge_info), ""]
    failures = task_report.get("judge_failures") or []
    if failures:
      lines += ["| Item | Video | Dimension | Attempts | Reason |", "|---|---|---|---|---|"]
      for f in failures:
        reason = f["reason"].replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| {f['item']} | {f['video'] or '–'} | {f['dimension']} | {f['attempts']} "
                     f"| {reason} |")
      lines.append("")
  skipped = report.get("skipped_lines") or []
  if skipped:
    lines += [f"## Not scored — {len(skipped)} bad prediction line"
              f"{'s' if len(skipped) != 1 else ''}", ""]
    lines += [f"- {line.replace(chr(10), ' ')[:300]}" for line in skipped] + [""]
  if charts:
    lines += ["## Charts", ""]
    for name in charts_lib.chart_names(report):
      lines += [f"![{CHART_CAPTIONS[name]}]({name})", ""]
  lines.append(f"BLEU: {report.get('bleu_note', '')}")
  return "\n".join(lines).rstrip() + "\n"


def write_charts(report: dict, out_dir: str) -> list[str]:
  """Draws the report's charts (bleu.png, and judge.png when the judge ran) into out_dir
  (local or gs://); returns their paths."""
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, chart in charts_lib.report_charts(report, PAPER_HAWK).items():
    (out / name).write_bytes(chart.png())
    paths.append(str(out / name))
  return paths


def write_report(report: dict, out_dir: str) -> tuple[str, str]:
  """Writes report.json, report.md and the charts it links into out_dir (local or gs://);
  returns the paths of report.json and report.md."""
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  json_path, md_path = out / "report.json", out / "report.md"
  json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
  write_charts(report, out_dir)
  md_path.write_text(report_markdown(report), encoding="utf-8")
  return str(json_path), str(md_path)
