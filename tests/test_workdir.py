"""Reading a workdir (hawk_jax/workdir.py): the parameters of any finished step round-trip, a
part or a group reads alone, and every problem is an error that names it."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.common import base_config
from hawk_jax import checkpoint
from hawk_jax.models.hawk import Hawk, split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.workdir import WorkdirError, load_params
from tests.support import write_random_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("stage2"))
  saved = write_random_workdir(path, base_config(2, "size=tiny"), steps=(10, 20))
  return path, saved


def _assert_trees_equal(got, want):
  flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
  flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
  assert len(flat_got) == len(flat_want)
  for path, x in flat_got:
    np.testing.assert_array_equal(np.asarray(x), np.asarray(flat_want[path]),
                                  err_msg=jax.tree_util.keystr(path))


def test_load_workdir_round_trip_and_step_choice(workdir):
  path, saved = workdir
  config = HawkConfig.from_stage_config(checkpoint.read_config(path))
  loaded = load_params(path, dtype="auto")
  cfg, model, params = loaded.cfg, Hawk(loaded.config), loaded.params
  trainable, frozen = split_params(params, config)
  _assert_trees_equal(frozen, saved["frozen"])
  _assert_trees_equal(trainable, saved[20])                 # latest by default
  assert model.config.llm.dtype == "float32" and cfg.stage == 2
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
  params10 = load_params(path, step=10).params
  _assert_trees_equal(split_params(params10, config)[0], saved[10])


def test_load_workdir_errors_name_the_problem(workdir, tmp_path):
  path, _ = workdir
  with pytest.raises(WorkdirError, match=r"no finished step 15; steps there: \[10, 20\]"):
    load_params(path, step=15)
  with pytest.raises(WorkdirError, match="no config.json"):
    load_params(str(tmp_path))
  broken = str(tmp_path / "no_frozen")
  shutil.copytree(path, broken)
  shutil.rmtree(os.path.join(broken, "frozen"))
  with pytest.raises(WorkdirError, match="frozen: missing"):
    load_params(broken)
  other = str(tmp_path / "other_size")
  shutil.copytree(path, other)
  cfg = checkpoint.read_config(other)
  cfg.model.llm.intermediate_size = 192
  checkpoint.write_config(other, cfg)
  with pytest.raises(WorkdirError, match=r"llm/layers/mlp/down_proj/kernel.*\(2, 256, 128\).*"
                                         r"\(2, 192, 128\)"):
    load_params(other)


def test_parts_and_groups_read_alone(workdir):
  path, saved = workdir
  frozen = load_params(path, parts=("frozen",))
  assert frozen.step is None
  _assert_trees_equal(frozen.params, saved["frozen"])
  vit = load_params(path, groups=[("appearance", "vit"), ("motion", "proj")], step=10)
  assert set(vit.params) == {"appearance", "motion"}
  _assert_trees_equal(vit.params["appearance"], {"vit": saved["frozen"]["appearance"]["vit"]})
  _assert_trees_equal(vit.params["motion"], {"proj": saved[10]["motion"]["proj"]})
  assert vit.step == 10
  bf16 = load_params(path, dtype="bfloat16",
                     groups=[("appearance", "vit"), ("appearance", "video_qformer")])
  # Frozen towers are cast; the video Q-Formers keep float32 parameters (HawkConfig.with_dtype).
  assert bf16.config.vision.dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(bf16.params["appearance"]["vit"])} == {
      jnp.dtype("bfloat16")}
  assert {x.dtype for x in jax.tree.leaves(bf16.params["appearance"]["video_qformer"])} == {
      jnp.dtype("float32")}
  with pytest.raises(ValueError, match="parts"):
    load_params(path, parts=("everything",))
