"""train.frozen="reference": a stage whose frozen towers came unchanged from `init.from_stage`
writes frozen_ref.json instead of another frozen/ copy, trains exactly as with "copy", and
every reader of a workdir's frozen towers follows the reference (chains too); a reference to a
deleted workdir is an error naming both paths. Tiny model; data from the package fixture."""
import json
import logging
import os
import re
import shutil

import jax
import numpy as np
import pytest

from hawk_jax import checkpoint
from hawk_jax.convert.cli import read_for_export
from hawk_jax.models.hawk import split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import abstract_params
from hawk_jax.train.loop import train_stage
from hawk_jax.train.write_tower_cache import load_towers
from hawk_jax.workdir import WorkdirError, load_params
from tests.support import final_trainable, tiny_config


def _stored_frozen(workdir):
  """The frozen towers a workdir resolves to, read straight from the folder holding them."""
  config = HawkConfig.from_stage_config(checkpoint.read_config(workdir))
  frozen_abs = split_params(abstract_params(config), config)[1]
  tree = checkpoint.restore_params(checkpoint.frozen_dir(workdir),
                                   checkpoint.abstract_like(frozen_abs))
  return jax.tree.map(np.asarray, tree)


def _assert_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _refer(workdir, target):
  """A hand-written reference (write_frozen_ref would flatten a chain)."""
  with open(os.path.join(workdir, checkpoint.FROZEN_REF), "w") as f:
    json.dump({"workdir": os.path.abspath(target)}, f)


@pytest.fixture(scope="module")
def stages(data, tmp_path_factory):
  """Stage 1, then stage 2 from it once with each train.frozen mode; the "reference" run is
  interrupted after one step and rerun, so its resume finds frozen_ref.json, not frozen/."""
  root = tmp_path_factory.mktemp("frozen_ref")
  s1 = str(root / "s1")
  train_stage(tiny_config("stage1_pretrain.py", data["captions"], **{"train.num_steps": 2}), s1,
              progress=False)
  out = {"s1": s1}
  for mode in ("copy", "reference"):
    cfg = tiny_config("stage2_finetune.py", data["hawk"],
               **{"train.num_steps": 2, "init.from_stage": s1, "train.frozen": mode})
    out[mode] = str(root / f"s2_{mode}")
    if mode == "reference":
      train_stage(cfg, out[mode], stop_after=1, progress=False)
    out[mode + "_result"] = train_stage(cfg, out[mode], progress=False)
  return out


def test_reference_stage_writes_no_copy_and_trains_the_same(stages):
  s1, copy, ref = stages["s1"], stages["copy"], stages["reference"]
  assert not os.path.exists(os.path.join(ref, "frozen"))
  with open(os.path.join(ref, checkpoint.FROZEN_REF)) as f:
    assert json.load(f) == {"workdir": os.path.abspath(s1)}
  assert checkpoint.frozen_dir(ref) == os.path.join(os.path.abspath(s1), "frozen")
  assert os.path.isdir(os.path.join(copy, "frozen"))
  assert not os.path.exists(os.path.join(copy, checkpoint.FROZEN_REF))
  assert stages["reference_result"].steps == stages["copy_result"].steps == 2
  (a, sa), (b, sb) = final_trainable(copy), final_trainable(ref)
  assert sa == sb == 2
  _assert_equal(a, b)                                       # bit for bit on CPU
  _assert_equal(_stored_frozen(ref), _stored_frozen(copy))


def test_load_workdir_follows_the_reference(stages):
  s1, ref = stages["s1"], stages["reference"]
  cfg = checkpoint.read_config(ref)
  config = HawkConfig.from_stage_config(cfg)
  params = load_params(ref).params
  trainable, frozen = split_params(params, config)
  _assert_equal(frozen, _stored_frozen(s1))
  _assert_equal(trainable, final_trainable(ref)[0])


def test_a_chain_of_references_resolves(stages, tmp_path):
  s1, ref = stages["s1"], stages["reference"]
  chained = str(tmp_path / "chained")
  shutil.copytree(ref, chained)
  _refer(chained, ref)                                      # chained -> s2 -> s1
  assert checkpoint.frozen_dir(chained) == os.path.join(os.path.abspath(s1), "frozen")
  config = HawkConfig.from_stage_config(checkpoint.read_config(chained))
  params = load_params(chained).params
  _assert_equal(split_params(params, config)[1], _stored_frozen(s1))
  towers = load_towers(chained).params
  want = _stored_frozen(s1)
  for b in ("appearance", "motion"):
    np.testing.assert_array_equal(np.asarray(towers[b]["query_tokens"]),
                                  want[b]["query_tokens"])
  _, exported = read_for_export(chained, include_frozen=False)
  np.testing.assert_array_equal(np.asarray(exported["motion"]["query_tokens"]),
                                want["motion"]["query_tokens"])
  # A new reference names the workdir holding frozen/, so the intermediates may go.
  later = str(tmp_path / "later")
  assert checkpoint.write_frozen_ref(later, chained) == os.path.abspath(s1)
  with open(os.path.join(later, checkpoint.FROZEN_REF)) as f:
    assert json.load(f) == {"workdir": os.path.abspath(s1)}
  with pytest.raises(FileExistsError, match="never both"):
    checkpoint.write_frozen_ref(s1, chained)


def test_dangling_or_cyclic_reference_is_a_clear_error(stages, tmp_path):
  gone = str(tmp_path / "gone")
  shutil.copytree(stages["s1"], gone)
  dangling = str(tmp_path / "dangling")
  shutil.copytree(stages["reference"], dangling)
  _refer(dangling, gone)
  assert checkpoint.has_params(checkpoint.frozen_dir(dangling))
  shutil.rmtree(gone)
  both = re.escape(f"{os.path.join(dangling, checkpoint.FROZEN_REF)} refers to the frozen "
                   f"parameters of {gone}, but {gone} has neither frozen/ nor")
  with pytest.raises(FileNotFoundError, match=both):
    checkpoint.frozen_dir(dangling)
  with pytest.raises(WorkdirError, match=both):
    load_params(dangling)
  with pytest.raises(WorkdirError, match=both):
    load_towers(dangling)
  # Resuming or linking from it fails too, rather than continuing with random towers.
  cfg = tiny_config("stage2_finetune.py", "unused",
                    **{"train.num_steps": 2, "init.from_stage": dangling})
  with pytest.raises(WorkdirError, match=both):
    train_stage(cfg, str(tmp_path / "next"), progress=False)

  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  os.makedirs(a)
  os.makedirs(b)
  _refer(a, b)
  _refer(b, a)
  with pytest.raises(ValueError, match="cycle"):
    checkpoint.frozen_dir(a)
  with open(os.path.join(b, checkpoint.FROZEN_REF), "w") as f:
    f.write("{}")
  with pytest.raises(ValueError, match=r'expected \{"workdir"'):
    checkpoint.frozen_dir(b)


def test_reference_without_previous_towers_saves_a_copy(data, tmp_path, caplog):
  wd = str(tmp_path / "fresh")
  cfg = tiny_config("stage1_pretrain.py", data["captions"],
                    **{"train.num_steps": 2, "train.frozen": "reference"})
  with caplog.at_level(logging.WARNING, logger="hawk_jax.train"):
    train_stage(cfg, wd, stop_after=1, progress=False)
  assert any("saving a copy" in r.getMessage() for r in caplog.records)
  assert checkpoint.has_params(os.path.join(wd, "frozen"))
  assert not os.path.exists(os.path.join(wd, checkpoint.FROZEN_REF))
  bad = tiny_config("stage1_pretrain.py", data["captions"], **{"train.frozen": "link"})
  with pytest.raises(ValueError, match=r"train.frozen='link'"):
    train_stage(bad, str(tmp_path / "bad"), progress=False)
