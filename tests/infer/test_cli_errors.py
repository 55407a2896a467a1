"""describe and chat on bad input: one `error: PATH: what is wrong` line on stderr, exit status 2,
no traceback -- and, for a bad video or step, before any weight is read (a typo must not cost the
minutes a large model takes to load).

The workdir is random parameters written the way training writes them (two steps); the bad
videos are a missing path, random bytes named .mp4 and an empty file."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.synthetic import write_mp4
from hawk_jax.infer import chat, describe
from hawk_jax.infer import engine as engine_lib
from hawk_jax.workdir import WorkdirError
from tests.support import ROOT, assert_one_error_line, random_stage2_workdir

CLIS = {"describe": describe.main, "chat": chat.main}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return random_stage2_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  """{kind: path}: a good clip and the bad ones."""
  root = tmp_path_factory.mktemp("inputs")
  good = str(root / "good.mp4")
  frames = np.random.default_rng(0).integers(0, 256, (10, 48, 48, 3)).astype(np.uint8)
  write_mp4(good, frames, fps=5.0)
  corrupt = root / "corrupt.mp4"
  corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
  empty = root / "empty.mp4"
  empty.write_bytes(b"")
  truncated = root / "truncated.mp4"  # a download cut short: the mp4 index is missing
  with open(good, "rb") as f:
    data = f.read()
  truncated.write_bytes(data[:len(data) // 2])
  not_workdir = root / "not_a_workdir"
  not_workdir.mkdir()
  (not_workdir / "notes.txt").write_text("a folder, but no config.json")
  return {"good": good, "missing": str(root / "missing.mp4"), "corrupt": str(corrupt),
          "empty": str(empty), "truncated": str(truncated),
          "no_workdir": str(root / "no_such_workdir"), "not_workdir": str(not_workdir)}


@pytest.fixture
def no_weights(monkeypatch):
  """Fails the test if the engine reads any weight (hawk_jax.workdir.load_params)."""
  def load_params(workdir, **kwargs):
    raise AssertionError(f"weights of {workdir} read before the bad input was reported")
  monkeypatch.setattr(engine_lib, "load_params", load_params)


def _run(cli, argv, capsys, monkeypatch):
  monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # chat would read its questions here
  code = CLIS[cli](argv)
  captured = capsys.readouterr()
  return code, captured.out, captured.err




@pytest.mark.parametrize("cli", sorted(CLIS))
@pytest.mark.parametrize("kind,why", [("missing", "missing file"),
                                      ("corrupt", "corrupt or not a video"),
                                      ("truncated", "corrupt or not a video"),
                                      ("empty", "empty file (0 bytes)")])
def test_bad_video_is_one_line_before_the_weights(cli, kind, why, workdir, paths, no_weights,
                                                  capsys, monkeypatch):
  """describe.main / chat.main: a missing, corrupt or empty video."""
  code, out, err = _run(cli, ["--checkpoint", workdir, paths[kind]], capsys, monkeypatch)
  assert_one_error_line(code, out, err, paths[kind], why)


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_describe_names_the_bad_one_of_several_videos(cli, workdir, paths, no_weights, capsys,
                                                      monkeypatch):
  """describe.main (several videos) / chat.main (the one video): the bad path is named."""
  videos = [paths["good"], paths["corrupt"]] if cli == "describe" else [paths["corrupt"]]
  code, out, err = _run(cli, ["--checkpoint", workdir] + videos, capsys, monkeypatch)
  line = assert_one_error_line(code, out, err, paths["corrupt"])
  assert paths["good"] not in line


@pytest.mark.parametrize("cli", sorted(CLIS))
@pytest.mark.parametrize("kind,why", [("no_workdir", "no such workdir"),
                                      ("not_workdir", "no config.json")])
def test_bad_checkpoint_folder_is_one_line(cli, kind, why, paths, no_weights, capsys,
                                           monkeypatch):
  """describe.main / chat.main: a --checkpoint that does not exist or is not a workdir."""
  code, out, err = _run(cli, ["--checkpoint", paths[kind], paths["good"]], capsys, monkeypatch)
  assert_one_error_line(code, out, err, paths[kind], why)


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_unknown_step_is_one_line_before_the_weights(cli, workdir, paths, no_weights, capsys,
                                                     monkeypatch):
  """describe.main / chat.main --step N that the workdir lacks: the steps there are named."""
  code, out, err = _run(cli, ["--checkpoint", workdir, "--step", "7", paths["good"]], capsys,
                        monkeypatch)
  assert_one_error_line(code, out, err, workdir, "no finished step 7", "[10, 20]")


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_bad_generation_flag_is_one_line_before_the_weights(cli, workdir, paths, no_weights,
                                                            capsys, monkeypatch):
  """describe.main / chat.main: a generation flag out of range fails before the load."""
  code, out, err = _run(cli, ["--checkpoint", workdir, "--max_new_tokens", "0", paths["good"]],
                        capsys, monkeypatch)
  assert_one_error_line(code, out, err, "max_new_tokens must be >= 1")


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_workdir_error_while_reading_weights_is_one_line(cli, workdir, paths, capsys,
                                                         monkeypatch):
  """describe.main / chat.main when reading the weights raises hawk_jax.workdir.WorkdirError
  (as a damaged step does: the message names the step and --step, and may span lines): one
  line, exit 2, and --step reaches the reader. (A real damaged step, end to end:
  tests/convert/test_cli_errors.py.)"""
  steps = []

  def load_params(path, *, step=None, **kwargs):
    steps.append(step)
    raise WorkdirError(f"checkpoint step {step} of {path} is damaged: Exception: truncated\n"
                       f"  detail\n; read another step with --step (steps there: [10])")
  monkeypatch.setattr(engine_lib, "load_params", load_params)
  code, out, err = _run(cli, ["--checkpoint", workdir, "--step", "20", paths["good"]], capsys,
                        monkeypatch)
  assert_one_error_line(code, out, err, f"checkpoint step 20 of {workdir} is damaged",
                         "truncated detail ; read another step with --step")
  assert steps == [20]


def _subprocess(module, argv):
  env = dict(os.environ)
  env.pop("OPENCV_FFMPEG_LOGLEVEL", None)  # the command line's own default is under test
  return subprocess.run([sys.executable, "-m", module] + argv, cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("module", ["hawk_jax.infer.describe", "hawk_jax.infer.chat"])
def test_truncated_video_command_line_prints_exactly_one_line(module, workdir, paths):
  """`python -m hawk_jax.infer.describe|chat` on an mp4 cut in half: FFmpeg's own log line
  (`moov atom not found`) does not join the error; exit 2, no traceback."""
  run = _subprocess(module, ["--checkpoint", workdir, paths["truncated"]])
  assert run.returncode == 2, run.stderr[-3000:]
  assert run.stdout == ""
  assert run.stderr.splitlines() == [
      f"error: {paths['truncated']}: unreadable: OpenCV cannot open it (corrupt or not a video)"]
