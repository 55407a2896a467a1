"""Bar charts of an evaluation report, drawn with OpenCV and numpy (no plotting library).

`bleu.png`: BLEU-1..4 per task, ours beside the paper's HAWK row; `judge.png` (when the judge
ran): Reasonability / Detail / Consistency per task, likewise. hawk_jax/eval/report.py writes
them beside report.md and links them from it.

The geometry is fixed and known, so a chart can be read back: the y axis runs from 0 at a bar's
`base` row to `ymax` at `PLOT_H` pixels above it, and a bar of value v is a solid rectangle of
its series' colour, round(v / ymax * PLOT_H) pixels tall (`Chart.bars` says where each is). A
missing value (a task without predictions, a judge that did not run) has no bar and is marked
"n/a".
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import cv2
import numpy as np

from hawk_jax.eval.judge import DIMENSIONS, TASKS

BLEU_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
BLEU_TITLES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
JUDGE_TITLES = tuple(d.capitalize() for d in DIMENSIONS)
TASK_SHORT = {"description": "(A) description", "qa": "(B) question answering"}
BLEU_CHART, JUDGE_CHART = "bleu.png", "judge.png"

SERIES = ("Ours", "HAWK (paper)")
COLORS = ((31, 119, 180), (255, 127, 14))  # RGB: blue, orange

# Geometry, in pixels.
PLOT_H = 240        # the y axis from 0 to ymax
BAR_W = 30
BAR_GAP = 2         # between the bars of one group
GROUP_GAP = 26      # between groups
AXIS_W = 46         # tick labels left of a panel
PANEL_GAP = 30
TOP = 64            # title and legend
BOTTOM = 52         # group labels and panel title
MARGIN = 14

BACKGROUND = (255, 255, 255)
INK = (25, 25, 25)
GRID = (225, 225, 225)
FAINT = (120, 120, 120)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclasses.dataclass(frozen=True)
class Panel:
  """One panel: `groups` along the x axis, `values[series][group]` (None: no value)."""
  title: str
  groups: Sequence[str]
  values: Sequence[Sequence[float | None]]


@dataclasses.dataclass(frozen=True)
class Bar:
  panel: int
  group: int
  series: int
  value: float | None
  x0: int      # first column of the bar
  x1: int      # one past its last column
  base: int    # the row of value 0 (the bar's pixels are rows base - height .. base - 1)
  height: int  # pixels; 0 for a missing value


@dataclasses.dataclass
class Chart:
  image: np.ndarray  # RGB uint8 [H, W, 3]
  bars: list[Bar]
  ymax: float

  def png(self) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR))
    if not ok:
      raise ValueError("OpenCV could not encode the chart as PNG")
    return buf.tobytes()


def nice_ymax(values: Sequence[float]) -> float:
  """The top of the y axis: a round number a little above the largest value (1 if none)."""
  top = max([v for v in values if v is not None and math.isfinite(v)] + [0.0])
  if top <= 0:
    return 1.0
  step = 10 ** math.floor(math.log10(top / 4))
  for mult in (1, 2, 2.5, 5, 10):
    if top / (mult * step) <= 4:
      step *= mult
      break
  return round(math.ceil(top * 1.08 / step - 1e-9) * step, 10)


def _ticks(ymax: float) -> list[float]:
  step = 10 ** math.floor(math.log10(ymax / 2))
  for mult in (1, 2, 2.5, 5, 10):
    if ymax / (mult * step) <= 5:
      step *= mult
      break
  n = int(math.floor(ymax / step + 1e-9))
  return [round(i * step, 10) for i in range(n + 1)]


def _put(img, text, x, baseline, scale=0.4, color=INK, thickness=1):
  text = text.encode("ascii", "replace").decode("ascii")
  cv2.putText(img, text, (int(x), int(baseline)), FONT, scale, color, thickness, cv2.LINE_AA)


def _width(text, scale=0.4, thickness=1):
  return cv2.getTextSize(text, FONT, scale, thickness)[0][0]


def _centered(img, text, cx, baseline, scale=0.4, color=INK, thickness=1):
  _put(img, text, cx - _width(text, scale, thickness) / 2, baseline, scale, color, thickness)


def _value_text(v: float) -> str:
  return f"{v:.3f}".lstrip("0") if 0 <= v < 1 else f"{v:.2f}"


def bar_height(value: float | None, ymax: float) -> int:
  """Pixels of a bar of `value` on an axis topped at `ymax` (clipped to the plot)."""
  if value is None or not math.isfinite(value) or value <= 0:
    return 0
  return min(PLOT_H, int(round(value / ymax * PLOT_H)))


def grouped_bars(title: str, panels: Sequence[Panel], series: Sequence[str] = SERIES,
                 colors: Sequence[tuple[int, int, int]] = COLORS,
                 ymax: float | None = None) -> Chart:
  """Panels of grouped bars side by side on one y scale (`ymax`, else nice_ymax of all)."""
  if ymax is None:
    ymax = nice_ymax([v for p in panels for row in p.values for v in row])
  n_series = len(series)
  group_w = n_series * BAR_W + (n_series - 1) * BAR_GAP
  panel_ws = [len(p.groups) * group_w + (len(p.groups) + 1) * GROUP_GAP for p in panels]
  width = 2 * MARGIN + sum(AXIS_W + w for w in panel_ws) + PANEL_GAP * (len(panels) - 1)
  legend_w = sum(24 + _width(s) + 18 for s in series)
  width = max(width, 2 * MARGIN + _width(title, 0.55, 1) + 24 + legend_w)
  height = TOP + PLOT_H + BOTTOM
  img = np.full((height, width, 3), BACKGROUND, np.uint8)
  base = TOP + PLOT_H  # the row just below the plot: value 0
  _put(img, title, MARGIN, 24, 0.55, INK, 1)
  x = width - MARGIN - legend_w
  for name, color in zip(series, colors):
    cv2.rectangle(img, (x, 36), (x + 15, 47), color, -1)
    _put(img, name, x + 21, 46)
    x += 24 + _width(name) + 18
  bars = []
  x_panel = MARGIN
  for p_index, (panel, panel_w) in enumerate(zip(panels, panel_ws)):
    x_plot = x_panel + AXIS_W
    for tick in _ticks(ymax):
      y = base - int(round(tick / ymax * PLOT_H))  # the top row of a bar of this value
      if tick:
        cv2.line(img, (x_plot, y), (x_plot + panel_w - 1, y), GRID, 1)
      label = f"{tick:g}"
      _put(img, label, x_plot - 6 - _width(label, 0.35), y + 4, 0.35, FAINT)
    cv2.line(img, (x_plot, base), (x_plot + panel_w - 1, base), FAINT, 1)  # the 0 line
    cv2.line(img, (x_plot - 1, TOP - 4), (x_plot - 1, base), FAINT, 1)
    for g, group in enumerate(panel.groups):
      gx = x_plot + GROUP_GAP + g * (group_w + GROUP_GAP)
      _centered(img, group, gx + group_w / 2, base + 17, 0.4)
      for s in range(n_series):
        value = panel.values[s][g] if s < len(panel.values) else None
        x0 = gx + s * (BAR_W + BAR_GAP)
        h = bar_height(value, ymax)
        if value is None:
          _centered(img, "n/a", x0 + BAR_W / 2, base - 5, 0.35, FAINT)
        else:
          if h:
            img[base - h:base, x0:x0 + BAR_W] = colors[s]
          _centered(img, _value_text(value), x0 + BAR_W / 2, base - h - 5, 0.33, INK)
        bars.append(Bar(p_index, g, s, value, x0, x0 + BAR_W, base, h))
    _centered(img, panel.title, x_plot + panel_w / 2, base + 40, 0.45, INK)
    x_panel = x_plot + panel_w + PANEL_GAP
  return Chart(img, bars, float(ymax))


def _task_values(task_report: Mapping | None, keys: Sequence[str], judge: bool):
  if not task_report or not task_report.get("items"):
    return [None] * len(keys)
  if judge:
    scores = task_report.get("judge") or {}
    return [(scores.get(k) or {}).get("mean") for k in keys]
  bleu = task_report.get("bleu") or {}
  return [bleu.get(k) for k in keys]


def bleu_chart(report: Mapping, paper: Mapping[str, Mapping[str, float]]) -> Chart:
  """BLEU-1..4 per task: ours (report["tasks"]) beside the paper's HAWK row (`paper`)."""
  panels = [Panel(TASK_SHORT[t], BLEU_TITLES,
                  [_task_values(report["tasks"].get(t), BLEU_KEYS, judge=False),
                   [paper[t].get(k) for k in BLEU_KEYS]]) for t in TASKS]
  return grouped_bars("BLEU: ours vs. the paper's HAWK (Table 1)", panels)


def judge_chart(report: Mapping, paper: Mapping[str, Mapping[str, float]]) -> Chart:
  """The GPT judge's Reasonability / Detail / Consistency per task, ours beside the paper's."""
  panels = [Panel(TASK_SHORT[t], JUDGE_TITLES,
                  [_task_values(report["tasks"].get(t), DIMENSIONS, judge=True),
                   [paper[t].get(k) for k in DIMENSIONS]]) for t in TASKS]
  model = (report.get("judge") or {}).get("model")
  title = "GPT-guided judge" + (f" ({model})" if model else "") + ": ours vs. the paper's HAWK"
  values = [v for p in panels for row in p.values for v in row if v is not None]
  return grouped_bars(title, panels, ymax=1.0 if max(values, default=0) <= 1 else None)


def judge_ran(report: Mapping) -> bool:
  return any((t or {}).get("judge") for t in (report.get("tasks") or {}).values())


def chart_names(report: Mapping) -> list[str]:
  """The chart files a report gets: bleu.png always, judge.png when the judge ran."""
  return [BLEU_CHART] + ([JUDGE_CHART] if judge_ran(report) else [])


def report_charts(report: Mapping, paper: Mapping[str, Mapping[str, float]]) -> dict[str, Chart]:
  """{file name: chart} for chart_names(report)."""
  make = {BLEU_CHART: bleu_chart, JUDGE_CHART: judge_chart}
  return {name: make[name](report, paper) for name in chart_names(report)}
