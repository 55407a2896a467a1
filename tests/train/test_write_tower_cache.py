"""Tower cache: the cached frame tokens equal the towers' output on the unaugmented loader
frames, a train step from them equals one from the pixels, the loader's other fields do not
change, reruns resume, and a cache that does not fit the run is refused. Tiny model, data made
and pre-extracted here."""
import os

import jax
import numpy as np
import pytest

from data_pipelines import extract, loaders, records, synthetic, tower_cache
from hawk_jax import checkpoint
from hawk_jax.models.hawk import Hawk, split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import random_params
from hawk_jax.train import data as train_data
from hawk_jax.train import write_tower_cache
from hawk_jax.train.loop import train_stage
from tests.support import FAST, final_trainable, tiny_config

NUM_FRAMES = FAST["data.num_frames"]
# float16 keeps a value to half an ulp: |x| * 2^-11, or 2^-25 below the normal range.
F16_REL, F16_ABS = 2.0 ** -11, 2.0 ** -25


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("tower_cache_data")
  paths = synthetic.make_synthetic_dataset(str(root / "raw"), num_videos=6, size=64,
                                           num_frames=8)
  assert extract.main(["--source", "hawk", "--annotations", paths["train"],
                       "--test_annotations", paths["test"], "--videos_dir",
                       paths["videos_dir"], "--out_dir", str(root / "hawk"), "--num_frames",
                       str(NUM_FRAMES), "--size", "64", "--motion", "flow_soft", "--workers",
                       "1", "--no_progress"]) == 0
  return str(root / "hawk")


def _cfg(data_dir, stage_file="stage2_finetune.py", **over):
  return tiny_config(stage_file, data_dir, **over)


@pytest.fixture(scope="module")
def towers(data, tmp_path_factory):
  """A towers workdir as `convert from-torch` writes one (config.json and frozen/), random."""
  workdir = str(tmp_path_factory.mktemp("towers"))
  cfg = _cfg(data)
  config = HawkConfig.from_stage_config(cfg)
  params = random_params(config, 3)
  checkpoint.write_config(workdir, cfg)
  checkpoint.save_params(os.path.join(workdir, "frozen"), split_params(params, config)[1])
  return workdir, cfg, params


def _cache(towers_dir, data_dir, out, *extra):
  return write_tower_cache.main(["--towers", towers_dir, "--data_dir", data_dir, "--out", out,
                            "--batch_size", "3", "--shard_size", "2", "--devices", "1",
                            "--workers", "2", "--no_progress", *extra])


@pytest.fixture(scope="module")
def caches(data, towers, tmp_path_factory):
  root = tmp_path_factory.mktemp("caches")
  out = {}
  for dtype in ("float16", "float32"):
    out[dtype] = str(root / dtype)
    assert _cache(towers[0], data, out[dtype], "--dtype", dtype) == 0
  return out


def _loader(data_dir, cfg, frame_tokens_dir=""):
  config = HawkConfig.from_stage_config(cfg)
  examples = loaders.TrainExamples(
      stage=2, num_frames=NUM_FRAMES, image_size=64, num_visual_tokens=config.num_visual_tokens,
      max_len=160, ml_max_len=cfg.data.ml_max_len, seed=5, augment=False,
      motion_text_backend="rules", frame_tokens_dir=frame_tokens_dir)
  return loaders.make_train_loader(data_dir, examples, train_data.tokenizer_for(cfg),
                                   batch_size=2)


def test_cached_tokens_equal_the_towers_on_unaugmented_frames(data, towers, caches):
  _, cfg, params = towers
  model = Hawk(HawkConfig.from_stage_config(cfg))
  source = records.open_split(data, "train")
  frames, motion = zip(*(loaders.plain_visual(records.decode_record(source[i]), NUM_FRAMES,
                                              64)[:2] for i in range(len(source))))
  want = jax.jit(lambda p, f, m: model.apply({"params": p}, f, m,
                                             method=Hawk.frozen_frame_tokens))(
                                                 params, np.stack(frames), np.stack(motion))
  f16 = tower_cache.TokenSource(caches["float16"], "train")
  f32 = tower_cache.TokenSource(caches["float32"], "train")
  assert len(f16) == len(source) == 5
  for i in range(len(source)):
    for key, exact in zip(("appearance", "motion"), want):
      exact = np.asarray(exact[i])
      assert f16[i][key].shape == exact.shape == (NUM_FRAMES, 8, 64)
      assert f16[i][key].dtype == np.float32
      np.testing.assert_allclose(f32[i][key], exact, rtol=1e-5, atol=1e-5)
      err = np.abs(f16[i][key] - exact)
      assert (err <= F16_REL * np.abs(exact) + F16_ABS).all(), err.max()
    assert f16[i]["video"] == records.decode_record(source[i])["video"]
  from array_record.python.array_record_data_source import ArrayRecordDataSource
  def size(d):
    return len(ArrayRecordDataSource([tower_cache.shard_path(d, "train", 0)])[0])
  assert size(caches["float16"]) < 0.6 * size(caches["float32"])
  assert tower_cache.TokenSource(caches["float16"], "test")[0]["record"] == 0


def test_loader_with_cache_changes_only_frames_and_motion(data, towers, caches):
  cfg = towers[1]
  pixels = next(iter(_loader(data, cfg)))
  cached = next(iter(_loader(data, cfg, frame_tokens_dir=caches["float16"])))
  assert set(pixels) == set(cached)
  assert pixels["frames"].shape == (2, NUM_FRAMES, 64, 64, 3)
  for key in ("frames", "motion"):
    assert cached[key].shape == (2, NUM_FRAMES, 8, 64) and cached[key].dtype == np.float32
  for key in set(pixels) - {"frames", "motion"}:
    np.testing.assert_array_equal(pixels[key], cached[key], err_msg=key)
  assert cached["labels"].max() > 0 and cached["ml_visual_mask"].sum() > 0


def _trained(workdir):
  """(step-1 metrics, trainable parameters) of a finished one-step run."""
  import json
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    metrics = [json.loads(line) for line in f if '"loss"' in line][0]
  return metrics, final_trainable(workdir)[0]


def test_train_step_from_cache_equals_step_from_pixels(data, towers, caches, tmp_path):
  """One step of the training loop (stage 1) on cached tokens against one on the unaugmented
  pixels: same losses and gradient norm, same parameter update."""
  runs = {}
  for name, over in (("pixels", {"data.augment": False}),
                     ("float32", {"data.frame_tokens_dir": caches["float32"]}),
                     ("float16", {"data.frame_tokens_dir": caches["float16"]})):
    cfg = _cfg(data, "stage1_pretrain.py", **{"train.num_steps": 1, "init.from_stage": towers[0],
                                              **over})
    r = train_stage(cfg, str(tmp_path / name), progress=False)
    assert r.steps == 1 and np.isfinite(r.last_loss)
    runs[name] = _trained(str(tmp_path / name))
  ref_metrics, ref_params = runs["pixels"]
  assert ref_metrics["l_vl"] > 0 and ref_metrics["grad_norm"] > 0
  # The loop's FLOP count (hawk_jax/flops.py on the traced step) sees the towers skipped
  # (seen: 1.373 -> 1.191 GFLOP at tiny, whose LLM dominates).
  assert runs["float16"][0]["step_gflop"] < 0.95 * ref_metrics["step_gflop"]
  # Seen: losses within 2e-7 (relative) for both caches; update differences 4e-5 lr
  # (float32 cache) and 7e-3 lr (float16 cache).
  for dtype, metric_tol, update_tol in (("float32", 1e-5, 1e-3), ("float16", 2e-3, 3e-2)):
    metrics, params = runs[dtype]
    for k in ("loss", "l_vl", "l_ml", "l_mv", "grad_norm"):
      np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=metric_tol,
                                 err_msg=f"{dtype} {k}")
    # Adam's first update moves each parameter by about lr (lr * sign(gradient)), so a
    # parameter's update difference is measured in units of lr (RMS over its elements).
    lr = ref_metrics["learning_rate"]
    ref = dict(jax.tree_util.tree_flatten_with_path(ref_params)[0])
    for path, a in jax.tree_util.tree_flatten_with_path(params)[0]:
      rms = np.sqrt(np.mean((a - ref[path]) ** 2)) / lr
      assert rms < update_tol, (dtype, jax.tree_util.keystr(path), rms)


def test_rerun_resumes_and_other_towers_are_refused(data, towers, caches, tmp_path, capsys):
  out = caches["float16"]
  shard = tower_cache.shard_path(out, "train", 1)
  before = open(shard, "rb").read()
  assert _cache(towers[0], data, out) == 0  # finished: nothing computed
  assert "0 computed now" in capsys.readouterr().out
  os.remove(shard)
  with open(shard + ".tmp-999", "wb") as f:  # what a killed run leaves
    f.write(b"partial")
  with pytest.raises(tower_cache.CacheError, match="incomplete"):
    tower_cache.TokenSource(out, "train")
  assert _cache(towers[0], data, out, "--split", "train") == 0
  assert "train: 5 records, 2 computed now" in capsys.readouterr().out
  assert open(shard, "rb").read() == before
  assert not [n for n in os.listdir(os.path.dirname(shard)) if ".tmp-" in n]

  other = str(tmp_path / "other_towers")  # the same towers but the motion query tokens
  frozen = split_params(towers[2], HawkConfig.from_stage_config(towers[1]))[1]
  frozen["motion"] = dict(frozen["motion"], query_tokens=frozen["motion"]["query_tokens"] + 1)
  checkpoint.write_config(other, towers[1])
  checkpoint.save_params(os.path.join(other, "frozen"), frozen)
  assert _cache(other, data, out) == 1
  assert "other settings" in capsys.readouterr().err and "towers_probe" in open(
      os.path.join(out, tower_cache.META_FILE)).read()
  # A run whose frozen towers are not the cache's is refused before training.
  cfg = _cfg(data, **{"data.frame_tokens_dir": out, "init.from_stage": other})
  with pytest.raises(ValueError, match="differ"):
    train_data.train_iterator(cfg)


def test_cache_that_does_not_fit_is_refused(data, towers, caches):
  cfg, out = towers[1], caches["float16"]
  with pytest.raises(tower_cache.CacheError, match="num_frames"):
    loaders.make_train_dataset(data, loaders.TrainExamples(
        stage=2, num_frames=3, image_size=64, num_visual_tokens=16, max_len=96, augment=False,
        frame_tokens_dir=out), train_data.tokenizer_for(cfg))
  with pytest.raises(ValueError, match="augment"):
    loaders.make_train_dataset(data, loaders.TrainExamples(
        stage=2, num_frames=NUM_FRAMES, image_size=64, num_visual_tokens=16, max_len=96,
        augment=True, frame_tokens_dir=out), train_data.tokenizer_for(cfg))
  released = _cfg(data, **{"data.frame_tokens_dir": out,
                           "model.trainable_query_tokens_motion": True})
  with pytest.raises(ValueError, match="query_tokens_motion"):
    train_data.train_iterator(released)
  with pytest.raises(FileNotFoundError, match="no split 'validation'"):
    tower_cache.TokenSource(out, "validation")
  # Records joined by position must be the same videos.
  source = records.open_split(data, "train")
  shuffled = [source[i] for i in (1, 0, 2, 3, 4)]
  joined = tower_cache.JoinedSource(shuffled, tower_cache.TokenSource(out, "train"))
  with pytest.raises(tower_cache.CacheError, match="record 0: the dataset has video"):
    joined[0]  # noqa: B018
  with pytest.raises(tower_cache.CacheError, match="has 4 records"):
    tower_cache.JoinedSource(shuffled[:4], tower_cache.TokenSource(out, "train"))


def test_storage_dtypes_round_trip_and_float16_range_is_checked():
  rng = np.random.default_rng(0)
  x = rng.normal(0, 3, (2, 3, 4)).astype(np.float32)
  for dtype, rel in (("float32", 0.0), ("float16", 2.0 ** -11), ("bfloat16", 2.0 ** -8)):
    rec = tower_cache.decode_record(tower_cache.encode_record(7, "a/b.mp4", x, -x, dtype), dtype)
    assert rec["record"] == 7 and rec["video"] == "a/b.mp4"
    assert np.all(np.abs(rec["appearance"] - x) <= rel * np.abs(x) + 1e-30)
    np.testing.assert_array_equal(rec["motion"], -rec["appearance"])
  with pytest.raises(tower_cache.CacheError, match="float16's range"):
    tower_cache.encode_record(0, "v", x * 1e5, x, "float16")
  tower_cache.encode_record(0, "v", x * 1e5, x, "bfloat16")
  with pytest.raises(tower_cache.CacheError, match="non-finite"):
    tower_cache.encode_record(0, "v", x * np.nan, x, "float32")
