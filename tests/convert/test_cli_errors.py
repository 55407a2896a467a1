"""`python -m hawk_jax.convert to-torch` on bad input: one `error: ...` line naming the path, exit
status 2, no traceback -- before any weight is read where the input can be checked first (the
workdir, its --step, the --out path)."""
import os
import subprocess
import sys

import pytest

from configs.common import base_config
from hawk_jax.convert import cli as convert_cli
from tests.support import ROOT, assert_one_error_line, random_stage2_workdir, write_random_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return random_stage2_workdir(tmp_path_factory)


@pytest.fixture
def no_weights(monkeypatch):
  """Fails the test if to-torch reads any weight (hawk_jax.workdir.load_params)."""
  def load_params(workdir, **kwargs):
    raise AssertionError(f"weights of {workdir} read before the bad input was reported")
  monkeypatch.setattr(convert_cli, "load_params", load_params)


def _to_torch(argv, capsys):
  code = convert_cli.main(["to-torch"] + argv)
  captured = capsys.readouterr()
  return code, captured.out, captured.err




@pytest.mark.parametrize("kind,why", [("no_such_workdir", "no such workdir"),
                                      ("not_a_workdir", "no config.json")])
def test_bad_checkpoint_folder_is_one_line(kind, why, tmp_path, capsys):
  """convert.cli.main to-torch --checkpoint on a folder that does not exist / is not one."""
  folder = tmp_path / kind
  if kind == "not_a_workdir":
    folder.mkdir()
    (folder / "notes.txt").write_text("no config.json here")
  code, out, err = _to_torch(["--checkpoint", str(folder), "--out", str(tmp_path / "h.pth")],
                             capsys)
  assert_one_error_line(code, out, err, str(folder), why)


def test_unknown_step_is_one_line_before_the_weights(workdir, tmp_path, no_weights, capsys):
  """convert.cli.to_torch --step N that the workdir lacks: the steps there are named."""
  code, out, err = _to_torch(["--checkpoint", workdir, "--step", "7", "--out",
                              str(tmp_path / "h.pth")], capsys)
  assert_one_error_line(code, out, err, workdir, "no finished step 7", "[10, 20]")


@pytest.mark.parametrize("where", ["a_folder", "under_a_file"])
def test_unwritable_out_is_one_line_before_the_weights(where, workdir, tmp_path, no_weights,
                                                       capsys):
  """convert.cli.check_output_file: --out an existing folder, or a path under a file."""
  if where == "a_folder":
    out = tmp_path / "exports"
    out.mkdir()
    why = "is a folder"
  else:
    (tmp_path / "notes.txt").write_text("a file")
    out = tmp_path / "notes.txt" / "hawk.pth"
    why = f"{tmp_path / 'notes.txt'} is a file"
  code, out_text, err = _to_torch(["--checkpoint", workdir, "--out", str(out)], capsys)
  assert_one_error_line(code, out_text, err, str(out), why)


def _damage_step(workdir: str, step: int) -> None:
  """Cuts the array data files of `step` to 10 bytes (its metadata intact)."""
  cut = 0
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "trainable")):
    if os.path.basename(root) == "d" and "ocdbt.process_" in root:
      for name in files:
        with open(os.path.join(root, name), "r+b") as f:
          f.truncate(10)
        cut += 1
  assert cut


def test_damaged_latest_step_is_one_line_and_step_reads_another(tmp_path, capsys):
  """`python -m hawk_jax.convert to-torch` on a workdir whose latest step's files are cut
  short: hawk_jax.workdir's WorkdirError names the step and --step as one `error:` line, exit
  2; then `--step 10` exports the intact step. (Run as a process: Orbax leaves reads in flight
  when one fails.)"""
  workdir = str(tmp_path / "stage2")
  write_random_workdir(workdir, base_config(2, "size=tiny"), steps=(10, 20), std=0.08)
  _damage_step(workdir, 20)
  out = str(tmp_path / "hawk.pth")
  run = subprocess.run([sys.executable, "-m", "hawk_jax.convert", "to-torch", "--checkpoint",
                        workdir, "--out", out], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 2, run.stderr[-3000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, run.stderr[-3000:]
  assert "step 20" in errors[0] and workdir in errors[0] and "--step" in errors[0], errors[0]
  assert not os.path.exists(out)

  assert convert_cli.main(["to-torch", "--checkpoint", workdir, "--step", "10", "--out",
                           out]) == 0
  assert os.path.exists(out)
  capsys.readouterr()
