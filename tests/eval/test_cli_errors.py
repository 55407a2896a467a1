"""`python -m hawk_jax.eval` on bad input. A predictions file with bad lines: every good line is
scored, each bad one is named (FILE:LINE: why) on stderr and in the report, exit status 2. Other
bad input (a missing file, a --checkpoint that is not a workdir, a --step it lacks, a missing
dataset or split, flags the route ignores): one `error: ...` line, exit 2, no traceback, and for
the --checkpoint route before any weight is read."""
import json
import os

import numpy as np
import pytest

from data_pipelines import motion, records
from data_pipelines.synthetic import write_mp4
from hawk_jax.eval import cli as eval_cli
from hawk_jax.eval import evaluate
from hawk_jax.infer import engine as engine_lib
from hawk_jax.workdir import WorkdirError
from tests.support import (
  assert_one_error_line,
  random_stage2_workdir,
  write_records,
)

GOOD = [
    {"task": "description", "video": "a.mp4", "question": "", "reference": "A man falls down.",
     "prediction": "A man falls."},
    {"task": "qa", "video": "a.mp4", "question": "Who falls?", "reference": "A man falls.",
     "prediction": "The man."},
    {"task": "description", "video": "b.mp4", "question": "", "reference": "Two cars crash.",
     "prediction": "Cars crash into each other."},
]


def _line(record) -> bytes:
  return json.dumps(record).encode("utf-8")




def test_bad_prediction_lines_are_named_and_the_good_ones_scored(tmp_path, capsys):
  """hawk_jax.eval.cli.main --predictions (evaluate.read_predictions): lines 2 (not JSON),
  4 (not UTF-8), 5 (no reference) and 7 (unknown task) are reported; lines 1, 3 and 6 are
  scored exactly as a file holding only them would be."""
  path = tmp_path / "preds.jsonl"
  path.write_bytes(b"\n".join([
      _line(GOOD[0]),
      b'{"task": "qa", "question": "Who?", ',
      _line(GOOD[1]),
      b'{"task": "qa", "prediction": "\xff\xfe"}',
      _line({"task": "description", "prediction": "x"}),
      _line(GOOD[2]),
      _line({"task": "caption", "reference": "a", "prediction": "b"}),
  ]) + b"\n")
  out = tmp_path / "report"
  code = eval_cli.main(["--predictions", str(path), "--out", str(out), "--no_judge"])
  captured = capsys.readouterr()
  assert code == 2
  assert "Traceback" not in captured.out + captured.err
  errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
  assert [e.split(": ")[1] for e in errors[:4]] == [f"{path}:{n}" for n in (2, 4, 5, 7)]
  assert "not valid JSON" in errors[0] and "not UTF-8" in errors[1]
  assert "'reference' is missing" in errors[2] and "'caption'" in errors[3]
  assert errors[4].startswith(f"error: 4 bad line(s) of {path} not scored")

  report = json.loads((out / "report.json").read_text())
  assert [line.split(": ")[0] for line in report["skipped_lines"]] == [
      f"{path}:{n}" for n in (2, 4, 5, 7)]
  assert report["tasks"]["description"]["items"] == 2 and report["tasks"]["qa"]["items"] == 1
  want = evaluate.evaluate_predictions(GOOD, str(tmp_path / "only_good"))
  assert report["tasks"] == want["tasks"]
  md = (out / "report.md").read_text()
  assert "Not scored — 4 bad prediction lines" in md and f"{path}:7" in md
  assert "| Ours |" in captured.out


def test_a_file_of_only_bad_lines_writes_no_report(tmp_path, capsys):
  """hawk_jax.eval.cli.main --predictions on random bytes: each line named, then one line
  saying nothing can be scored; exit 2 and no report."""
  path = tmp_path / "preds.jsonl"
  path.write_bytes(b"\x00\x9f garbage\n{not json}\n")
  out = tmp_path / "report"
  code = eval_cli.main(["--predictions", str(path), "--out", str(out), "--no_judge"])
  captured = capsys.readouterr()
  assert code == 2 and "Traceback" not in captured.err
  assert captured.err.splitlines() == [
      f"error: {path}:1: not UTF-8 text (byte 1)",
      f"error: {path}:2: not valid JSON (Expecting property name enclosed in double quotes: "
      "line 1 column 2 (char 1))",
      f"error: {path}: no prediction to score (all 2 non-blank line(s) are bad)"]
  assert not (out / "report.json").exists()


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_missing_or_empty_predictions_file_is_one_line(kind, tmp_path, capsys):
  """hawk_jax.eval.cli.main --predictions on a missing or empty (0-byte) file."""
  path = tmp_path / "preds.jsonl"
  if kind == "empty":
    path.write_bytes(b"")
  code = eval_cli.main(["--predictions", str(path), "--out", str(tmp_path / "o"), "--no_judge"])
  captured = capsys.readouterr()
  assert_one_error_line(code, captured.out, captured.err, str(path))


@pytest.mark.parametrize("flag,value", [("--step", "3"), ("--data_dir", "data"),
                                        ("--max_new_tokens", "5")])
def test_checkpoint_only_flags_with_predictions_are_refused(flag, value, tmp_path, capsys):
  """hawk_jax.eval.cli._parse_args: a --checkpoint flag beside --predictions is an error,
  not silently ignored."""
  path = tmp_path / "preds.jsonl"
  path.write_bytes(_line(GOOD[0]) + b"\n")
  with pytest.raises(SystemExit) as exit_:
    eval_cli.main(["--predictions", str(path), "--out", str(tmp_path / "o"), "--no_judge",
                   flag, value])
  assert exit_.value.code == 2
  assert f"{flag} only apply with --checkpoint" in capsys.readouterr().err


# --- the --checkpoint route ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return random_stage2_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One clip's records in a `test` split."""
  root = tmp_path_factory.mktemp("videos")
  path = str(root / "clip.mp4")
  frames = np.random.default_rng(0).integers(0, 256, (10, 48, 48, 3)).astype(np.uint8)
  write_mp4(path, frames, fps=5.0)
  clip = motion.extract(path, num_frames=4, size=48, mode="flow_soft")
  example = records.make_example(records.encode_visual(clip), video="clip.mp4", source="test",
                                 motion_mode="flow_soft", description="Noise.", qa=[])
  return write_records({"test": [example]}, tmp_path_factory.mktemp("hawk_data"))


@pytest.fixture
def no_weights(monkeypatch):
  """Fails the test if the engine reads any weight (hawk_jax.workdir.load_params)."""
  def load_params(workdir, **kwargs):
    raise AssertionError(f"weights of {workdir} read before the bad input was reported")
  monkeypatch.setattr(engine_lib, "load_params", load_params)


def _evaluate(argv, tmp_path, capsys):
  code = eval_cli.main(argv + ["--out", str(tmp_path / "out"), "--no_judge"])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


@pytest.mark.parametrize("kind,why", [("no_such_workdir", "no such workdir"),
                                      ("not_a_workdir", "no config.json")])
def test_bad_checkpoint_folder_is_one_line(kind, why, data_dir, tmp_path, no_weights, capsys):
  """hawk_jax.eval.cli.main --checkpoint on a folder that does not exist / is not a workdir."""
  folder = tmp_path / kind
  if kind == "not_a_workdir":
    folder.mkdir()
    (folder / "notes.txt").write_text("no config.json here")
  code, out, err = _evaluate(["--checkpoint", str(folder), "--data_dir", data_dir], tmp_path,
                             capsys)
  assert_one_error_line(code, out, err, str(folder), why)


def test_unknown_step_is_one_line_before_the_weights(workdir, data_dir, tmp_path, no_weights,
                                                     capsys):
  """hawk_jax.eval.cli.main --checkpoint --step N that the workdir lacks."""
  code, out, err = _evaluate(["--checkpoint", workdir, "--step", "7", "--data_dir", data_dir],
                             tmp_path, capsys)
  assert_one_error_line(code, out, err, workdir, "no finished step 7", "[10, 20]")


@pytest.mark.parametrize("what", ["data_dir", "split"])
def test_missing_dataset_or_split_is_one_line_before_the_weights(what, workdir, data_dir,
                                                                 tmp_path, no_weights, capsys):
  """hawk_jax.eval.cli.main --checkpoint (infer.predict.open_split): a --data_dir that does not
  exist, or a --split the dataset lacks (a KeyError inside TFDS)."""
  if what == "data_dir":
    argv, names = ["--data_dir", str(tmp_path / "no_data")], [str(tmp_path / "no_data")]
  else:
    argv, names = ["--data_dir", data_dir, "--split", "validation"], ["'validation'", "test"]
  code, out, err = _evaluate(["--checkpoint", workdir] + argv, tmp_path, capsys)
  assert_one_error_line(code, out, err, *names)


def test_workdir_error_while_reading_weights_is_one_line(workdir, data_dir, tmp_path,
                                                         monkeypatch, capsys):
  """hawk_jax.eval.cli.main --checkpoint when reading the weights raises WorkdirError (as a
  damaged step does; the message may span lines): one line, exit 2, --step forwarded."""
  steps = []

  def load_params(path, *, step=None, **kwargs):
    steps.append(step)
    raise WorkdirError(f"checkpoint step {step} of {path} is damaged: truncated\n  detail; "
                       "read another step with --step (steps there: [10])")
  monkeypatch.setattr(engine_lib, "load_params", load_params)
  code, out, err = _evaluate(["--checkpoint", workdir, "--step", "20", "--data_dir", data_dir],
                             tmp_path, capsys)
  assert_one_error_line(code, out, err, f"checkpoint step 20 of {workdir} is damaged",
                         "truncated detail; read another step with --step")
  assert steps == [20]
  assert not os.path.exists(tmp_path / "out" / "report.json")
