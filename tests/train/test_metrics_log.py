"""MetricsWriter: grouped TensorBoard tags (train/, perf/, eval/), flat metrics.jsonl keys, text
and image summaries, read back from the event files."""
import json
import struct

import cv2
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from hawk_jax.train import metrics_log
from hawk_jax.train.metrics_log import MetricsWriter, tensorboard_tag

# What the training loop logs at a step (hawk_jax/train/step.py + loop.py), and at the end.
STEP_METRICS = {"loss": 2.5, "loss_vl": 2.0, "loss_ml": 3.0, "loss_mv": 0.5,
                "grad_norm": 1.25, "learning_rate": 1e-5, "skipped": 0.0, "skip_streak": 0.0,
                "samples_per_s": 12.0, "tokens_per_s": 3072.0, "step_gflop": 45.5, "mfu": 0.25,
                "records_skipped": 1.0}


def _events(workdir):
  """Every event of the run's TensorBoard files (TFRecord framing: length, crc, data, crc)."""
  out = []
  for path in sorted((workdir / metrics_log.TENSORBOARD_DIR).iterdir()):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      out.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
      pos += 12 + length + 4
  return out


def _values(workdir):
  return [(e.step, v) for e in _events(workdir) for v in e.summary.value]


@pytest.mark.parametrize("key,tag", [
    ("loss", "train/loss"), ("loss_mv", "train/loss_mv"), ("learning_rate", "train/learning_rate"),
    ("grad_norm", "train/grad_norm"), ("skipped", "train/skipped"),
    ("records_skipped", "train/records_skipped"), ("samples_per_s", "perf/samples_per_s"),
    ("tokens_per_s", "perf/tokens_per_s"), ("step_gflop", "perf/step_gflop"),
    ("mfu", "perf/mfu"), ("eval_loss", "eval/loss"), ("eval_bleu_4", "eval/bleu_4"),
    ("custom/thing", "custom/thing"),
])
def test_tags(key, tag):
  assert tensorboard_tag(key) == tag


def test_scalars_grouped_in_tensorboard_and_flat_in_jsonl(tmp_path):
  writer = MetricsWriter(str(tmp_path))
  writer.write(1, STEP_METRICS)
  writer.write(2, dict(STEP_METRICS, loss=2.0))
  writer.write(2, {"eval_loss": 1.75})
  writer.close()
  lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines == [{"step": 1, **STEP_METRICS}, {"step": 2, **dict(STEP_METRICS, loss=2.0)},
                   {"step": 2, "eval_loss": 1.75}]
  scalars = {(step, v.tag): v.simple_value for step, v in _values(tmp_path)}
  tags = {tag for _, tag in scalars}
  assert tags == {tensorboard_tag(k) for k in STEP_METRICS} | {"eval/loss"}
  assert {t.split("/")[0] for t in tags} == {"train", "perf", "eval"}
  assert {t for t in tags if t.startswith("perf/")} == {
      "perf/samples_per_s", "perf/tokens_per_s", "perf/step_gflop", "perf/mfu"}
  assert scalars[(1, "train/loss")] == 2.5 and scalars[(2, "train/loss")] == 2.0
  assert scalars[(1, "perf/mfu")] == 0.25 and scalars[(2, "eval/loss")] == 1.75
  assert scalars[(1, "train/learning_rate")] == pytest.approx(1e-5)


def test_text_and_images(tmp_path):
  writer = MetricsWriter(str(tmp_path))
  config = json.dumps({"stage": 2, "train": {"batch_size": 4}}, indent=2)
  writer.write_text(0, "run/config", config, preformatted=True)
  writer.write_text(10, "eval/samples", "**clip_0001**: a man falls")
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (4, 8, 10, 3), np.uint8)          # T=4 frames of 8x10
  motion = (frames * rng.random((4, 8, 10, 1))).astype(np.uint8)
  writer.write_images(0, "data/frames_motion", np.stack([frames, motion]))
  writer.write_images(0, "data/one", np.ones((5, 6, 1), np.float32) * 0.5)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
      {"step": 1, "loss": 1.0}]  # text and images stay out of metrics.jsonl

  values = _values(tmp_path)
  texts = {v.tag: (step, v.tensor.string_val[0].decode()) for step, v in values
           if v.HasField("tensor")}
  assert texts["run/config/text_summary"][0] == 0
  assert texts["run/config/text_summary"][1].splitlines() == [
      "    " + line for line in config.splitlines()]
  assert texts["eval/samples/text_summary"] == (10, "**clip_0001**: a man falls")
  assert all(v.metadata.plugin_data.plugin_name == "text" for _, v in values
             if v.HasField("tensor"))

  images = {v.tag: v.image for _, v in values if v.HasField("image")}
  assert set(images) == {"data/frames_motion", "data/one"}
  grid_pb = images["data/frames_motion"]
  grid = cv2.cvtColor(cv2.imdecode(np.frombuffer(grid_pb.encoded_image_string, np.uint8),
                                   cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
  gap = metrics_log.IMAGE_GAP
  assert grid.shape == (2 * 8 + gap, 4 * 10 + 3 * gap, 3)
  assert (grid_pb.height, grid_pb.width, grid_pb.colorspace) == (grid.shape[0], grid.shape[1], 3)
  for t in range(4):
    x = t * (10 + gap)
    np.testing.assert_array_equal(grid[:8, x:x + 10], frames[t])
    np.testing.assert_array_equal(grid[8 + gap:, x:x + 10], motion[t])
  one = cv2.imdecode(np.frombuffer(images["data/one"].encoded_image_string, np.uint8),
                     cv2.IMREAD_COLOR)
  assert one.shape == (5, 6, 3) and (one == 128).all()


def test_image_grid_refuses_other_shapes():
  with pytest.raises(ValueError, match="write_images wants"):
    metrics_log.image_grid(np.zeros((4, 5), np.uint8))
  with pytest.raises(ValueError, match="write_images wants"):
    metrics_log.image_grid(np.zeros((2, 4, 5, 7), np.uint8))


def test_disabled_writer_writes_nothing(tmp_path):
  writer = MetricsWriter(str(tmp_path / "off"), enabled=False)
  writer.write(1, {"loss": 1.0})
  writer.write_text(1, "t", "x")
  writer.write_images(1, "i", np.zeros((2, 2, 3), np.uint8))
  writer.close()
  assert not (tmp_path / "off").exists()
