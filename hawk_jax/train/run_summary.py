"""Summary of a local_cpu.sh run: loss at the start and end of each stage, the test scores,
and where everything was written.

  python -m hawk_jax.train.run_summary WORKDIR [--seconds N]
"""
from __future__ import annotations

import argparse
import json
import os

from etils import epath


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
    lines.append(f"          predictions: {os.path.join(workdir, 'stage3', 'predictions.jsonl')}")
  lines.append(f"  data: {os.path.join(workdir, 'data')}  "
               f"raw videos: {os.path.join(workdir, 'raw')}")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("workdir")
  p.add_argument("--seconds", type=int, default=None)
  a = p.parse_args()
  print(summarize(a.workdir))
  if a.seconds is not None:
    print(f"  total time: {a.seconds // 60} min {a.seconds % 60} s")


if __name__ == "__main__":
  main()
