"""`python -m hawk_jax.eval --checkpoint` on a pod: two processes of two CPU devices each
(launch/local_pod.sh) generate the test items on one tensor-parallel model sharded over all four
devices, each process supplying its rows of every batch, and process 0 alone writes
predictions and a report equal to a one-process run's."""
import json
import os
import sys

import numpy as np
import pytest

from configs.common import base_config
from data_pipelines import motion, records
from data_pipelines.synthetic import write_mp4
from hawk_jax.eval import cli as eval_cli
from tests.support import POD, run_launcher, write_random_workdir, write_records

MAX_NEW = 4
POD_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  cfg = base_config(2, "size=tiny")
  cfg.data.num_frames = 4
  path = str(tmp_path_factory.mktemp("stage2"))
  write_random_workdir(path, cfg, steps=(10,), std=0.08)
  return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Three short clips; 1 + (1 or 2) QA pairs each: 7 eval items."""
  import cv2
  root = tmp_path_factory.mktemp("videos")
  examples = []
  for i in range(3):
    rng = np.random.default_rng(i)
    bg = cv2.resize(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8), (48, 48),
                    interpolation=cv2.INTER_CUBIC)
    frames = np.repeat(bg[None], 10, axis=0)
    for t in range(10):
      frames[t, 10:22, 2 + 3 * t:14 + 3 * t] = (255, 40 * i, 20)
    path = str(root / f"clip{i}.mp4")
    write_mp4(path, frames, fps=5.0)
    clip = motion.extract(path, num_frames=4, size=48, mode="flow_soft")
    qa = [{"q": "What moves across the scene?", "a": "A red square moves to the right."},
          {"q": "Is anyone hurt?", "a": "No one is hurt."}][:1 + i % 2]
    examples.append(records.make_example(
        records.encode_visual(clip), video=f"clip{i}.mp4", source="test",
        motion_mode="flow_soft", description=f"A red square slides right in clip {i}.", qa=qa))
  return write_records({"test": examples}, tmp_path_factory.mktemp("hawk_data"))


def _read(out):
  with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as f:
    predictions = [json.loads(line) for line in f]
  with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
    return predictions, json.load(f)


def test_distributed_evaluate_equals_one_process(workdir, data_dir, tmp_path, capsys):
  common = ["--checkpoint", workdir, "--data_dir", data_dir, "--no_judge", "--batch_size", "4",
            "--max_new_tokens", str(MAX_NEW)]
  one = str(tmp_path / "one")
  assert eval_cli.main(common + ["--out", one, "--layout", "single"]) == 0
  capsys.readouterr()
  want_predictions, want_report = _read(one)
  assert len(want_predictions) == 7
  assert len({p["prediction"] for p in want_predictions}) > 1

  pod = str(tmp_path / "pod")
  # The pod sets its own device count; the test's 8 fake devices must not reach it.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  # A CPU pod compiles without the persistent cache (hawk_jax/distributed.py says why).
  env.update(GRACE_S="20", HAWK_HEARTBEAT_TIMEOUT_S="30")
  command = [POD, "--processes", "2", "--devices_per_process", "2", "--",
             sys.executable, "-m", "hawk_jax.eval", "--distributed", "--layout", "tensor:2",
             "--out", pod] + common
  run = run_launcher(command, env, POD_TIMEOUT_S)
  log = run.stdout + run.stderr
  assert run.returncode == 0, log[-4000:]
  # tensor:2 over 2 x 2 devices: each process's devices form one data slice, so each supplies
  # half of every 4-row batch; process 0 alone reports.
  assert "[0] [process 0 of 2: rows [0, 2) of each batch of 4]" in log, log[-4000:]
  assert "[1] [process 1 of 2: rows [2, 4) of each batch of 4]" in log, log[-4000:]
  assert "mesh data=2 tensor=2 over 4 devices, 2 process(es)" in log
  assert "[0] # HAWK evaluation" in log and "[1] # HAWK evaluation" not in log
  got_predictions, got_report = _read(pod)
  assert got_predictions == want_predictions
  assert got_report == want_report
