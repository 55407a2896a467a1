"""The report's charts: bleu.png and judge.png beside report.md, linked from it, with bars as
tall as the numbers say (measured on the decoded PNG)."""
import cv2
import numpy as np
import pytest

from hawk_jax.eval import charts, report


def _judge(means):
  return {dim: {"mean": m, "scored": 3 if m is not None else 0, "failed": 0}
          for dim, m in zip(("reasonability", "detail", "consistency"), means)}


def fake_report(judge=True, qa=True, bleu_1=0.412):
  tasks = {"description": {"items": 5, "bleu": {"bleu_1": bleu_1, "bleu_2": 0.21,
                                                "bleu_3": 0.105, "bleu_4": 0.05}},
           "qa": {"items": 4, "bleu": {"bleu_1": 0.5, "bleu_2": 0.3, "bleu_3": 0.2,
                                       "bleu_4": 0.125}} if qa else {"items": 0}}
  if judge:
    tasks["description"]["judge"] = _judge([0.4, 0.25, None])  # consistency: all failed
    if qa:
      tasks["qa"]["judge"] = _judge([0.9, 0.75, 0.6])
  return {"tasks": tasks, "judge": {"model": "stub-judge"} if judge else {"skipped": "--no_judge"},
          "bleu_note": "x", "skipped_lines": []}


def _read_rgb(path):
  bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
  assert bgr is not None, f"{path} does not decode"
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _measured(image, bar):
  """Height of the bar's colour run in its middle column, within the plot, from the pixels."""
  color = np.array(charts.COLORS[bar.series], np.uint8)
  column = image[bar.base - charts.PLOT_H:bar.base, (bar.x0 + bar.x1) // 2]
  hits = np.flatnonzero((column == color).all(axis=-1))
  if hits.size == 0:
    return 0
  assert hits[-1] == charts.PLOT_H - 1 and np.all(np.diff(hits) == 1)  # solid, from the axis up
  return hits.size


def _check_bars(image, chart):
  assert chart.bars
  for bar in chart.bars:
    want = 0 if bar.value is None else int(round(bar.value / chart.ymax * charts.PLOT_H))
    assert _measured(image, bar) == want == bar.height, bar
    # The bar is solid across its width.
    if want:
      block = image[bar.base - want:bar.base, bar.x0:bar.x1]
      assert (block == np.array(charts.COLORS[bar.series], np.uint8)).all()


def test_write_report_draws_and_links_both_charts(tmp_path):
  rep = fake_report()
  report.write_report(rep, str(tmp_path))
  md = (tmp_path / "report.md").read_text()
  assert "](bleu.png)" in md and "](judge.png)" in md
  assert md == report.report_markdown(rep)
  for name, make in (("bleu.png", charts.bleu_chart), ("judge.png", charts.judge_chart)):
    image = _read_rgb(tmp_path / name)
    chart = make(rep, report.PAPER_HAWK)
    np.testing.assert_array_equal(image, chart.image)
    _check_bars(image, chart)


def test_bleu_bars_are_the_numbers(tmp_path):
  rep = fake_report()
  report.write_report(rep, str(tmp_path))
  image = _read_rgb(tmp_path / "bleu.png")
  chart = charts.bleu_chart(rep, report.PAPER_HAWK)
  assert chart.ymax == pytest.approx(0.6)  # 0.5 is the largest value: axis 0 .. 0.6
  got = {(b.panel, b.group, b.series): _measured(image, b) for b in chart.bars}
  # Ours, description, BLEU-1 = 0.412; the paper's = 0.270; QA BLEU-1 = 0.5 (of 0.6).
  assert got[(0, 0, 0)] == round(0.412 / 0.6 * charts.PLOT_H) == 165
  assert got[(0, 0, 1)] == round(0.270 / 0.6 * charts.PLOT_H) == 108
  assert got[(1, 0, 0)] == round(0.5 / 0.6 * charts.PLOT_H) == 200
  assert len(chart.bars) == 2 * 4 * 2  # tasks x BLEU-n x (ours, paper)


def test_judge_chart_scale_and_missing_values(tmp_path):
  rep = fake_report()
  report.write_report(rep, str(tmp_path))
  image = _read_rgb(tmp_path / "judge.png")
  chart = charts.judge_chart(rep, report.PAPER_HAWK)
  assert chart.ymax == 1.0
  by_key = {(b.panel, b.group, b.series): b for b in chart.bars}
  assert _measured(image, by_key[(1, 0, 0)]) == round(0.9 * charts.PLOT_H)  # qa reasonability
  assert _measured(image, by_key[(1, 0, 1)]) == round(0.840 * charts.PLOT_H)  # the paper's
  missing = by_key[(0, 2, 0)]  # description consistency: every item failed -> no bar
  assert missing.value is None and _measured(image, missing) == 0


def test_no_judge_no_judge_chart_and_an_empty_task(tmp_path):
  rep = fake_report(judge=False, qa=False)
  report.write_report(rep, str(tmp_path))
  md = (tmp_path / "report.md").read_text()
  assert "](bleu.png)" in md and "judge.png" not in md
  assert not (tmp_path / "judge.png").exists()
  image = _read_rgb(tmp_path / "bleu.png")
  chart = charts.bleu_chart(rep, report.PAPER_HAWK)
  _check_bars(image, chart)
  qa_ours = [b for b in chart.bars if b.panel == 1 and b.series == 0]
  assert qa_ours and all(b.value is None and b.height == 0 for b in qa_ours)
  qa_paper = [b for b in chart.bars if b.panel == 1 and b.series == 1]
  assert all(_measured(image, b) > 0 for b in qa_paper)


def test_other_numbers_draw_another_chart():
  a = charts.bleu_chart(fake_report(bleu_1=0.412), report.PAPER_HAWK)
  b = charts.bleu_chart(fake_report(bleu_1=0.3), report.PAPER_HAWK)
  assert a.image.shape == b.image.shape and not np.array_equal(a.image, b.image)
  assert a.bars[0].height != b.bars[0].height


def test_markdown_without_charts():
  md = report.report_markdown(fake_report(), charts=False)
  assert "## Charts" not in md and ".png" not in md


@pytest.mark.parametrize("values,ymax", [([0.043], 0.06), ([0.27], 0.3), ([0.84], 1.0),
                                         ([0.5, 0.125], 0.6), ([None, 0.0], 1.0), ([3.7], 4.0)])
def test_nice_ymax(values, ymax):
  assert charts.nice_ymax(values) == pytest.approx(ymax)
  assert charts.nice_ymax(values) >= max([v or 0 for v in values])
