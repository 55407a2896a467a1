"""Training: stage linking, exact resume, sharded step == single-device step, and no optimizer
state for frozen parameters. Tiny model; data from the package fixture (tests/train/conftest.py)."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hawk_jax import checkpoint
from hawk_jax.models.hawk import split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import abstract_params, count
from hawk_jax.sharding import make_mesh, rules_as_list
from hawk_jax.stage_config import load_config
from hawk_jax.train.init import initialize
from hawk_jax.train.loop import train_stage
from hawk_jax.train.optim import make_optimizer
from hawk_jax.workdir import WorkdirError
from tests.support import FAST, ROOT, final_trainable, tiny_config


def test_resume_after_interruption_is_exact(data, tmp_path):
  straight = str(tmp_path / "straight")
  r = train_stage(tiny_config("stage1_pretrain.py", data["captions"], **{"train.num_steps": 4}),
                  straight, progress=False)
  assert r.steps == 4 and r.first_loss is not None
  interrupted = str(tmp_path / "interrupted")
  cfg = tiny_config("stage1_pretrain.py", data["captions"], **{"train.num_steps": 4})
  r1 = train_stage(cfg, interrupted, stop_after=3, progress=False)  # last checkpoint: step 2
  assert r1.steps == 3
  r2 = train_stage(cfg, interrupted, progress=False)
  assert r2.resumed_from == 2 and r2.steps == 4
  a, sa = final_trainable(straight)
  b, sb = final_trainable(interrupted)
  assert sa == sb == 4
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)  # bit for bit on CPU

  # The same through the CLI with a real kill -9 once a checkpoint exists, then a SIGTERM.
  killed = str(tmp_path / "killed")
  cmd = [sys.executable, "-m", "hawk_jax.train", "--config",
         f"{ROOT / 'configs/stage1_pretrain.py'}:size=tiny", "--workdir", killed]
  cmd += [f"--config.{k}={v}" for k, v in FAST.items()]
  cmd += [f"--config.data.dir={data['captions']}", "--config.train.num_steps=4"]
  # Same XLA flags and compilation cache as this process: the programs compile once.
  env = dict(os.environ, HAWK_JAX_COMPILE_CACHE=jax.config.jax_compilation_cache_dir)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(os.path.join(killed, "checkpoints", "2")):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  # The rerun resumes; a SIGTERM as soon as it has (while it compiles) saves step 3 and exits 143.
  log = tmp_path / "term.log"
  with open(log, "w") as f:
    proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
  while time.time() < deadline and proc.poll() is None:
    if "resumed from" in log.read_text():
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.02)
  assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
  assert "preempted (SIGTERM): checkpoint saved at step 3" in log.read_text()
  assert os.path.isdir(os.path.join(killed, "checkpoints", "3"))
  out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=600)
  assert "resumed from" in out.stderr and "step 3" in out.stderr
  k, sk = final_trainable(killed)
  assert sk == 4
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(k)):
    np.testing.assert_array_equal(x, y)
  # ... and training changed them.
  c0 = initialize(HawkConfig.from_stage_config(cfg), cfg, make_mesh((1, 1, 1)),
                  rules_as_list(cfg.logical_axis_rules))[0]
  t0 = split_params(c0, HawkConfig.from_stage_config(cfg))[0]
  assert any(np.abs(np.asarray(x) - y).max() > 0 for x, y in zip(jax.tree.leaves(t0),
                                                                    jax.tree.leaves(a)))


def test_stage2_starts_from_stage1_trainable_and_frozen(data, tmp_path):
  s1 = str(tmp_path / "s1")
  train_stage(tiny_config("stage1_pretrain.py", data["captions"], **{"train.num_steps": 2}), s1,
              progress=False)
  cfg2 = tiny_config("stage2_finetune.py", data["hawk"], **{"train.num_steps": 2,
                                                      "init.from_stage": s1})
  config = HawkConfig.from_stage_config(cfg2)
  params, _, sources, frozen_from = initialize(config, cfg2, make_mesh((1, 1, 1)),
                                               rules_as_list(cfg2.logical_axis_rules))
  assert frozen_from == s1
  trainable, frozen = split_params(params, config)
  want, _ = final_trainable(s1)
  for x, y in zip(jax.tree.leaves(trainable), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(x), y)
  assert sources["appearance/video_qformer"].startswith("stage checkpoint")
  assert sources["llm"].startswith("frozen towers of")
  abstract = abstract_params(config)
  frozen1 = checkpoint.restore_params(os.path.join(s1, "frozen"),
                                      checkpoint.abstract_like(split_params(abstract, config)[1]))
  for x, y in zip(jax.tree.leaves(frozen), jax.tree.leaves(frozen1)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  r = train_stage(cfg2, str(tmp_path / "s2"), progress=False)
  assert r.steps == 2 and np.isfinite(r.last_loss)


def test_sharded_step_equals_single_device_step(data, tmp_path):
  assert jax.device_count() >= 8
  outs = []
  for shape in ((1, 1, 1), (2, 2, 2)):
    wd = str(tmp_path / f"mesh_{'x'.join(map(str, shape))}")
    train_stage(tiny_config("stage1_pretrain.py", data["captions"],
                     **{"train.num_steps": 1, "mesh_shape": shape}), wd, progress=False)
    outs.append(final_trainable(wd)[0])
  for x, y in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_allclose(x, y, atol=2e-6, rtol=1e-5)


def test_optimizer_state_holds_nothing_for_frozen_parameters():
  cfg = load_config(f"{ROOT / 'configs/stage2_finetune.py'}:size=hawk7b")
  config = HawkConfig.from_stage_config(cfg)
  abstract = abstract_params(config)
  trainable, frozen = split_params(abstract, config)
  tx, _ = make_optimizer(cfg.optim, 100)
  opt_state = jax.eval_shape(tx.init, trainable)
  n_opt = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(opt_state))
  n_train = count(trainable)
  assert n_train == 113_431_040
  assert count(frozen) > 8_900_000_000
  # Adam's two moments per trainable parameter, plus step counters.
  assert 2 * n_train <= n_opt < 2 * n_train + 16



def test_a_mistyped_from_stage_is_an_error_and_creates_nothing(data, tmp_path):
  missing = tmp_path / "stage1_typo"
  wd = tmp_path / "stage2"
  cfg = tiny_config("stage2_finetune.py", data["hawk"], **{"init.from_stage": str(missing)})
  with pytest.raises(WorkdirError, match=rf"init.from_stage: {missing}: no such workdir"):
    train_stage(cfg, str(wd), progress=False)
  assert not missing.exists() and not wd.exists()
  # A workdir with a config but neither towers nor a checkpoint is no starting point either.
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(cfg.to_json())
  cfg = tiny_config("stage2_finetune.py", data["hawk"], **{"init.from_stage": str(empty)})
  with pytest.raises(WorkdirError, match="holds neither frozen towers"):
    train_stage(cfg, str(wd), progress=False)
  # The command line says it in one line and exits 2.
  out = subprocess.run(
      [sys.executable, "-m", "hawk_jax.train", "--config",
       f"{ROOT / 'configs/stage2_finetune.py'}:size=tiny", "--workdir", str(wd),
       f"--config.data.dir={data['hawk']}", f"--config.init.from_stage={missing}"],
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: config.init.from_stage: {missing}: no such workdir")
  assert not missing.exists() and not wd.exists()
