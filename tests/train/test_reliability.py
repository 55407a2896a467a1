"""Nothing lost, nothing silent: a damaged latest checkpoint, a diverging run, and configs that
do not fit the workdir, the devices or the records -- each found at once, named in one line,
and the good state kept."""
import json
import logging
import os

import jax
import numpy as np
import pytest

from hawk_jax import checkpoint
from hawk_jax import workdir as workdir_lib
from hawk_jax.stage_config import ConfigError
from hawk_jax.train import __main__ as train_cli
from hawk_jax.train.config_checks import check_config
from hawk_jax.train.loop import train_stage
from tests.support import ROOT, tiny_config


@pytest.fixture(autouse=True)
def _root_logging_restored():
  """train's main() sets up root logging (basicConfig(force=True)); later tests of other
  command lines count their stderr lines, so the handlers and levels are put back."""
  root, absl = logging.getLogger(), logging.getLogger("absl")
  handlers, level, absl_level = root.handlers[:], root.level, absl.level
  yield
  root.handlers[:] = handlers
  root.setLevel(level)
  absl.setLevel(absl_level)


def _garble_biggest_array_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir / "trainable") for f in fs
           if f"{os.sep}d{os.sep}" in os.path.join(d, f)]
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


def test_a_garbled_latest_checkpoint_resumes_from_the_step_before(data, tmp_path, caplog):
  wd = tmp_path / "run"
  cfg = tiny_config("stage1_pretrain.py", data["captions"],
                    **{"train.num_steps": 6, "train.keep_checkpoints": 3})
  train_stage(cfg, str(wd), stop_after=4, progress=False)  # checkpoints 2 and 4
  _garble_biggest_array_file(wd / "checkpoints" / "4")

  # Readers name the damaged step and the steps that can be read instead.
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.load_params(str(wd), parts=("trainable",))
  assert str(e.value).startswith(f"checkpoint step 4 of {wd} is damaged: ")
  assert "differ from the checksums recorded at save" in str(e.value)
  assert "--step (steps there: [2])" in str(e.value)
  assert workdir_lib.load_params(str(wd), parts=("trainable",), step=2).step == 2

  # Training says which step is damaged and why, resumes from step 2 and keeps step 4 aside.
  with caplog.at_level("WARNING", logger="hawk_jax.train"):
    r = train_stage(cfg, str(wd), progress=False)
  assert r.resumed_from == 2 and r.steps == 6
  assert any(f"checkpoint step 4 in {wd / 'checkpoints'} is damaged" in m and
             "Resuming from step 2" in m for m in caplog.messages)
  assert (wd / "damaged_checkpoints" / "4" / "trainable").is_dir()
  assert workdir_lib.checkpoint_steps(str(wd)) == [2, 4, 6]
  for step in (4, 6):  # written again by the resumed run, intact
    assert workdir_lib.load_params(str(wd), parts=("trainable",), step=step).step == step


def test_no_checkpoint_restores_is_an_error_and_nothing_is_moved(data, tmp_path):
  wd = tmp_path / "run"
  cfg = tiny_config("stage1_pretrain.py", data["captions"], **{"train.num_steps": 4})
  train_stage(cfg, str(wd), stop_after=2, progress=False)
  os.remove(wd / "checkpoints" / "2" / "meta" / "metadata")
  with pytest.raises(workdir_lib.WorkdirError, match="no checkpoint in .* restores: step 2: "
                     "FileNotFoundError: File .*/2/meta/metadata not found"):
    train_stage(cfg, str(wd), progress=False)
  assert workdir_lib.checkpoint_steps(str(wd)) == [2]
  assert not (wd / "damaged_checkpoints").exists()


def test_a_diverging_run_skips_then_stops_keeping_the_last_good_parameters(
    data, tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("HAWK_JAX_COMPILE_CACHE", jax.config.jax_compilation_cache_dir)
  wd = tmp_path / "run"
  # An absurd learning rate: step 1 is finite, and its update sends the parameters so far that
  # every later forward pass overflows.
  lr = 1e30
  argv = ["--config", f"{ROOT / 'configs/stage1_pretrain.py'}:size=tiny", "--workdir", str(wd),
          f"--config.data.dir={data['captions']}", "--config.data.num_frames=4",
          "--config.data.max_len=96", "--config.train.eval_batches=0",
          "--config.mesh_shape=(1,1,1)", "--config.train.num_steps=20",
          "--config.train.ckpt_every=1", "--config.train.keep_checkpoints=20",
          "--config.train.max_consecutive_skips=3", f"--config.optim.peak_lr={lr}",
          f"--config.optim.init_lr={lr}", f"--config.optim.end_lr={lr}"]
  assert train_cli.main(argv) == train_cli.DIVERGED_EXIT
  err = capsys.readouterr().err
  assert "error: stopped at step 4: the loss or gradient norm was not finite at steps 2..4 " \
         "(3 in a row, train.max_consecutive_skips=3)" in err
  assert "Traceback" not in err
  metrics = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [(m["step"], m["skipped"]) for m in metrics] == [(1, 0), (2, 1), (3, 1), (4, 1)]
  assert not np.isfinite(metrics[-1]["loss"])
  # On disk: the steps before the stop, every one finite and equal to the last good step's.
  steps = workdir_lib.checkpoint_steps(str(wd))
  assert steps == [1, 2, 3]
  good = workdir_lib.load_params(str(wd), parts=("trainable",), step=1).params
  for step in steps:
    params = workdir_lib.load_params(str(wd), parts=("trainable",), step=step).params
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    jax.tree.map(np.testing.assert_array_equal, params, good)


def test_a_workdir_of_another_size_or_variant_is_refused_naming_both(data, tmp_path):
  wd = tmp_path / "run"
  checkpoint.write_config(wd, tiny_config("stage1_pretrain.py", data["captions"]))
  before = (wd / "config.json").read_text()
  other = tiny_config("stage1_pretrain.py", data["captions"])
  other.variant = "released"
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train_stage(other, str(wd), progress=False)
  assert str(e.value).startswith(
      f"{wd} was written for stage 1 size=tiny variant=paper (its config.json), this run asks "
      f"for stage 1 size=tiny variant=released; they differ in variant")
  assert (wd / "config.json").read_text() == before and sorted(os.listdir(wd)) == ["config.json"]


def test_a_from_stage_of_another_size_is_refused_naming_both(data, tmp_path):
  prev = tmp_path / "small_stage1"
  small = tiny_config("stage1_pretrain.py", data["captions"])
  small.size = "small"
  checkpoint.write_config(prev, small)
  cfg = tiny_config("stage2_finetune.py", data["hawk"], **{"init.from_stage": str(prev)})
  with pytest.raises(workdir_lib.WorkdirError, match=f"config.init.from_stage={prev} was "
                     "written for size=small .*, this run is size=tiny"):
    train_stage(cfg, str(tmp_path / "run"), progress=False)
  assert not (tmp_path / "run").exists()


def test_records_of_another_motion_mode_are_refused_before_anything_is_written(data, tmp_path):
  wd = tmp_path / "run"
  cfg = tiny_config("stage1_pretrain.py", data["captions"], **{"data.motion": "flow_mask"})
  with pytest.raises(ConfigError, match="flow_soft.*flow_mask.*--config.data.motion"):
    train_stage(cfg, str(wd), progress=False)
  assert not wd.exists()


@pytest.mark.parametrize("override,message", [
    ({"mesh_shape": (3, -1, 1)}, "--config.mesh_shape=(3, -1, 1): the fixed axes (3 devices) "
                                 "do not divide the 8 devices"),
    ({"mesh_shape": (2, 8, 1)}, "--config.mesh_shape=(2, 8, 1) needs 16 devices, there are 8"),
    ({"data.motion": "optical"}, "--config.data.motion='optical': expected one of flow_mask, "
                                 "flow_soft, frame_diff"),
    ({"train.num_steps": 0}, "--config.train.num_steps=0: expected an integer >= 1"),
    ({"data.motion_text_backend": "auto"}, "--config.data.motion_text_backend='auto': "
                                           "expected one of rules, spacy"),
])
def test_config_mistakes_are_one_line_naming_the_key(override, message):
  cfg = tiny_config("stage1_pretrain.py", "/nonexistent", **override)
  with pytest.raises(ConfigError) as e:
    check_config(cfg)
  assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_cli_prints_config_mistakes_as_one_line(data, tmp_path, capsys):
  base = ["--config", f"{ROOT / 'configs/stage1_pretrain.py'}:size=tiny",
          "--workdir", str(tmp_path / "run"), f"--config.data.dir={data['captions']}",
          "--config.data.num_frames=4"]
  cases = [(["--config.mesh_shape=(3,-1,1)"], "do not divide the 8 devices"),
           # 4 rows over a 1x8x1 mesh's 8 batch devices
           (["--config.mesh_shape=(1,-1,1)"], "--config.train.batch_size=4 / grad_accum_steps"
                                              "=1 = 4 rows per micro-batch do not split over "
                                              "the 8 devices"),
           (["--config.data.num_frames=64"], "--config.data.num_frames")]
  for extra, message in cases:
    assert train_cli.main(base + extra) == 2, extra
    err = capsys.readouterr().err  # INFO logs, then the error
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in err, err
