"""A stage with `--workdir gs://...` (the local GCS emulator of tests/gcs_emulator.py, Orbax's
production OCDBT format): the same parameters as a local workdir, resumed from the bucket, and
read back from it by evaluation."""
from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath

from hawk_jax.eval import cli as eval_cli
from hawk_jax.train.loop import train_stage
from hawk_jax.workdir import checkpoint_steps
from tests.support import final_trainable, tiny_config


def _cfg(data_dir):
  return tiny_config("stage1_pretrain.py", data_dir, **{"train.num_steps": 4})


def test_stage_on_gs_equals_local_resumes_and_evaluates(data, tmp_path, gcs_dir):
  local = str(tmp_path / "local")
  train_stage(_cfg(data["captions"]), local, progress=False)

  remote = f"{gcs_dir}/stage1"
  r1 = train_stage(_cfg(data["captions"]), remote, stop_after=3, progress=False)
  assert r1.steps == 3 and checkpoint_steps(remote) == [2]
  r2 = train_stage(_cfg(data["captions"]), remote, progress=False)
  assert r2.resumed_from == 2 and r2.steps == 4
  # the loss ends span both invocations, read back from the bucket's metrics log
  ref = train_stage(_cfg(data["captions"]), local, progress=False)  # finished: its result.json
  assert r2.first_loss is not None and (r2.first_loss, r2.last_loss) == (ref.first_loss,
                                                                          ref.last_loss)

  wd = epath.Path(remote)
  for name in ("config.json", "metrics.jsonl", "result.json"):
    assert (wd / name).exists(), name
  assert (wd / "frozen").is_dir() and list((wd / "tensorboard").iterdir())
  assert json.loads((wd / "result.json").read_text())["steps"] == 4
  a, sa = final_trainable(local)
  b, sb = final_trainable(remote)
  assert sa == sb == 4
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)

  # evaluate reads the gs:// checkpoint and writes its predictions and report there; they equal
  # those of the local workdir.
  outs = {}
  for name, workdir in (("local", local), ("remote", remote)):
    out = f"{gcs_dir}/eval_{name}"
    assert eval_cli.main(["--checkpoint", workdir, "--data_dir", data["hawk"], "--out", out,
                          "--no_judge", "--max_new_tokens", "4", "--max_items", "4",
                          "--layout", "single"]) == 0
    outs[name] = epath.Path(out)
  for name in ("predictions.jsonl", "report.json"):
    assert (outs["local"] / name).read_text() == (outs["remote"] / name).read_text(), name
