"""A pod on one machine (launch/local_pod.sh): JAX processes on 127.0.0.1 with fake CPU devices
and gloo collectives run `python -m hawk_jax.train --distributed` as a TPU slice would.

- 2 processes x 2 devices equal 1 process x 4 devices (same mesh, same global batch), stage 1
  and stage 2: losses and gradient norms of every step, the evaluation loss and the final
  parameters; each process loaded other examples;
- checkpoints restore on any topology: a 2x2 stage 1 feeds a 1x4 and a 2x2 stage 2, a 2x2
  checkpoint resumes on 1 device, a 1x4 one on 2x2 with another mesh shape, and a 2x2 workdir
  reads onto one device or 8 as evaluate, describe and to-torch read it;
- kill -9 of one process stops the other within the heartbeat bound, naming the lost one; the
  rerun resumes; SIGTERM to one process saves a checkpoint at the same next step on both and
  exits 143; the rerun ends bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from etils import epath

from hawk_jax.models.params import param_shardings
from hawk_jax.sharding import DEFAULT_RULES, make_mesh
from hawk_jax.train.loop import train_stage
from hawk_jax.workdir import load_params
from tests.support import POD, ROOT, run_launcher, tiny_config

STEPS = 8          # of stage 1; stage 2 runs STAGE2_STEPS
STAGE2_STEPS = 4
# Every run of the module: the same tiny stage, 4 examples a step over 4 devices.
SETTINGS = [f"--config.train.num_steps={STEPS}", "--config.train.ckpt_every=2",
            "--config.train.keep_checkpoints=5", "--config.train.batch_size=4",
            "--config.data.num_frames=4", "--config.data.max_len=96",
            "--config.data.worker_count=0", "--config.train.log_every=1",
            "--config.train.eval_batches=1"]
HEARTBEAT_S = 10
# Parameters after several AdamW steps: Adam divides each update by sqrt(v), so on the few
# entries whose gradient is ~0 a 1e-8 difference in the summed gradient (another reduction
# order across devices and processes) moves the update by up to ~1e-6 (seen: 1.3e-6 on 2 of
# 16384 entries after 4 steps), although losses and gradient norms agree to 1e-8.
PARAM_ATOL = 1e-5
# Per launched run: a healthy one takes 1-2 minutes on 2 cores, one with a loaded machine up to
# ~4; past this the run is taken to hang, its processes are killed and the test fails.
TIMEOUT_S = 420


def _env(devices: int | None = None) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             HAWK_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_S),
             # the test session's persistent compilation cache (tests/conftest.py)
             HAWK_JAX_COMPILE_CACHE=jax.config.jax_compilation_cache_dir or "off")
  env.pop("XLA_FLAGS", None)  # the 8 fake devices of the test process; each run sets its own
  if devices is not None:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _train_cmd(stage: int, workdir, data_dir, *extra, distributed=True) -> list[str]:
  config = {1: "stage1_pretrain.py", 2: "stage2_finetune.py"}[stage]
  return ([sys.executable, "-m", "hawk_jax.train"] + (["--distributed"] if distributed else [])
          + ["--config", f"configs/{config}:size=tiny", "--workdir", str(workdir),
             f"--config.data.dir={data_dir}"] + SETTINGS + list(extra))


def _pod(processes: int, devices: int, cmd: list[str]) -> list[str]:
  return [POD, "--processes", str(processes), "--devices_per_process", str(devices), "--"] + cmd


def _run(cmd, devices=None) -> subprocess.CompletedProcess:
  out = run_launcher(cmd, _env(devices), TIMEOUT_S)
  assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
  return out


def _metrics(workdir) -> dict[int, dict]:
  recs = [json.loads(line) for line in (epath.Path(workdir) / "metrics.jsonl").read_text()
          .splitlines()]
  return {r["step"]: r for r in recs if "loss" in r}


def _result(workdir) -> dict:
  return json.loads((epath.Path(workdir) / "result.json").read_text())


def _params(workdir, step=None):
  return jax.tree.map(np.asarray, load_params(workdir, step=step).params)


def _assert_close_trees(a, b, atol):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


def _assert_same_run(one, pod, steps: int, held_out: bool):
  """Per-step losses and gradient norms, eval loss (`held_out`: the data has a test split) and
  final parameters of two workdirs."""
  m1, m2 = _metrics(one), _metrics(pod)
  assert sorted(m1) == sorted(m2) == list(range(1, steps + 1))
  for step in m1:
    for key in ("loss", "grad_norm"):
      assert abs(m1[step][key] - m2[step][key]) <= 1e-6 * max(1.0, abs(m1[step][key])), \
          (step, key, m1[step][key], m2[step][key])
  r1, r2 = _result(one), _result(pod)
  if held_out:
    assert r1["eval_loss"] is not None and abs(r1["eval_loss"] - r2["eval_loss"]) <= 1e-6
  else:
    assert r1["eval_loss"] is None and r2["eval_loss"] is None
  _assert_close_trees(_params(one), _params(pod), atol=PARAM_ATOL)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory, gcs_bucket):
  """Stage 1 on 1x4 and on 2x2, then stage 2 on each from the 2x2 stage 1 (init.from_stage of
  a checkpoint written by two processes, read by one and by two). The 2x2 stage 2 writes to a
  bucket, as a pod does (the local GCS emulator, tests/gcs_emulator.py)."""
  root = tmp_path_factory.mktemp("pod")
  w = {name: root / name for name in ("s1_1x4", "s1_2x2", "s2_1x4")}
  w["s2_2x2"] = f"{gcs_bucket}/pod-{os.getpid()}-{time.time_ns()}/s2_2x2"
  _run(_train_cmd(1, w["s1_1x4"], data["captions"], distributed=False), devices=4)
  pod = _run(_pod(2, 2, _train_cmd(1, w["s1_2x2"], data["captions"])))
  stage2 = [f"--config.init.from_stage={w['s1_2x2']}", f"--config.train.num_steps={STAGE2_STEPS}"]
  _run(_train_cmd(2, w["s2_1x4"], data["hawk"], *stage2, distributed=False), devices=4)
  _run(_pod(2, 2, _train_cmd(2, w["s2_2x2"], data["hawk"], *stage2)))
  return {**{k: str(v) for k, v in w.items()}, "root": root, "stage1_pod_output": pod.stdout}


def test_two_processes_equal_one_process_stage1(runs):
  _assert_same_run(runs["s1_1x4"], runs["s1_2x2"], STEPS, held_out=False)


def test_two_processes_equal_one_process_stage2(runs):
  _assert_same_run(runs["s2_1x4"], runs["s2_2x2"], STAGE2_STEPS, held_out=True)


def test_one_log_and_one_result_per_pod(runs):
  out = runs["stage1_pod_output"]
  assert "[0] " in out and "[1] " in out
  assert not re.search(r"^\[1\] .*hawk_jax\.train: ", out, re.M), "process 1 logged at INFO"
  assert re.search(r"^\[0\] .*hawk_jax\.train: train step", out, re.M)
  # Both processes end with the same result; process 0 alone wrote result.json (it exists once).
  ends = re.findall(rf"^\[(\d)\] stage 1: steps={STEPS} loss (\S+ -> \S+)", out, re.M)
  assert sorted(i for i, _ in ends) == ["0", "1"] and len({v for _, v in ends}) == 1
  # The test session's compilation cache was passed in, and set aside: with it, process 0 ran
  # executables of earlier runs while process 1 compiled its own, and a pod hung in a collective
  # the two ran in different orders (hawk_jax/distributed.py, set_aside_compile_cache).
  assert re.search(r"^\[0\] .*persistent compilation cache off: 2 CPU processes", out, re.M)


def test_each_process_loads_its_own_examples(data):
  """Under a real 2-process runtime the train iterator of each process gives different rows;
  together they are the one-process batch (tests/train/loader_probe.py prints fingerprints)."""
  out = _run(_pod(2, 1, [sys.executable, "-m", "tests.train.loader_probe", data["captions"]]))
  rows = dict(re.findall(r"^\[(\d)\] rows (\S+)", out.stdout, re.M))
  assert set(rows) == {"0", "1"} and rows["0"] != rows["1"], out.stdout
  whole = subprocess.run([sys.executable, "-m", "tests.train.loader_probe", data["captions"]],
                         cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=TIMEOUT_S,
                         check=True).stdout
  [one] = re.findall(r"^rows (\S+)", whole, re.M)
  assert one.split(",") == rows["0"].split(",") + rows["1"].split(","), (one, rows)


def _truncate_to(src: str, dst, step: int) -> str:
  """A copy of workdir `src` as it was after checkpoint `step` (later steps and result gone)."""
  dst = str(dst)
  shutil.copytree(src, dst)
  os.remove(os.path.join(dst, "result.json"))
  for name in os.listdir(os.path.join(dst, "checkpoints")):
    if name.isdigit() and int(name) > step:
      shutil.rmtree(os.path.join(dst, "checkpoints", name))
  return dst


def test_pod_checkpoint_resumes_on_one_device(runs, data):
  """2 processes x 2 devices -> 1 process x 1 device (in this process): the trainable state,
  optimizer state included, restores onto the new mesh and the data continue at the step."""
  wd = _truncate_to(runs["s1_2x2"], runs["root"] / "resume_1x1", 4)
  cfg = tiny_config("stage1_pretrain.py", data["captions"], **{
      "train.num_steps": STEPS, "train.ckpt_every": 2, "train.keep_checkpoints": 5,
      "train.eval_batches": 1, "mesh_shape": (1, 1, 1)})
  r = train_stage(cfg, wd, progress=False)
  assert r.resumed_from == 4 and r.steps == STEPS
  m, ref = _metrics(wd), _metrics(runs["s1_2x2"])
  for step in range(5, STEPS + 1):
    assert abs(m[step]["loss"] - ref[step]["loss"]) <= 1e-5, (step, m[step], ref[step])
  _assert_close_trees(_params(runs["s1_2x2"]), _params(wd), atol=1e-5)


def test_one_process_checkpoint_resumes_on_a_pod_with_another_mesh(runs):
  """1 process x 4 devices, mesh (1, 4, 1) -> 2 processes x 2 devices, mesh (2, 2, 1)."""
  wd = _truncate_to(runs["s1_1x4"], runs["root"] / "resume_2x2", 4)
  data_dir = json.loads(open(os.path.join(wd, "config.json")).read())["data"]["dir"]
  out = _run(_pod(2, 2, _train_cmd(1, wd, data_dir, "--config.mesh_shape=(2,2,1)")))
  assert "resumed from" in out.stdout and "'data': 2, 'fsdp': 2" in out.stdout
  m, ref = _metrics(wd), _metrics(runs["s1_1x4"])
  for step in range(5, STEPS + 1):
    assert abs(m[step]["loss"] - ref[step]["loss"]) <= 1e-5, (step, m[step], ref[step])
  _assert_close_trees(_params(runs["s1_1x4"]), _params(wd), atol=1e-5)


def test_a_pod_checkpoint_reads_onto_any_mesh(runs):
  """What evaluate, describe and to-torch read (workdir.load_params): the 2x2 run's parameters,
  onto one device and sharded over this process's 8 devices, are the 1x4 run's."""
  one = _params(runs["s2_1x4"])
  loaded = load_params(runs["s2_2x2"])
  _, shardings = param_shardings(loaded.config, make_mesh((2, 4, 1)), DEFAULT_RULES)
  sharded = load_params(runs["s2_2x2"], shardings=shardings)
  assert any(x.addressable_shards[0].data.shape != x.shape
             for x in jax.tree.leaves(sharded.params)), "nothing was sharded"
  _assert_close_trees(one, jax.tree.map(np.asarray, loaded.params), atol=PARAM_ATOL)
  # the same checkpoint onto one device and onto 8: the same values, bit for bit
  for x, y in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(sharded.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _wait_for(proc, predicate, what: str, timeout: float = TIMEOUT_S):
  t0 = time.monotonic()
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"the pod ended (status {proc.returncode}) before {what}")
    if time.monotonic() - t0 > timeout:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.05)


class _Pod:
  """A pod run in the background, its output collected line by line."""

  def __init__(self, cmd, log_path):
    self.log_path = log_path
    self._log = open(log_path, "w")
    self.proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=self._log,
                                 stderr=subprocess.STDOUT, text=True)

  def output(self) -> str:
    with open(self.log_path, encoding="utf-8", errors="replace") as f:
      return f.read()

  def pid(self, index: int) -> int:
    _wait_for(self.proc, lambda: f"process {index} pid" in self.output(), "the pids")
    return int(re.search(rf"process {index} pid (\d+)", self.output()).group(1))

  def wait(self, timeout=TIMEOUT_S) -> int:
    try:
      return self.proc.wait(timeout=timeout)
    finally:
      self._log.close()


def test_kill_and_preemption_then_resume_bit_identical(runs, tmp_path):
  wd = tmp_path / "faults"
  cmd = _pod(2, 2, _train_cmd(1, wd, json.loads(
      open(os.path.join(runs["s1_2x2"], "config.json")).read())["data"]["dir"]))
  ckpt = wd / "checkpoints" / "2"

  # 1. kill -9 of process 1 once step 2's checkpoint is complete: process 0 is stopped by the
  # coordination service within the heartbeat bound, with a message naming process 1.
  pod = _Pod(cmd, tmp_path / "kill.log")
  victim = pod.pid(1)
  _wait_for(pod.proc, ckpt.is_dir, "checkpoint 2")
  os.kill(victim, signal.SIGKILL)
  killed_at = time.monotonic()
  status = pod.wait()
  stopped_after = time.monotonic() - killed_at
  out = pod.output()
  assert status != 0, out[-3000:]
  assert stopped_after < 120, f"the pod took {stopped_after:.0f} s to stop"
  assert re.search(r"^\[0\] .*unhealthy \(stopped sending heartbeats\):\s*\n(\[0\] )?1\b", out,
                   re.M), out[-3000:]

  # 2. rerun; SIGTERM to process 0 as soon as it resumed: both save the next step and exit 143.
  pod = _Pod(cmd, tmp_path / "term.log")
  target = pod.pid(0)
  _wait_for(pod.proc, lambda: "resumed from" in pod.output(), "the resume")
  resumed = int(re.search(r"resumed from \S+ step (\d+)", pod.output()).group(1))
  assert resumed >= 2
  os.kill(target, signal.SIGTERM)
  assert pod.wait() == 143, pod.output()[-3000:]
  out = pod.output()
  saved = {int(s) for s in re.findall(r"^\[[01]\] preempted \(SIGTERM\): checkpoint saved at "
                                      r"step (\d+)", out, re.M)}
  assert len(saved) == 1 and len(re.findall(r"preempted \(SIGTERM\)", out)) == 2, out[-3000:]
  [preempted_at] = saved
  assert resumed < preempted_at < STEPS and (wd / "checkpoints" / str(preempted_at)).is_dir()

  # 3. rerun to the end: the same parameters, bit for bit, as the uninterrupted 2x2 run.
  pod = _Pod(cmd, tmp_path / "final.log")
  assert pod.wait() == 0, pod.output()[-3000:]
  assert f"step {preempted_at}" in pod.output()
  for x, y in zip(jax.tree.leaves(_params(runs["s1_2x2"])), jax.tree.leaves(_params(wd))):
    np.testing.assert_array_equal(x, y)
  m, ref = _metrics(wd), _metrics(runs["s1_2x2"])
  assert all(m[s]["loss"] == ref[s]["loss"] for s in range(preempted_at + 1, STEPS + 1))
