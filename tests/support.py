"""Helpers the test packages share: the repository root, tiny stage configs, and writers of
pre-extracted records and of workdirs (fixtures built on them live in the conftest.py files)."""
from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import records
from hawk_jax import checkpoint
from hawk_jax import workdir as workdir_lib
from hawk_jax.models.hawk import split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import host_random_params
from hawk_jax.stage_config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
POD = str(ROOT / "launch" / "local_pod.sh")

# A tiny stage that trains in seconds: 4 frames, short text, one device. The train and tower
# cache tests use the same settings, so they compile the same pixel train step (and share it
# through the persistent compilation cache).
FAST = {"data.num_frames": 4, "data.max_len": 96, "data.worker_count": 0, "train.batch_size": 4,
        "train.log_every": 1, "train.ckpt_every": 2, "train.eval_batches": 0,
        "mesh_shape": (1, 1, 1)}


def tiny_config(stage_file: str, data_dir: str | None = None, **overrides):
  """configs/<stage_file> at size=tiny with the FAST settings, `data.dir` and `overrides`."""
  o = dict(FAST)
  if data_dir is not None:
    o["data.dir"] = data_dir
  o.update(overrides)
  return load_config(f"{ROOT / 'configs' / stage_file}:size=tiny", o)


def final_trainable(workdir: str):
  """(trainable parameters as numpy, step) of a workdir's latest finished checkpoint."""
  loaded = workdir_lib.load_params(workdir, parts=("trainable",))
  return jax.tree.map(np.asarray, loaded.params), loaded.step


class RecordsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes given examples in the record contract (records.features()) as ArrayRecord."""
  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # nothing is downloaded, so no checksums file to look for

  def __init__(self, *, examples=None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._examples = examples or {}
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=records.features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(examples)
            for split, examples in self._examples.items()}

  def _generate_examples(self, examples):
    for i, example in enumerate(examples):
      yield f"{i:06d}", example


def write_records(examples_by_split: dict, root: str) -> str:
  """{split: [records.make_example(...)]} -> a pre-extracted dataset under `root`."""
  RecordsBuilder(examples=examples_by_split, data_dir=str(root)).download_and_prepare()
  return str(root)


def write_random_workdir(path: str, cfg, steps, std: float = 0.02) -> dict:
  """A workdir as training writes one, with host-random parameters (normal(0, std)): frozen/
  from the first set, and checkpoints/<step>/trainable for each of `steps` (a new random set
  each). Returns {"frozen": frozen tree, step: trainable tree, ...}."""
  config = HawkConfig.from_stage_config(cfg)
  saved = {}
  for i, step in enumerate(steps):
    params = host_random_params(config, seed=i, std=std)
    trainable, frozen = split_params(params, config)
    if i == 0:
      workdir_lib.write_workdir(path, cfg, params, step=step)
      saved["frozen"] = frozen
    else:
      _save_step(path, step, trainable)
    saved[step] = trainable
  return saved


def _save_step(path: str, step: int, trainable) -> None:
  ckpts = checkpoint.TrainCheckpoints(pathlib.Path(path) / "checkpoints", async_save=False)
  ckpts.save(step, trainable, {"count": np.zeros((), np.int32)})
  ckpts.close()


def random_stage2_workdir(tmp_path_factory) -> str:
  """A tiny stage-2 workdir of random parameters with finished steps 10 and 20, 4 frames (the
  checkpoint of the command-line error tests)."""
  from configs.common import base_config
  cfg = base_config(2, "size=tiny")
  cfg.data.num_frames = 4
  path = str(tmp_path_factory.mktemp("stage2"))
  write_random_workdir(path, cfg, steps=(10, 20), std=0.08)
  return path


def assert_one_error_line(code, out, err, *names) -> str:
  """A command line's bad-input answer: exit 2, no traceback, exactly one `error: ...` line on
  stderr naming each of `names`. Returns that line."""
  assert code == 2, (code, out, err)
  assert "Traceback" not in out + err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  for name in names:
    assert name in lines[0], (name, lines[0])
  return lines[0]


def run_launcher(cmd: list[str], env: dict, timeout_s: float) -> subprocess.CompletedProcess:
  """Run `cmd` (launch/local_pod.sh, or a plain command) from the repository root, capturing
  its output. Past `timeout_s` the run is taken to hang: it and its pod's processes are killed
  and the test fails with the output's tail."""
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    stdout, stderr = proc.communicate(timeout=timeout_s)
  except subprocess.TimeoutExpired as e:
    stdout, stderr = _kill_pod(proc, e.stderr)
    pytest.fail(f"{cmd} still ran after {timeout_s} s; killed:\n{stdout[-4000:]}\n"
                f"{stderr[-4000:]}")
  return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _kill_pod(proc: subprocess.Popen, stderr_so_far) -> tuple[str, str]:
  """Kill a run that hangs, its pod's processes included. local_pod.sh starts each in a
  session of its own and names it on stderr ("local_pod: process 1 pid N"); killing the
  launcher alone would leave them running (on 2 cores, slowing every later test) and holding
  the output pipes open. Returns the run's output."""
  if isinstance(stderr_so_far, bytes):  # what communicate() had read when the time ran out
    stderr_so_far = stderr_so_far.decode(errors="replace")
  for pid in re.findall(r"^local_pod: process \d+ pid (\d+)$", stderr_so_far or "", re.M):
    try:
      os.killpg(int(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
  proc.kill()
  return proc.communicate()
