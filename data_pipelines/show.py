"""Look at what the model is given: the sampled frames of a video and their motion, as a contact
sheet (PNG/JPEG) or an animation (GIF).

  python -m data_pipelines.show clip.mp4 --out clip.png
  python -m data_pipelines.show clip.mp4 --out clip.gif --num_frames 8 --size 224 --motion flow_soft
  python -m data_pipelines.show --data_dir data/hawk --split train --index 3 --out rec.png
  python -m data_pipelines.show --data_dir data/hawk --split test --video Videos/x/y.mp4 --out r.png

A video file is decoded, sampled and given motion exactly as pre-extraction does
(data_pipelines.clip_cache.ExtractOptions -> data_pipelines.motion.extract; the flags below have
extraction's defaults). A pre-extracted record (--data_dir, with --index N or --video NAME) is
decoded as the loaders decode it (data_pipelines.records.decode_record): its frames are the
stored JPEGs, and its motion what was extracted.

The contact sheet has a title (the input, motion mode, number of frames, frame size, frame rate;
a record's description or caption) and, per sampled frame, the frame with its motion below it,
labelled `#<source frame index> <timestamp>s`; rows wrap after --columns frames. The motion row
shows the weights as a heat map (--motion_view heat: black = no motion, yellow = full weight)
or the motion frames the model sees (--motion_view frames: frame x weight). Frames are drawn at
--tile pixels (by default the frame size, or the smallest whole multiple of it of at least
112 px: nearest-neighbour, so each source pixel is a block of equal pixels). A .gif shows one
sampled frame per animation frame, the frame and its motion side by side.

Bad input (a missing, empty or undecodable video, a data_dir without a dataset, a split, index or
video it lacks, an unknown --out format) is one `error: ...` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Sequence

import cv2
import numpy as np

from data_pipelines import clip_cache, records
from data_pipelines import motion as motion_lib
from data_pipelines import video as video_lib
from hawk_jax import console

SHEET_SUFFIXES = (".png", ".jpg", ".jpeg")
GIF_SUFFIX = ".gif"
MOTION_VIEWS = ("heat", "frames")
# Extraction's defaults (data_pipelines.extract / clip_cache.ExtractOptions).
_DEFAULTS = clip_cache.ExtractOptions()
VIDEO_FLAGS = {"num_frames": _DEFAULTS.num_frames, "size": _DEFAULTS.size,
               "motion": _DEFAULTS.motion_mode, "sampling": _DEFAULTS.sampling,
               "short_policy": _DEFAULTS.short_policy, "seed": _DEFAULTS.seed}

# Layout of the sheet, in pixels.
MARGIN = 8          # around everything
GUTTER = 56         # left column naming the two rows
LABEL_H = 16        # strip above each frame tile: source index and timestamp
INNER_GAP = 2       # between a frame tile and its motion tile
COL_GAP = 6         # between columns
ROW_GAP = 10        # between wrapped rows
TITLE_LINE_H = 18   # one title line
MIN_AUTO_TILE = 112

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
FAINT = (110, 110, 110)
FONT = cv2.FONT_HERSHEY_SIMPLEX
TITLE_SCALE = 0.45
LABEL_SCALE = 0.4


class ShowError(ValueError):
  """Bad input; the message says what and where."""


# ------------------------------------------------------------------------------- inputs


def load_video(path: str, num_frames: int, size: int, motion: str, sampling: str = "uniform",
               short_policy: str = "repeat", seed: int = 0) -> dict[str, Any]:
  """Frames and motion of a video file, computed as pre-extraction computes them (the same
  ExtractOptions and per-video seed as clip_cache.extract_visual, without the JPEG/PNG
  encoding). Returns motion.extract's dict plus `title` (lines for the sheet)."""
  options = clip_cache.ExtractOptions(num_frames=num_frames, size=size, motion_mode=motion,
                                      sampling=sampling, seed=seed, short_policy=short_policy)
  clip = motion_lib.extract(path, num_frames=options.num_frames, size=options.size,
                            mode=options.motion_mode, sampling=options.sampling,
                            seed=options.video_seed(str(path)),
                            short_policy=options.short_policy,
                            interpolation=options.interpolation)
  clip["title"] = [str(path), *_facts(clip, extra=[f"sampling {sampling}"])]
  return clip


def load_record(data_dir: str, split: str = "train", index: int | None = None,
                video: str | None = None) -> dict[str, Any]:
  """One record of a pre-extracted split, decoded as the loaders decode it: by position
  (`index`) or by its `video` field (`video`: the exact relative path, or a unique path suffix
  or file name). Returns records.decode_record's dict plus `title`."""
  try:
    source = records.open_split(data_dir, split)
  except KeyError as e:  # KeyError's str() quotes its message
    raise ShowError(e.args[0] if e.args else str(e)) from None
  n = len(source)
  if video is not None:
    index = _find_video(source, video, data_dir, split)
  elif index is None:
    index = 0
  if not 0 <= index < n:
    raise ShowError(f"{data_dir}: split {split!r} has {n} records; --index {index} is out of "
                    f"range (0..{n - 1})")
  rec = records.decode_record(source[index])
  rec["title"] = [f"{data_dir}  {split}[{index}]  {rec['video']}", *_facts(rec)]
  text = rec["description"] or rec["caption"]
  if text:
    rec["title"].append(" ".join(text.split()).replace(" | ", " / "))
  return rec


def _find_video(source, name: str, data_dir: str, split: str) -> int:
  names = [_text(source[i].get("video", "")) for i in range(len(source))]
  exact = [i for i, v in enumerate(names) if v == name]
  if exact:
    return exact[0]
  tail = name.lstrip("/")
  near = [i for i, v in enumerate(names) if v.endswith("/" + tail) or os.path.basename(v) == tail]
  if len(near) == 1:
    return near[0]
  if len(near) > 1:
    raise ShowError(f"{data_dir}: --video {name!r} matches {len(near)} records of split "
                    f"{split!r} ({', '.join(names[i] for i in near[:4])}, ...); give more of "
                    "the path")
  examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
  raise ShowError(f"{data_dir}: no record of split {split!r} has video {name!r} "
                  f"({len(names)} records: {examples})")


def _text(value) -> str:
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  return bytes(value).decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _facts(clip: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
  frames = clip["frames"]
  h, w = frames.shape[1:3]
  parts = [f"motion {clip.get('motion_mode') or '?'}", f"{len(frames)} frames",
           f"{w}x{h} px"]
  if clip.get("fps"):
    parts.append(f"{float(clip['fps']):.2f} fps")
  if clip.get("num_source_frames"):
    parts.append(f"{int(clip['num_source_frames'])} source frames")
  return [" | ".join(parts + list(extra))]


# ------------------------------------------------------------------------------- drawing


def auto_tile(size: int) -> int:
  """The default tile: the frame size, or its smallest whole multiple of at least 112 px."""
  return size * max(1, math.ceil(MIN_AUTO_TILE / size))


def resize_tile(image: np.ndarray, tile: int) -> np.ndarray:
  """A frame (or heat map) at tile x tile px: nearest-neighbour when enlarging (whole
  multiples repeat each pixel exactly), area averaging when shrinking."""
  h, w = image.shape[:2]
  if (h, w) == (tile, tile):
    return image
  mode = cv2.INTER_AREA if tile < min(h, w) else cv2.INTER_NEAREST
  return cv2.resize(image, (tile, tile), interpolation=mode)


def heat_map(weights: np.ndarray) -> np.ndarray:
  """uint8 [H, W] motion weights -> RGB [H, W, 3] (INFERNO: 0 black, 255 light yellow)."""
  return cv2.cvtColor(cv2.applyColorMap(weights, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def motion_tiles(clip: dict[str, Any], view: str) -> np.ndarray:
  """What the motion row shows for each frame: RGB [T, H, W, 3]."""
  if view == "heat":
    return np.stack([heat_map(w) for w in clip["weights"]])
  if view == "frames":
    return clip["motion"]
  raise ShowError(f"unknown --motion_view {view!r}; expected one of {MOTION_VIEWS}")


def _ascii(text: str) -> str:
  return text.encode("ascii", "replace").decode("ascii")  # Hershey fonts draw ASCII only


def _text_width(text: str, scale: float) -> int:
  return cv2.getTextSize(_ascii(text), FONT, scale, 1)[0][0]


def _put(img: np.ndarray, text: str, x: int, baseline: int, scale: float, color=INK) -> None:
  cv2.putText(img, _ascii(text), (int(x), int(baseline)), FONT, scale, color, 1, cv2.LINE_AA)


def _fit(text: str, width: int, scale: float) -> str:
  """`text`, shortened in the middle with '...' until it fits `width` px."""
  if _text_width(text, scale) <= width:
    return text
  keep = len(text)
  while keep > 4:
    keep -= 1
    head = (keep + 1) // 2
    short = text[:head] + "..." + text[len(text) - (keep - head):]
    if _text_width(short, scale) <= width:
      return short
  return text[:4]


def wrap_title(lines: Sequence[str], width: int, scale: float = TITLE_SCALE) -> list[str]:
  """Title lines fitted to `width` px: ' | '-separated facts wrap onto more lines; a single
  part that is still too long (a long path) is shortened in the middle."""
  out = []
  for line in lines:
    current = ""
    for part in line.split(" | "):
      candidate = part if not current else f"{current} | {part}"
      if current and _text_width(candidate, scale) > width:
        out.append(current)
        current = part
      else:
        current = candidate
    out.append(current)
  return [_fit(line, width, scale) for line in out]


def frame_label(clip: dict[str, Any], k: int) -> str:
  return f"#{int(clip['indices'][k])}  {float(clip['timestamps'][k]):.2f}s"


class SheetLayout:
  """Where everything goes on a contact sheet of `num_frames` tiles of `tile` px in rows of
  `columns`, under `title_lines` lines of title."""

  def __init__(self, num_frames: int, tile: int, columns: int, title_lines: int):
    self.num_frames, self.tile = num_frames, tile
    self.columns = max(1, min(columns, num_frames))
    self.rows = math.ceil(num_frames / self.columns)
    self.title_h = MARGIN + title_lines * TITLE_LINE_H + 4
    self.block_h = LABEL_H + 2 * tile + INNER_GAP
    self.width = 2 * MARGIN + GUTTER + self.columns * tile + (self.columns - 1) * COL_GAP
    self.height = (self.title_h + self.rows * self.block_h + (self.rows - 1) * ROW_GAP
                   + MARGIN)

  def frame_origin(self, k: int) -> tuple[int, int]:
    """(y, x) of the top-left pixel of frame k's tile."""
    row, col = divmod(k, self.columns)
    y = self.title_h + row * (self.block_h + ROW_GAP) + LABEL_H
    x = MARGIN + GUTTER + col * (self.tile + COL_GAP)
    return y, x

  def motion_origin(self, k: int) -> tuple[int, int]:
    y, x = self.frame_origin(k)
    return y + self.tile + INNER_GAP, x


def title_width_for_sheet(num_frames: int, tile: int, columns: int) -> int:
  return SheetLayout(num_frames, tile, columns, 1).width - 2 * MARGIN


def contact_sheet(clip: dict[str, Any], tile: int | None = None, columns: int = 8,
                  motion_view: str = "heat") -> tuple[np.ndarray, SheetLayout]:
  """The contact sheet (RGB uint8 [H, W, 3]) of a clip (load_video / load_record output) and
  its layout (where each tile is)."""
  frames = clip["frames"]
  size = frames.shape[1]
  tile = tile or auto_tile(size)
  moving = motion_tiles(clip, motion_view)
  title = wrap_title(clip.get("title", []), title_width_for_sheet(len(frames), tile, columns))
  lay = SheetLayout(len(frames), tile, columns, len(title))
  sheet = np.full((lay.height, lay.width, 3), BACKGROUND, np.uint8)
  for i, line in enumerate(title):
    _put(sheet, line, MARGIN, MARGIN + (i + 1) * TITLE_LINE_H - 5, TITLE_SCALE,
         INK if i == 0 else FAINT)
  label_scale = LABEL_SCALE if _text_width("#0000  00.00s", LABEL_SCALE) <= tile else 0.3
  for row in range(lay.rows):
    y, _ = lay.frame_origin(row * lay.columns)
    _put(sheet, "frame", MARGIN, y + tile // 2 + 4, LABEL_SCALE, FAINT)
    _put(sheet, "motion", MARGIN, y + tile + INNER_GAP + tile // 2 + 4, LABEL_SCALE, FAINT)
  for k in range(len(frames)):
    y, x = lay.frame_origin(k)
    sheet[y:y + tile, x:x + tile] = resize_tile(frames[k], tile)
    my, mx = lay.motion_origin(k)
    sheet[my:my + tile, mx:mx + tile] = resize_tile(moving[k], tile)
    _put(sheet, _fit(frame_label(clip, k), tile, label_scale), x, y - 4, label_scale)
  return sheet, lay


def animation(clip: dict[str, Any], tile: int | None = None,
              motion_view: str = "heat") -> list[np.ndarray]:
  """One RGB image per sampled frame: the title, `k/T #index time`, the frame and its motion
  side by side."""
  frames = clip["frames"]
  tile = tile or auto_tile(frames.shape[1])
  moving = motion_tiles(clip, motion_view)
  width = 2 * MARGIN + 2 * tile + COL_GAP
  title = wrap_title(clip.get("title", []), width - 2 * MARGIN, 0.4)
  top = MARGIN + len(title) * TITLE_LINE_H + LABEL_H + 4
  height = top + tile + MARGIN
  out = []
  for k in range(len(frames)):
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    for i, line in enumerate(title):
      _put(img, line, MARGIN, MARGIN + (i + 1) * TITLE_LINE_H - 5, 0.4, INK if i == 0 else FAINT)
    label = f"{k + 1}/{len(frames)}  {frame_label(clip, k)}"
    _put(img, _fit(label, width - 2 * MARGIN, LABEL_SCALE), MARGIN, top - 5, LABEL_SCALE)
    img[top:top + tile, MARGIN:MARGIN + tile] = resize_tile(frames[k], tile)
    x = MARGIN + tile + COL_GAP
    img[top:top + tile, x:x + tile] = resize_tile(moving[k], tile)
    out.append(img)
  return out


# ------------------------------------------------------------------------------- writing


def encode_image(rgb: np.ndarray, suffix: str) -> bytes:
  ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  if not ok:
    raise ShowError(f"OpenCV could not encode a {suffix} image")
  return buf.tobytes()


def encode_gif(images: Sequence[np.ndarray], frame_ms: int) -> bytes:
  """An animated GIF (looping) of RGB images, `frame_ms` each, through OpenCV's GIF encoder
  (cv2.imencodeanimation: OpenCV >= 4.11 built with its GIF codec, as the 4.12+ wheels are)."""
  anim = cv2.Animation() if hasattr(cv2, "Animation") else None
  if anim is None or not hasattr(cv2, "imencodeanimation"):
    raise ShowError(f"this OpenCV ({cv2.__version__}) cannot write animations "
                    "(no cv2.imencodeanimation): write a .png, or upgrade opencv-python-headless")
  anim.frames = [cv2.cvtColor(img, cv2.COLOR_RGB2BGR) for img in images]
  anim.durations = [int(frame_ms)] * len(images)
  anim.loop_count = 0  # forever
  why = ""
  try:
    ok, buf = cv2.imencodeanimation(GIF_SUFFIX, anim)
  except cv2.error as e:
    ok, why = False, f" ({' '.join(str(e).split())[-200:]})"
  if not ok:
    raise ShowError(f"this OpenCV ({cv2.__version__}) cannot write a GIF (built without its "
                    f"GIF codec?): write a .png instead{why}")
  return buf.tobytes()


def gif_supported() -> bool:
  """Whether this OpenCV can write a GIF (probed on a 2-frame 2x2 animation)."""
  try:
    encode_gif([np.zeros((2, 2, 3), np.uint8)] * 2, 10)
  except ShowError:
    return False
  return True


def _write(path: str, data: bytes) -> None:
  from etils import epath
  out = epath.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(data)


# ------------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2 (argparse would print the usage too)
    print(f"error: {' '.join(message.split())} (see --help)", file=sys.stderr)
    raise SystemExit(2)


def make_parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m data_pipelines.show", description=__doc__,
              formatter_class=console.HelpFormatter)
  console.add_log_level(p)
  p.add_argument("input", nargs="?", metavar="VIDEO",
                 help="video file to decode, sample and give motion as extraction does (or "
                      "use --data_dir for a pre-extracted record)")
  p.add_argument("--out", required=True,
                 help="output: .png or .jpg for the contact sheet, .gif for the animation "
                      "(local or gs://; its folder is made)")
  g = p.add_argument_group("video file (extraction's flags and defaults)")
  g.add_argument("--num_frames", type=int, default=None,
                 help=f"sampled frames T (default: {VIDEO_FLAGS['num_frames']})")
  g.add_argument("--size", type=int, default=None,
                 help=f"frames resized to SIZE x SIZE (default: {VIDEO_FLAGS['size']})")
  g.add_argument("--motion", default=None, choices=motion_lib.MOTION_MODES,
                 help=f"motion mode (default: {VIDEO_FLAGS['motion']})")
  g.add_argument("--sampling", default=None, choices=video_lib.SAMPLINGS,
                 help=f"frame sampling (default: {VIDEO_FLAGS['sampling']})")
  g.add_argument("--short_policy", default=None, choices=video_lib.SHORT_POLICIES,
                 help="videos with fewer frames than T (default: "
                      f"{VIDEO_FLAGS['short_policy']})")
  g.add_argument("--seed", type=int, default=None,
                 help="seed of the random samplings, hashed with the path as given (default: "
                      f"{VIDEO_FLAGS['seed']})")
  r = p.add_argument_group("pre-extracted record")
  r.add_argument("--data_dir", default=None,
                 help="extraction's --out_dir or a dataset folder below it (default: none: "
                      "show VIDEO)")
  r.add_argument("--split", default="train", help="split to read (default: %(default)s)")
  r.add_argument("--index", type=int, default=None,
                 help="record position in the split (default: 0 unless --video is given)")
  r.add_argument("--video", default=None,
                 help="record whose `video` field is this path, or ends with it (default: none)")
  d = p.add_argument_group("drawing")
  d.add_argument("--motion_view", default="heat", choices=MOTION_VIEWS,
                 help="motion row: weights as a heat map, or the motion frames the model sees "
                      "(default: %(default)s)")
  d.add_argument("--tile", type=int, default=0,
                 help="tile side in px (default: 0 = the frame size, or its smallest whole "
                      f"multiple of at least {MIN_AUTO_TILE})")
  d.add_argument("--columns", type=int, default=8,
                 help="frames per row of the contact sheet (default: %(default)s)")
  d.add_argument("--frame_ms", type=int, default=400,
                 help="GIF: milliseconds per frame (default: %(default)s)")
  return p


def _check_args(args: argparse.Namespace) -> str:
  """The output format ('sheet' or 'gif'); raises ShowError for unusable flags."""
  suffix = os.path.splitext(args.out)[1].lower()
  if suffix not in SHEET_SUFFIXES + (GIF_SUFFIX,):
    raise ShowError(f"{args.out}: unknown output format {suffix or '(no suffix)'!r}; use "
                    ".png or .jpg (contact sheet) or .gif (animation)")
  if suffix == GIF_SUFFIX:
    encode_gif([np.zeros((2, 2, 3), np.uint8)] * 2, 10)  # fails now, saying why, if it would
  if args.tile < 0 or args.columns < 1 or args.frame_ms < 1:
    raise ShowError("--tile must be >= 0, --columns and --frame_ms >= 1")
  video_flags = [f"--{k}" for k in VIDEO_FLAGS if getattr(args, k) is not None]
  if args.data_dir is None:
    if args.input is None:
      raise ShowError("give a VIDEO file, or --data_dir with --index or --video for a record")
    if args.index is not None or args.video is not None:
      raise ShowError("--index and --video pick a record of --data_dir; give --data_dir")
    for k, default in VIDEO_FLAGS.items():
      if getattr(args, k) is None:
        setattr(args, k, default)
    if args.num_frames < 1 or args.size < 8:
      raise ShowError(f"--num_frames must be >= 1 and --size >= 8, got {args.num_frames} and "
                      f"{args.size}")
  else:
    if args.input is not None:
      raise ShowError(f"give either VIDEO ({args.input}) or --data_dir, not both")
    if video_flags:
      raise ShowError(f"{', '.join(video_flags)}: a record was extracted with its own frames "
                      "and motion; these flags apply to a VIDEO file")
    if args.index is not None and args.video is not None:
      raise ShowError("give --index or --video, not both")
  return "gif" if suffix == GIF_SUFFIX else "sheet"


def main(argv: Sequence[str] | None = None) -> int:
  args = make_parser().parse_args(argv)
  console.setup_logging(args.log_level)
  try:
    kind = _check_args(args)
    if args.data_dir is None:
      clip = load_video(args.input, args.num_frames, args.size, args.motion, args.sampling,
                        args.short_policy, args.seed)
    else:
      clip = load_record(args.data_dir, args.split, args.index, args.video)
    tile = args.tile or None
    if kind == "gif":
      images = animation(clip, tile, args.motion_view)
      data = encode_gif(images, args.frame_ms)
      shape = images[0].shape
    else:
      sheet, _ = contact_sheet(clip, tile, args.columns, args.motion_view)
      data = encode_image(sheet, os.path.splitext(args.out)[1].lower())
      shape = sheet.shape
    _write(args.out, data)
  except (ValueError, KeyError, OSError) as e:  # VideoError and ShowError are ValueErrors
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2
  frames = len(clip["frames"])
  what = f"{frames} animation frames" if kind == "gif" else f"{frames} frames"
  print(f"wrote {args.out} ({shape[1]}x{shape[0]} px, {what}, motion "
        f"{clip.get('motion_mode') or '?'})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
