"""python -m data_pipelines.show: contact sheets and GIFs of a video file and of a record; the
frame tiles are the frames extraction samples, pixel for pixel."""
import cv2
import numpy as np
import pytest

from data_pipelines import extract, motion, records, show, synthetic

T, SIZE = 8, 64
TILE = 128  # auto tile for 64 px frames: the smallest whole multiple of at least 112 px


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  root = tmp_path_factory.mktemp("show")
  paths = synthetic.make_synthetic_dataset(str(root), num_videos=3, size=96, num_frames=16,
                                           test_fraction=0, seed=3)
  return {"root": root, **paths, "video": f"{paths['videos_dir']}/synthetic/clip_0001.mp4"}


@pytest.fixture(scope="module")
def dataset(clips, tmp_path_factory):
  out = tmp_path_factory.mktemp("show_data")
  assert extract.main(["--source", "hawk", "--annotations", clips["train"], "--videos_dir",
                       clips["videos_dir"], "--out_dir", str(out), "--workers", "0",
                       "--num_frames", str(T), "--size", str(SIZE), "--motion", "flow_soft",
                       "--no_progress"]) == 0
  return str(out)


def _read_rgb(path):
  bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
  assert bgr is not None, f"{path} does not decode"
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _enlarged(image, factor):
  """Pixel replication, independent of show's resize: what nearest-neighbour x2 draws."""
  return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _origin(k, title_lines=2, columns=8):
  """(y, x) of frame k's tile, from the documented layout constants."""
  row, col = divmod(k, columns)
  title_h = show.MARGIN + title_lines * show.TITLE_LINE_H + 4
  block_h = show.LABEL_H + 2 * TILE + show.INNER_GAP
  y = title_h + row * (block_h + show.ROW_GAP) + show.LABEL_H
  return y, show.MARGIN + show.GUTTER + col * (TILE + show.COL_GAP)


def _run(capsys, argv):
  code = show.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_sheet_of_a_video_holds_the_extracted_frames_and_motion(clips, tmp_path, capsys):
  out = tmp_path / "sheet.png"
  code, printed, err = _run(capsys, [clips["video"], "--out", out, "--num_frames", T,
                                     "--size", SIZE])
  assert code == 0 and err == ""
  assert printed.startswith(f"wrote {out} (") and "8 frames, motion flow_mask" in printed
  sheet = _read_rgb(out)
  # 8 tiles in one row under two title lines.
  width = 2 * show.MARGIN + show.GUTTER + T * TILE + (T - 1) * show.COL_GAP
  height = (show.MARGIN + 2 * show.TITLE_LINE_H + 4 + show.LABEL_H + 2 * TILE + show.INNER_GAP
            + show.MARGIN)
  assert sheet.shape == (height, width, 3)
  direct = motion.extract(clips["video"], num_frames=T, size=SIZE, mode="flow_mask")
  heat = cv2.cvtColor(cv2.applyColorMap(direct["weights"][3], cv2.COLORMAP_INFERNO),
                      cv2.COLOR_BGR2RGB)
  assert direct["weights"][3].any() and direct["weights"][3].min() == 0
  for k in (0, 3, T - 1):
    y, x = _origin(k)
    np.testing.assert_array_equal(sheet[y:y + TILE, x:x + TILE],
                                  _enlarged(direct["frames"][k], 2))
    # The label strip above the tile has ink; the gap between tiles is background.
    assert (sheet[y - show.LABEL_H:y, x:x + TILE] < 100).any()
    assert (sheet[y:y + TILE, x - show.COL_GAP] == 255).all() or k == 0
  y, x = _origin(3)
  my = y + TILE + show.INNER_GAP
  np.testing.assert_array_equal(sheet[my:my + TILE, x:x + TILE], _enlarged(heat, 2))


def test_motion_frames_view_and_wrapped_rows(clips, tmp_path, capsys):
  out = tmp_path / "frames.png"
  code, _, _ = _run(capsys, [clips["video"], "--out", out, "--num_frames", T, "--size", SIZE,
                             "--motion", "frame_diff", "--motion_view", "frames", "--columns",
                             3])
  assert code == 0
  sheet = _read_rgb(out)
  direct = motion.extract(clips["video"], num_frames=T, size=SIZE, mode="frame_diff")
  # A narrow sheet wraps the title onto more lines.
  title = show.load_video(clips["video"], T, SIZE, "frame_diff")["title"]
  lines = len(show.wrap_title(title, show.title_width_for_sheet(T, TILE, 3)))
  assert lines > 2
  for k in (1, 4, 7):  # rows 0, 1 and 2
    y, x = _origin(k, title_lines=lines, columns=3)
    np.testing.assert_array_equal(sheet[y:y + TILE, x:x + TILE],
                                  _enlarged(direct["frames"][k], 2))
    my = y + TILE + show.INNER_GAP
    np.testing.assert_array_equal(sheet[my:my + TILE, x:x + TILE],
                                  _enlarged(direct["motion"][k], 2))
  last_row_y = _origin(6, title_lines=lines, columns=3)[0]
  assert sheet.shape[0] == last_row_y + 2 * TILE + show.INNER_GAP + show.MARGIN


def test_explicit_tile_and_jpeg(clips, tmp_path, capsys):
  out = tmp_path / "small.jpg"
  code, _, _ = _run(capsys, [clips["video"], "--out", out, "--num_frames", 4, "--size", SIZE,
                             "--tile", 64])
  assert code == 0
  assert _read_rgb(out).shape[1] == 2 * show.MARGIN + show.GUTTER + 4 * 64 + 3 * show.COL_GAP


needs_gif = pytest.mark.skipif(not show.gif_supported(),
                               reason="this OpenCV cannot write GIFs (needs >= 4.11 with its "
                                      "GIF codec)")


@needs_gif
def test_gif_has_one_animation_frame_per_sampled_frame(clips, tmp_path, capsys):
  out = tmp_path / "anim.gif"
  code, printed, _ = _run(capsys, [clips["video"], "--out", out, "--num_frames", T, "--size",
                                   SIZE, "--motion", "flow_soft", "--frame_ms", 250])
  assert code == 0 and f"{T} animation frames" in printed
  ok, anim = cv2.imreadanimation(str(out))
  assert ok and len(anim.frames) == T
  assert list(anim.durations) == [250] * T
  h, w = anim.frames[0].shape[:2]
  assert w == 2 * show.MARGIN + 2 * TILE + show.COL_GAP
  assert all(f.shape[:2] == (h, w) for f in anim.frames)
  # OpenCV writes GIFs with a fixed, dithered palette: compare the tiles blurred.
  direct = motion.extract(clips["video"], num_frames=T, size=SIZE, mode="flow_soft")
  top = h - show.MARGIN - TILE
  for k in (0, T - 1):
    got = cv2.cvtColor(anim.frames[k][..., :3], cv2.COLOR_BGR2RGB)
    got = cv2.blur(got[top:top + TILE, show.MARGIN:show.MARGIN + TILE], (9, 9)).astype(int)
    want = cv2.blur(_enlarged(direct["frames"][k], 2), (9, 9)).astype(int)
    assert np.abs(got - want).mean() < 8


def test_sheet_of_a_record(clips, dataset, tmp_path, capsys):
  source = records.open_split(dataset, "train")
  rec = records.decode_record(source[1])
  out = tmp_path / "record.png"
  code, printed, _ = _run(capsys, ["--data_dir", dataset, "--split", "train", "--index", 1,
                                   "--out", out])
  assert code == 0 and "motion flow_soft" in printed
  sheet = _read_rgb(out)
  # Title: input line, facts, the record's description.
  for k in (0, T - 1):
    y, x = _origin(k, title_lines=3)
    np.testing.assert_array_equal(sheet[y:y + TILE, x:x + TILE], _enlarged(rec["frames"][k], 2))
    my = y + TILE + show.INNER_GAP
    heat = cv2.cvtColor(cv2.applyColorMap(rec["weights"][k], cv2.COLORMAP_INFERNO),
                        cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(sheet[my:my + TILE, x:x + TILE], _enlarged(heat, 2))
  # The same record by its video name (a file name is enough when it is unique).
  by_name = tmp_path / "by_name.png"
  name = rec["video"].rsplit("/", 1)[-1]
  assert _run(capsys, ["--data_dir", dataset, "--video", name, "--out", by_name])[0] == 0
  np.testing.assert_array_equal(_read_rgb(by_name), sheet)
  if not show.gif_supported():
    return
  gif = tmp_path / "record.gif"
  assert _run(capsys, ["--data_dir", dataset, "--video", rec["video"], "--out", gif])[0] == 0
  ok, anim = cv2.imreadanimation(str(gif))
  assert ok and len(anim.frames) == T


@pytest.mark.parametrize("case,needle", [
    ("missing video", "missing file"),
    ("empty video", "empty file"),
    ("bad suffix", "unknown output format '.bmp'"),
    ("no input", "give a VIDEO file"),
    ("unknown flag", "unrecognized arguments: --frames"),
    ("bad size", "--size >= 8"),
    ("video flag on a record", "--motion: a record was extracted"),
    ("no dataset", "no such directory"),
    ("no split", "no split 'val'"),
    ("index out of range", "--index 99 is out of range"),
    ("no such video", "no record of split 'train' has video 'nope.mp4'"),
])
def test_bad_input_is_one_line_and_exit_2(case, needle, clips, dataset, tmp_path, capsys):
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  out = ["--out", tmp_path / "x.png"]
  argv = {
      "missing video": [tmp_path / "missing.mp4", *out],
      "empty video": [empty, *out],
      "bad suffix": [clips["video"], "--out", tmp_path / "x.bmp"],
      "no input": out,
      "unknown flag": [clips["video"], *out, "--frames", 3],
      "bad size": [clips["video"], *out, "--size", 4],
      "video flag on a record": ["--data_dir", dataset, "--motion", "flow_mask", *out],
      "no dataset": ["--data_dir", tmp_path / "nothing", *out],
      "no split": ["--data_dir", dataset, "--split", "val", *out],
      "index out of range": ["--data_dir", dataset, "--index", 99, *out],
      "no such video": ["--data_dir", dataset, "--video", "nope.mp4", *out],
  }[case]
  try:
    code, printed, err = _run(capsys, argv)
  except SystemExit as e:  # argparse's own errors
    code, captured = e.code, capsys.readouterr()
    printed, err = captured.out, captured.err
  assert code == 2 and printed == ""
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
  assert not (tmp_path / "x.png").exists()


def test_help_names_every_flag_with_its_default(capsys):
  with pytest.raises(SystemExit) as info:
    show.main(["--help"])
  assert info.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  parser = show.make_parser()
  for action in parser._actions:
    if action.dest in ("help", "input", "out"):
      continue
    assert action.option_strings[0] in text
    assert "default" in action.help, action.dest
  for flag, value in show.VIDEO_FLAGS.items():
    assert f"--{flag}" in text and f"(default: {value})" in text
