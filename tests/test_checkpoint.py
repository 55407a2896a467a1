"""Checkpoints that can be trusted: checksums independent of sharding, and each kind of damage
(truncated, garbled, missing files) found at restore with the step and the reason named."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hawk_jax import checkpoint, checksums


def _tree():
  rng = np.random.default_rng(0)
  return {"w": rng.standard_normal((64, 300)).astype(np.float32),
          "b": {"bias": rng.standard_normal((7,)).astype(np.float32),
                "h": jnp.asarray(rng.standard_normal((5, 3)), jnp.bfloat16)}}


def test_checksum_is_the_same_on_any_mesh_and_matches_a_numpy_reference():
  tree = _tree()
  mesh = jax.make_mesh((8,), ("x",))
  sharded = dict(tree, w=jax.device_put(tree["w"], NamedSharding(mesh, P("x"))))
  sums = checksums.tree_checksums(tree)
  assert checksums.tree_checksums(sharded) == sums
  # sum_i bits_i * (2i+1) * 0x9E3779B1 mod 2**32, written out in numpy.
  bits = tree["w"].view(np.uint32).ravel().astype(np.uint64)
  weights = ((np.arange(bits.size, dtype=np.uint64) * 2 + 1) * 0x9E3779B1) % 2**32
  assert sums["['w']"] == int((bits * weights % 2**32).sum() % 2**32)
  # Any single-bit change of any element changes it; so does swapping two elements.
  for flat_index, bit in [(0, 0), (12345, 31), (64 * 300 - 1, 17)]:
    w = tree["w"].copy()
    w.view(np.uint32).reshape(-1)[flat_index] ^= np.uint32(1 << bit)
    assert checksums.mismatches(dict(tree, w=w), sums) == ["['w']"]
  w = tree["w"].copy()
  w[0, 0], w[0, 1] = w[0, 1], w[0, 0]
  assert checksums.mismatches(dict(tree, w=w), sums) == ["['w']"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """Steps 1 and 2 of a small tree, saved as training saves them."""
  root = tmp_path_factory.mktemp("ckpts") / "checkpoints"
  tree = _tree()
  ckpts = checkpoint.TrainCheckpoints(root, keep=3, async_save=False)
  for step in (1, 2):
    ckpts.save(step, tree, {"mu": tree}, meta={"stage": 1})
  ckpts.close()
  return root, tree


def _copy(saved, tmp_path):
  root, tree = saved
  dest = tmp_path / "checkpoints"
  shutil.copytree(root, dest)
  return dest, tree


def _biggest_array_file(step_dir, item="trainable"):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir / item) for f in fs
           if os.sep + "d" + os.sep in os.path.join(d, f)]
  return max(files, key=os.path.getsize)


def _restore(root, tree, step=2):
  ckpts = checkpoint.TrainCheckpoints(root, keep=3, async_save=False)
  try:
    return ckpts.restore(step, checkpoint.abstract_like(tree),
                         checkpoint.abstract_like({"mu": tree}))
  finally:
    ckpts.close()


def test_an_intact_step_restores_and_records_its_checksums(saved, tmp_path):
  root, tree = _copy(saved, tmp_path)
  out = _restore(root, tree)
  np.testing.assert_array_equal(np.asarray(out["trainable"]["w"]), tree["w"])
  assert out["meta"]["checksums"]["trainable"] == checksums.tree_checksums(tree)
  assert out["meta"]["checksums"]["opt_state"] == checksums.tree_checksums({"mu": tree})


def _garble(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _truncate(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])


@pytest.mark.parametrize("damage,reason", [
    # A flipped byte in a zstd-compressed array file restores without an error as other
    # numbers: only the checksums find it.
    (lambda s: _garble(_biggest_array_file(s)), "differ from the checksums recorded"),
    (lambda s: _garble(_biggest_array_file(s, "opt_state")), "array(s) of opt_state differ"),
    (lambda s: _truncate(_biggest_array_file(s)), "is not valid for value of size"),
    (lambda s: os.remove(_biggest_array_file(s)), "trainable"),
    (lambda s: os.remove(s / "trainable" / "_METADATA"), "_METADATA"),
    (lambda s: os.remove(s / "meta" / "metadata"), "metadata"),
])
def test_each_kind_of_damage_names_the_step_and_why(saved, tmp_path, damage, reason):
  root, tree = _copy(saved, tmp_path)
  damage(root / "2")
  with pytest.raises(checkpoint.DamagedCheckpoint) as e:
    _restore(root, tree)
  assert e.value.step == 2 and reason in str(e.value)
  assert str(e.value).startswith(f"checkpoint step 2 in {root} is damaged: ")
  assert "TensorStore(" not in str(e.value)  # one line, not a whole TensorStore spec
  # The step before is intact.
  np.testing.assert_array_equal(np.asarray(_restore(root, tree, step=1)["trainable"]["w"]),
                                tree["w"])


def test_a_damaged_step_moved_aside_is_kept_and_no_longer_listed(saved, tmp_path):
  root, _ = _copy(saved, tmp_path)
  ckpts = checkpoint.TrainCheckpoints(root, keep=3, async_save=False)
  dest = ckpts.move_aside(2)
  assert ckpts.all_steps() == [1] and ckpts.latest_step() == 1
  assert dest == root.parent / "damaged_checkpoints" / "2" and (dest / "trainable").is_dir()
  ckpts.close()
