"""Grain loaders (data_pipelines/loaders.py) over ArrayRecord splits written per the record
contract: layouts, the shared crop, determinism, worker independence, and exact resumption
from iterator state (plain and through an Orbax CheckpointManager)."""
import dataclasses
import os

import cv2
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_pipelines import extract, loaders, records, synthetic
from hawk_jax import sharding
from hawk_jax.models.model_config import hawk_config
from hawk_jax.text import motion_text, prompts
from hawk_jax.text.caption import normalize_caption
from hawk_jax.text.tokenizer import load_tokenizer
from tests.support import write_records

NV = hawk_config("tiny").num_visual_tokens  # 16
SIZE, STORED_FRAMES, NUM_FRAMES, IMAGE_SIZE = 32, 6, 4, 24
NUM_RECORDS = 12

DESCRIPTIONS = [
    "A man in a red shirt falls down the stairs while a woman watches him.",
    "A white car collides with a motorcycle at the intersection.",
    "The man grabs the woman's bag and runs away.",
    "A car hits a pedestrian who is crossing the road.",
]
CAPTIONS = ["A dog runs across the park.", "Two cars crash on a highway.",
            "A cyclist falls off his bike.", "People walk in the street."]


def _raw_example(i, weight_kind, rng, description=None, caption=None, qa=None):
  """One contract record: smooth random frames, a full (255) or left-half motion mask."""
  coarse = rng.integers(0, 256, (STORED_FRAMES, 8, 8, 3)).astype(np.uint8)
  frames = np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) for f in coarse])
  weights = np.zeros((STORED_FRAMES, SIZE, SIZE), np.uint8)
  if weight_kind == "full":
    weights[:] = 255
  else:
    weights[:, :, :SIZE // 2] = 255
  clip = {"frames": frames, "weights": weights,
          "timestamps": np.arange(STORED_FRAMES) * 0.5, "indices": np.arange(STORED_FRAMES) * 5,
          "fps": 10.0, "num_source_frames": STORED_FRAMES * 5}
  if qa is None:
    qa = [{"q": f"What happens in clip {i}?", "a": f"Event number {i} happens."}] * (1 + i % 3)
  return records.make_example(
      records.encode_visual(clip), video=f"clips/clip_{i:02d}.mp4", source="test",
      motion_mode="flow_mask",
      description=DESCRIPTIONS[i % 4] if description is None else description,
      caption=CAPTIONS[i % 4] if caption is None else caption, qa=qa)


def weight_kind_of(i):
  return "full" if i % 2 == 0 else "half"


def clip_number(record):
  """Which generated example a stored record is (TFDS writes them in key-hash order)."""
  return int(record["video"].split("clip_")[1].split(".")[0])


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer()


@pytest.fixture(scope="module")
def contract_dir(tmp_path_factory):
  rng = np.random.default_rng(0)
  examples = {"train": [_raw_example(i, weight_kind_of(i), rng) for i in range(NUM_RECORDS)]}
  root = tmp_path_factory.mktemp("contract")
  write_records(examples, root)
  return str(root)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  """The real path: data_pipelines.synthetic clips through data_pipelines.extract."""
  root = str(tmp_path_factory.mktemp("synthetic"))
  paths = synthetic.make_synthetic_dataset(root, num_videos=6, size=48, num_frames=12)
  out = os.path.join(root, "out")
  rc = extract.main(["--source", "hawk", "--annotations", paths["train"], "--test_annotations",
                     paths["test"], "--videos_dir", paths["videos_dir"], "--out_dir", out,
                     "--num_frames", "6", "--size", "48", "--workers", "0", "--no_progress"])
  assert rc == 0
  return out


_EXAMPLE_FIELDS = {f.name for f in dataclasses.fields(loaders.TrainExamples)}


def _examples(**over):
  fields = dict(stage=2, num_frames=NUM_FRAMES, image_size=IMAGE_SIZE, num_visual_tokens=NV,
                max_len=160, seed=3)
  fields.update(over)
  return loaders.TrainExamples(**fields)


def _split(kw):
  """(TrainExamples fields, pipeline arguments) of keyword arguments."""
  return ({k: v for k, v in kw.items() if k in _EXAMPLE_FIELDS},
          {k: v for k, v in kw.items() if k not in _EXAMPLE_FIELDS})


def _loader(data_dir, tok, batch_size=2, **kw):
  fields, rest = _split(kw)
  return loaders.make_train_loader(data_dir, _examples(**fields), tok, batch_size=batch_size,
                                   **rest)


def _dataset(data_dir, tok, **kw):
  fields, rest = _split(kw)
  return loaders.make_train_dataset(data_dir, _examples(**fields), tok, **rest)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# -------------------------------------------------------------------------------- layouts

def test_train_batch_shapes_and_dtypes(contract_dir, tok):
  batch = next(iter(_loader(contract_dir, tok)))
  ml_len = 1 + NV // 2 + prompts.MAX_CAPTION_TOKENS
  expected = {
      "frames": ((2, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
      "motion": ((2, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
      **{k: ((2, 160), np.int32) for k in ("input_ids", "attention_mask", "visual_mask",
                                           "labels")},
      **{k: ((2, ml_len), np.int32) for k in ("ml_input_ids", "ml_attention_mask",
                                              "ml_visual_mask", "ml_labels")},
  }
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      **expected, loaders.SKIPPED_FIELD: ((2,), np.int32)}
  assert batch[loaders.SKIPPED_FIELD].tolist() == [0, 0]
  # The layout the planner, the benchmark and the train step take it from (the host-side
  # skip counter is not sent to the devices, so it is not in it).
  assert {k: (s.shape, s.dtype) for k, s in _examples().batch_spec(2).items()} == expected
  for row in range(2):
    mask, vis, labels, ids = (batch[k][row] for k in ("attention_mask", "visual_mask", "labels",
                                                      "input_ids"))
    n = int(mask.sum())
    assert mask[:n].all() and not mask[n:].any()  # right padding
    positions = np.flatnonzero(vis)
    assert len(positions) == NV and (np.diff(positions) == 1).all()
    assert (ids[positions] == tok.unk_id).all()
    supervised = labels != -100
    assert not supervised[n:].any() and not supervised[positions].any()
    assert (labels[supervised] == ids[supervised]).all()
    assert (ids[supervised] == tok.eos_id).sum() >= 1
    assert batch["ml_input_ids"][row, 0] == tok.bos_id
    np.testing.assert_array_equal(np.flatnonzero(batch["ml_visual_mask"][row]),
                                  np.arange(1, 1 + NV // 2))


def test_stage2_examples_follow_their_records(contract_dir, tok):
  ds = _dataset(contract_dir, tok, shuffle=False, max_len=400)
  source = records.open_split(contract_dir, "train")
  swapped = 0
  for i in range(NUM_RECORDS):
    ex, rec = ds[i], records.decode_record(source[i])
    answers = tok.decode(np.where(ex["labels"] >= 0, ex["labels"], 0))
    qa_answers = [p["a"] for p in rec["qa"]]
    if answers.startswith(rec["description"]):
      swapped += 1
      qa_answers = [rec["description"]] + qa_answers[1:]
    assert answers == " ".join(qa_answers)
    ml_text = motion_text.extract_motion_text(rec["description"], backend="rules")
    assert ml_text
    assert tok.decode(np.where(ex["ml_labels"] >= 0, ex["ml_labels"], 0)) == ml_text + "\n"
    timestamps = rec["timestamps"][loaders.select_frames(STORED_FRAMES, NUM_FRAMES)]
    assert prompts.timestamps_message(timestamps) in tok.decode(ex["input_ids"])
  assert 0 < swapped < NUM_RECORDS  # the 0.5 description swap happens, and not always


def test_stage1_caption_examples(contract_dir, tok):
  ds = _dataset(contract_dir, tok, shuffle=False, stage=1, max_len=64)
  source = records.open_split(contract_dir, "train")
  for i in range(NUM_RECORDS):
    ex, written = ds[i], CAPTIONS[clip_number(records.decode_record(source[i])) % 4]
    np.testing.assert_array_equal(np.flatnonzero(ex["visual_mask"]), np.arange(1, 1 + NV))
    assert ex["input_ids"][0] == tok.bos_id
    caption = tok.decode(np.where(ex["labels"] >= 0, ex["labels"], 0))
    assert caption == normalize_caption(written) + "\n"
    assert tok.decode(np.where(ex["ml_labels"] >= 0, ex["ml_labels"], 0)) == \
        motion_text.extract_motion_text(written, backend="rules") + "\n"


def test_same_crop_on_both_streams(contract_dir, tok):
  ds = _dataset(contract_dir, tok, shuffle=False)
  plain = _dataset(contract_dir, tok, shuffle=False, augment=False)
  source = records.open_split(contract_dir, "train")
  cropped = 0
  for i in range(NUM_RECORDS):
    ex, rec = ds[i], records.decode_record(source[i])
    frames, motion = ex["frames"].astype(int), ex["motion"].astype(int)
    if weight_kind_of(clip_number(rec)) == "full":
      np.testing.assert_array_equal(ex["motion"], ex["frames"])
    else:
      same = (motion == frames).all(-1)
      black = (motion == 0).all(-1)
      assert (same | black).mean() > 0.85, i  # only the mask edge mixes the two
      assert same.mean() > 0.2 and black.mean() > 0.2
      # Left of the mask edge is the frame, right of it is black, in every frame.
      cols_same = same.mean(axis=(0, 1))
      edge = np.argmax(cols_same < 0.5)
      assert cols_same[:max(edge - 1, 1)].min() > 0.95 and cols_same[edge + 1:].max() < 0.05
    cropped += not np.array_equal(ex["frames"], plain[i]["frames"])
    # Without augmentation the frames are the stored ones, sampled and plainly resized.
    pick = loaders.select_frames(STORED_FRAMES, NUM_FRAMES)
    np.testing.assert_array_equal(plain[i]["frames"],
                                  loaders.resize_frames(rec["frames"][pick], IMAGE_SIZE))
  assert cropped == NUM_RECORDS
  # The released behaviour (shared_crop=False): each stream draws its own box.
  apart = _dataset(contract_dir, tok, shuffle=False, shared_crop=False)
  full = [i for i in range(NUM_RECORDS)
          if weight_kind_of(clip_number(records.decode_record(source[i]))) == "full"]
  for i in full:
    np.testing.assert_array_equal(apart[i]["frames"], ds[i]["frames"])
    assert not np.array_equal(apart[i]["motion"], apart[i]["frames"])


def test_random_resized_crop_box_bounds():
  rng = np.random.default_rng(0)
  for _ in range(2000):
    top, left, h, w = loaders.random_resized_crop_box(rng, 48, 64)
    assert 0 <= top and top + h <= 48 and 0 <= left and left + w <= 64
    assert 0.5 * 48 * 64 * 0.9 <= h * w <= 48 * 64
    assert 0.7 < w / h < 1.43
  np.testing.assert_array_equal(loaders.select_frames(6, 4), [0, 1, 3, 4])
  np.testing.assert_array_equal(loaders.select_frames(2, 4), [0, 0, 1, 1])


# ------------------------------------------------------------------ determinism and state

def test_loader_is_deterministic_per_seed(contract_dir, tok):
  first = _take(iter(_loader(contract_dir, tok)), 4)
  again = _take(iter(_loader(contract_dir, tok)), 4)
  _assert_same_batches(first, again)
  other = _take(iter(_loader(contract_dir, tok, seed=4)), 4)
  assert not all(np.array_equal(a["frames"], b["frames"]) for a, b in zip(first, other))


def test_restored_iterator_continues_exactly(contract_dir, tok):
  # 8 batches of 2 cross the 12-record epoch boundary (a new shuffle order there).
  reference = _take(iter(_loader(contract_dir, tok)), 8)
  it = iter(_loader(contract_dir, tok))
  _assert_same_batches(_take(it, 3), reference[:3])
  state = it.get_state()
  resumed = iter(_loader(contract_dir, tok))
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 5), reference[3:])


def test_orbax_checkpoint_restores_the_iterator(contract_dir, tok, tmp_path):
  reference = _take(iter(_loader(contract_dir, tok)), 6)
  it = iter(_loader(contract_dir, tok))
  _take(it, 3)
  params = {"w": np.arange(4.0)}
  with ocp.CheckpointManager(str(tmp_path / "ckpt"),
                             options=ocp.CheckpointManagerOptions(max_to_keep=2)) as manager:
    manager.save(3, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                            data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  _take(it, 2)  # the live iterator moves on; the checkpoint must not
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
    assert manager.latest_step() == 3
    resumed = iter(_loader(contract_dir, tok))
    restored = manager.restore(3, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params),
        data=grain.checkpoint.CheckpointRestore(resumed)))
  np.testing.assert_array_equal(restored["params"]["w"], params["w"])
  _assert_same_batches(_take(resumed, 3), reference[3:])


def test_worker_processes_give_the_same_batches_and_resume(contract_dir, tok):
  reference = _take(iter(_loader(contract_dir, tok)), 5)
  it = iter(_loader(contract_dir, tok, worker_count=2))
  try:
    _assert_same_batches(_take(it, 3), reference[:3])
    state = it.get_state()
    _assert_same_batches(_take(it, 2), reference[3:])
    # Rewinding the running workers to the saved state replays the same batches (a fresh
    # iterator resuming from a state is tested in-process and through Orbax above).
    it.set_state(state)
    _assert_same_batches(_take(it, 2), reference[3:])
  finally:
    it.close()


def test_per_host_shards_partition_each_global_batch(contract_dir, tok):
  whole = _dataset(contract_dir, tok, augment=False)
  hosts = [_dataset(contract_dir, tok, augment=False, shard_index=h, shard_count=2)
           for h in range(2)]
  for step in range(6):
    np.testing.assert_array_equal(hosts[step % 2][step // 2]["input_ids"], whole[step]["input_ids"])
  finite = _dataset(contract_dir, tok, augment=False, num_epochs=1, shard_index=1,
                    shard_count=5)
  assert len(finite) == NUM_RECORDS // 5


def test_host_rows_assemble_the_one_process_batch(contract_dir, tok):
  """With the per-host batch given, host h holds rows [h*b, (h+1)*b) of each global batch, so
  the pod's global batch equals the one-process batch row for row."""
  b, hosts = 2, 3
  whole = _dataset(contract_dir, tok, augment=False)
  shards = [_dataset(contract_dir, tok, augment=False, shard_index=h, shard_count=hosts,
                     host_batch=b) for h in range(hosts)]
  for step in range(3):
    for h in range(hosts):
      for row in range(b):
        np.testing.assert_array_equal(shards[h][step * b + row]["input_ids"],
                                      whole[step * b * hosts + h * b + row]["input_ids"])
  finite = _dataset(contract_dir, tok, augment=False, num_epochs=1, shard_index=0,
                    shard_count=hosts, host_batch=b)
  assert len(finite) == NUM_RECORDS // (b * hosts) * b
  assert finite[1:3][0]["input_ids"].tolist() == finite[1]["input_ids"].tolist()


def test_put_on_mesh(contract_dir, tok):
  batch = next(iter(_loader(contract_dir, tok, batch_size=4)))
  mesh = sharding.make_mesh((2, 2, 2))
  on_mesh = sharding.put_on_mesh(batch, mesh)
  for key, value in batch.items():
    arr = on_mesh[key]
    assert arr.shape == value.shape and arr.dtype == value.dtype
    assert arr.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_array_equal(np.asarray(arr), value)
  with pytest.raises(TypeError, match="'video'"):
    sharding.put_on_mesh({"video": np.array(["a", "b"])}, mesh)


# ------------------------------------------------------------------------------ bad input

def test_bad_inputs_get_clear_errors(contract_dir, tok, tmp_path):
  with pytest.raises(KeyError, match="no split 'validation'"):
    _loader(contract_dir, tok, split="validation")
  with pytest.raises(ValueError, match="training stage must be one of"):
    _loader(contract_dir, tok, stage=3)
  with pytest.raises(ValueError, match="positive and even"):
    _loader(contract_dir, tok, num_visual_tokens=15)
  with pytest.raises(ValueError, match="max_len 10 leaves no room"):
    _loader(contract_dir, tok, max_len=10)
  with pytest.raises(FileNotFoundError, match="no written TFDS dataset"):
    _loader(str(tmp_path), tok)
  textless = _raw_example(0, "full", np.random.default_rng(1), description="", caption="",
                         qa=[])
  # A split where no record can make a prompt: at once, naming the data dir and the split.
  only_textless = write_records({"train": [textless]}, tmp_path / "textless")
  for stage, why in ((1, "neither caption nor description"), (2, "neither QA pairs nor a")):
    with pytest.raises(ValueError, match=f"split 'train': none of its 1 records can make a "
                                         f"stage-{stage} .*{why}") as e:
      _dataset(only_textless, tok, stage=stage)
    assert only_textless in str(e.value)


# ----------------------------------------------------------------------------- evaluation

def test_eval_items_and_left_padded_batches(synthetic_dir, tok):
  source = records.open_split(synthetic_dir, "test")
  recs = [records.decode_record(source[i]) for i in range(len(source))]
  ds = loaders.make_eval_dataset(synthetic_dir, "test", tokenizer=tok, num_frames=NUM_FRAMES,
                                 image_size=IMAGE_SIZE, num_visual_tokens=NV)
  assert len(ds) == sum(1 + len(r["qa"]) for r in recs)
  items = [ds[i] for i in range(len(ds))]
  assert [it["task"] for it in items[:1 + len(recs[0]["qa"])]] == \
      ["description"] + ["qa"] * len(recs[0]["qa"])
  for item in items:
    rec = recs[item["record"]]
    assert item["video"] == rec["video"]
    if item["task"] == "description":
      assert item["question"] == prompts.DESCRIPTION_QUESTIONS[0]
      assert item["reference"] == rec["description"]
    else:
      assert {"q": item["question"], "a": item["reference"]} in rec["qa"]
    assert tok.decode(item["input_ids"]).endswith(item["question"] + " [/INST]")
    assert item["visual_mask"].sum() == NV
    pick = loaders.select_frames(len(rec["frames"]), NUM_FRAMES)
    np.testing.assert_array_equal(item["frames"], loaders.resize_frames(rec["frames"][pick],
                                                                         IMAGE_SIZE))
    np.testing.assert_array_equal(item["motion"], loaders.resize_frames(rec["motion"][pick],
                                                                        IMAGE_SIZE))
  batches = list(loaders.eval_batches(ds, 3, tok.pad_id))
  assert [len(b["task"]) for b in batches] == [3] * (len(ds) // 3) + (
      [len(ds) % 3] if len(ds) % 3 else [])
  first = batches[0]
  width = first["input_ids"].shape[1]
  for row, item in enumerate(items[:3]):
    n = len(item["input_ids"])
    np.testing.assert_array_equal(first["input_ids"][row, width - n:], item["input_ids"])
    assert first["attention_mask"][row].tolist() == [0] * (width - n) + [1] * n
    assert first["visual_mask"][row].sum() == NV
  fixed = next(loaders.eval_batches(ds, 2, tok.pad_id, prompt_len=300))
  assert fixed["input_ids"].shape == (2, 300)


def test_train_loader_on_extracted_synthetic_data(synthetic_dir, tok):
  batch = next(iter(_loader(synthetic_dir, tok, max_len=400)))
  assert batch["frames"].shape == (2, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3)
  assert (batch["labels"] != -100).sum(axis=1).min() > 5
  assert (batch["ml_labels"] != -100).sum(axis=1).min() > 1  # synthetic text has verbs


# ------------------------------------------------------------- records that make no prompt

GAPPY_RECORDS, TEXTLESS = 6, 3  # clip_03 has no caption, no description and no QA


@pytest.fixture(scope="module")
def gappy_dir(tmp_path_factory):
  rng = np.random.default_rng(5)
  examples = [_raw_example(i, "full", rng, **(dict(description="", caption="", qa=[])
                                              if i == TEXTLESS else {}))
              for i in range(GAPPY_RECORDS)]
  return write_records({"train": examples}, tmp_path_factory.mktemp("gappy"))


def _row_clips(batch, plain_frames):
  """The clip number each row's frames are (augment=False: the plain resize of a record)."""
  return [next(c for c, f in plain_frames.items() if np.array_equal(f, row))
          for row in batch["frames"]]


@pytest.mark.parametrize("stage", [1, 2])
def test_records_that_make_no_prompt_are_skipped_and_counted(gappy_dir, tok, stage, caplog):
  source = records.open_split(gappy_dir, "train")
  decoded = [records.decode_record(source[i]) for i in range(len(source))]
  plain = {clip_number(r): loaders.plain_visual(r, NUM_FRAMES, IMAGE_SIZE)[0] for r in decoded}
  epochs = 3
  with caplog.at_level("WARNING", logger="data_pipelines.loaders"):
    batches = _take(iter(_loader(gappy_dir, tok, stage=stage, augment=False, max_len=400,
                                 description_swap_probability=0.0)),
                    epochs * GAPPY_RECORDS // 2)
  skipped = 0
  for batch in batches:
    assert batch["frames"].shape == (2, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch[loaders.SKIPPED_FIELD].dtype == np.int32
    skipped += int(batch[loaders.SKIPPED_FIELD].sum())
    clips = _row_clips(batch, plain)
    assert TEXTLESS not in clips
    for row, clip in enumerate(clips):  # the text is the substitute's, as its frames are
      text = tok.decode(np.where(batch["labels"][row] >= 0, batch["labels"][row], 0))
      assert (f"Event number {clip} happens." in text if stage == 2
              else text == normalize_caption(CAPTIONS[clip % 4]) + "\n")
  assert skipped == epochs  # the textless record, once per epoch
  warned = [r.getMessage() for r in caplog.records if "clip_03.mp4" in r.getMessage()]
  assert len(warned) == 1 and "skipped: neither" in warned[0], warned
  # A pod's hosts load the same rows, counter included.
  whole = _dataset(gappy_dir, tok, stage=stage, augment=False)
  hosts = [_dataset(gappy_dir, tok, stage=stage, augment=False, shard_index=h, shard_count=2,
                    host_batch=1) for h in range(2)]
  for k in range(2 * GAPPY_RECORDS):
    a, b = hosts[k % 2][k // 2], whole[k]
    assert a[loaders.SKIPPED_FIELD] == b[loaders.SKIPPED_FIELD]
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


def test_skipping_works_on_cached_frame_tokens(gappy_dir, tok, tmp_path):
  """With a tower cache the substitute's cached tokens come with its text (the joined record
  is what is replaced)."""
  from data_pipelines import tower_cache
  source = records.open_split(gappy_dir, "train")
  cache = str(tmp_path / "tokens")
  tower_cache.write_meta(cache, tower_cache.CacheMeta(
      storage_dtype="float32", num_frames=NUM_FRAMES, image_size=IMAGE_SIZE, num_query_tokens=2,
      hidden_size=3, normalize_pixels=False, towers_workdir="-", towers_probe="-",
      compute_dtype="float32"))
  tower_cache.write_split_info(cache, "train", dataset_dir=gappy_dir, num_records=len(source),
                               shard_size=len(source))
  videos = [records.decode_record(source[i])["video"] for i in range(len(source))]
  tokens = [np.full((NUM_FRAMES, 2, 3), clip_number({"video": v}), np.float32) for v in videos]
  tower_cache.write_shard(tower_cache.shard_path(cache, "train", 0), [
      tower_cache.encode_record(i, v, t, t, "float32") for i, (v, t) in enumerate(zip(videos,
                                                                                      tokens))])
  batches = _take(iter(_loader(gappy_dir, tok, augment=False, frame_tokens_dir=cache,
                               max_len=400, description_swap_probability=0.0)),
                  GAPPY_RECORDS // 2)
  clips = [int(row[0, 0, 0]) for b in batches for row in b["frames"]]
  assert TEXTLESS not in clips and sorted(set(clips)) == [0, 1, 2, 4, 5]
  assert sum(int(b[loaders.SKIPPED_FIELD].sum()) for b in batches) == 1
  for b in batches:
    for row in range(2):
      clip = int(b["frames"][row, 0, 0, 0])
      assert f"Event number {clip} happens." in tok.decode(
          np.where(b["labels"][row] >= 0, b["labels"][row], 0))


# ---------------------------------------------------------------- records against the config

def test_check_records_fit_names_the_flag_to_change(contract_dir):
  fits = dict(motion_mode="flow_mask", num_frames=STORED_FRAMES, image_size=SIZE)
  loaders.check_records_fit(contract_dir, "train", **fits)
  # Fewer frames and a smaller size than stored are what the loader samples and resizes to.
  loaders.check_records_fit(contract_dir, "train", motion_mode="flow_mask",
                            num_frames=NUM_FRAMES, image_size=IMAGE_SIZE)
  for over, flag in ((dict(motion_mode="flow_soft"), "--config.data.motion=flow_mask"),
                     (dict(num_frames=8), "--config.data.num_frames=6"),
                     (dict(image_size=48), "--size 48")):
    with pytest.raises(ValueError) as e:
      loaders.check_records_fit(contract_dir, "train", **{**fits, **over})
    message = str(e.value)
    assert contract_dir in message and flag in message, message
  with pytest.raises(ValueError) as e:
    loaders.check_records_fit(contract_dir, "train", motion_mode="flow_soft", num_frames=8,
                              image_size=224)
  message = str(e.value)
  for part in ("'flow_mask' motion", "'flow_soft'", "--motion flow_soft", "6 frames per video",
               "asks for 8", "--num_frames 8", "32x32 frames", "asks for 224",
               "--config.data.image_size=32"):
    assert part in message, (part, message)
