"""Summary of a local_cpu.sh run: loss at the start and end of each stage, the test scores,
and where everything was written.

  python -m hawk_jax.train.run_summary WORKDIR [--seconds N]
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from etils import epath

from hawk_jax import console


def _read_json(path):
  """The JSON file at `path` (local or gs://), or None if there is none."""
  path = epath.Path(path)
  if not path.exists():
    return None
  return json.loads(path.read_text(encoding="utf-8"))


def summarize(workdir: str) -> str:
  lines = [f"HAWK CPU run in {workdir}"]
  lm = _read_json(os.path.join(workdir, "towers", "result.json"))
  if lm is not None:
    lines.append(f"  LLM language pretraining: loss {lm['first_loss']:.4f} -> {lm['last_loss']:.4f}"
                 f" over {lm['steps']} steps ({lm['sequences']} sequences)")
  for stage in ("stage1", "stage2"):
    r = _read_json(os.path.join(workdir, stage, "result.json"))
    if r is None:
      lines.append(f"  {stage}: not run")
      continue
    first, last = r.get("first_loss"), r.get("last_loss")
    def fmt(x):
      return "n/a" if x is None else f"{x:.4f}"
    resumed = f" (resumed from step {r['resumed_from']})" if r.get("resumed_from") else ""
    lines.append(f"  {stage}: steps={r['steps']} loss {fmt(first)} -> {fmt(last)} (first/last 5"
                 f" steps)"
                 f" eval_loss={fmt(r.get('eval_loss'))}{resumed}")
    lines.append(f"          checkpoints: {os.path.join(workdir, stage, 'checkpoints')}")
    lines.append(f"          tensorboard: {os.path.join(workdir, stage, 'tensorboard')}")
  rep = _read_json(os.path.join(workdir, "stage3", "report.json"))
  if rep is None:
    lines.append("  stage3: not run")
  else:
    for task in ("description", "qa"):
      t = (rep.get("tasks") or {}).get(task) or {}
      b = t.get("bleu") or {}
      if b:
        lines.append(f"  stage3 {task}: items={t.get('items', '?')} BLEU-1..4 = "
                     + " ".join(f"{b.get(f'bleu_{i}', 0):.3f}" for i in range(1, 5)))
    lines.append(f"          report: {os.path.join(workdir, 'stage3', 'report.md')}")
    charts = sorted(p for p in os.listdir(os.path.join(workdir, "stage3")) if p.endswith(".png"))
    if charts:
      paths = ", ".join(os.path.join(workdir, "stage3", c) for c in charts)
      lines.append(f"          charts: {paths}")
    lines.append(f"          predictions: {os.path.join(workdir, 'stage3', 'predictions.jsonl')}")
  loc = _read_json(os.path.join(workdir, "timeline", "localization.json"))
  if loc is None:
    lines.append("  timeline: not run")
  else:
    def num(x):
      return "nan" if x is None else f"{x:.4f}"
    lines.append(f"  timeline: {loc['videos']} long videos ({loc['abnormal_videos']} with "
                 f"anomalies), frame-level ROC-AUC {num(loc['auc'])}, AP {num(loc['ap'])}, "
                 f"abnormal-only AUC {num(loc['auc_abnormal'])} (chance: AUC 0.5)")
    folder = os.path.join(workdir, "timeline")
    pngs = sorted(os.path.join(folder, d, "timeline.png") for d in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, d, "timeline.png")))
    if pngs:
      lines.append(f"          pictures: {', '.join(pngs)}")
    lines.append(f"          timelines: {os.path.join(folder, 'timelines.jsonl')}")
  pictures = os.path.join(workdir, "pictures")
  if os.path.isdir(pictures):
    for name in sorted(os.listdir(pictures)):
      lines.append(f"  picture: {os.path.join(pictures, name)} (frames and motion, "
                   f"python -m data_pipelines.show)")
  lines.append(f"  data: {os.path.join(workdir, 'data')}  "
               f"raw videos: {os.path.join(workdir, 'raw')}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  p = console.parser("python -m hawk_jax.train.run_summary", __doc__)
  p.add_argument("workdir", help="the CPU main job's folder (launch/local_cpu.sh DIR)")
  p.add_argument("--seconds", type=int, default=None, help="the job's wall time, to print")
  a = p.parse_args(argv)
  console.setup_logging(a.log_level)
  print(summarize(a.workdir))
  if a.seconds is not None:
    print(f"  total time: {a.seconds // 60} min {a.seconds % 60} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
