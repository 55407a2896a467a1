"""timeline.png: the anomaly score over time, intervals shaded, a thumbnail strip below.

Top panel: the per-frame score (line), each window's score (dots at the window's middle), the
threshold (dashed), the found intervals (red shading) and, when given, the annotated ground
truth (a green bar under the curve). Bottom panel: thumbnails at their times, on the same time
axis. matplotlib with the Agg backend: no display needed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def draw_timeline(timeline: dict, thumbnails: Sequence[tuple[int, np.ndarray]], out_path: str,
                  truth: Sequence[tuple[float, float]] = ()) -> str:
  """Writes the picture of `timeline` (a timeline.json object) to `out_path` (PNG)."""
  import matplotlib
  matplotlib.use("Agg")
  from etils import epath
  from matplotlib import pyplot as plt

  fps = float(timeline["fps"])
  scores = np.asarray(timeline["frame_scores"], np.float32)
  t = np.arange(scores.size) / fps
  duration = scores.size / fps
  has_thumbs = len(thumbnails) > 0
  fig, axes = plt.subplots(2 if has_thumbs else 1, 1, figsize=(11, 4.2 if has_thumbs else 3),
                           sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": [3, 1.2] if has_thumbs else [1]})
  ax = axes[0, 0]
  for iv in timeline["intervals"]:
    ax.axvspan(iv["start_s"], iv["end_s"], color="tab:red", alpha=0.18, lw=0)
  for start, end in truth:
    ax.plot([start, end], [-0.06, -0.06], color="tab:green", lw=5, solid_capstyle="butt")
  ax.plot(t, scores, color="tab:blue", lw=1.6, label="frame score")
  mids = [(w["start_s"] + w["end_s"]) / 2 for w in timeline["windows"]]
  ax.scatter(mids, [w["score"] for w in timeline["windows"]], s=9, color="tab:blue", alpha=0.5,
             label="window score")
  ax.axhline(timeline["threshold"], color="grey", ls="--", lw=1, label="threshold")
  handles, labels = ax.get_legend_handles_labels()
  if timeline["intervals"]:
    handles.append(matplotlib.patches.Patch(color="tab:red", alpha=0.18))
    labels.append("found interval")
  if truth:
    handles.append(matplotlib.lines.Line2D([], [], color="tab:green", lw=5))
    labels.append("annotated anomaly")
  ax.legend(handles, labels, loc="upper right", fontsize=8, ncol=len(labels))
  ax.set_ylim(-0.1, 1.12)
  ax.set_xlim(0, duration)
  ax.set_ylabel("P(yes) / (P(yes)+P(no))")
  name = epath.Path(timeline["video"]).name
  ax.set_title(f"{name}: {len(timeline['windows'])} windows of {timeline['window_s']:g} s "
               f"every {timeline['stride_s']:g} s, {len(timeline['intervals'])} interval(s)",
               fontsize=10)
  if has_thumbs:
    strip = axes[1, 0]
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    width = duration / max(len(thumbnails), 1)
    for index, rgb in thumbnails:
      start = index / fps
      strip.imshow(rgb, extent=(start, start + width * 0.95, 0, 1), aspect="auto")
    strip.set_xlim(0, duration)
  axes[-1, 0].set_xlabel("time (s)")
  fig.tight_layout()
  out = epath.Path(out_path)
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.open("wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)
  return str(out)
