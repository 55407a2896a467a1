"""Fixtures of the training tests: a small synthetic dataset, pre-extracted once for the
package (captions for stage 1, HAWK descriptions and QA for stage 2)."""
import pytest

from data_pipelines import extract, synthetic


@pytest.fixture(scope="package")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("train_data")
  paths = synthetic.make_synthetic_dataset(str(root / "raw"), num_videos=10, size=64,
                                           num_frames=12)
  common = ["--videos_dir", paths["videos_dir"], "--num_frames", "4", "--size", "64",
            "--motion", "flow_soft", "--workers", "1", "--no_progress"]
  assert extract.main(["--source", "captions", "--annotations", paths["captions"],
                       "--out_dir", str(root / "captions")] + common) == 0
  assert extract.main(["--source", "hawk", "--annotations", paths["train"], "--test_annotations",
                       paths["test"], "--out_dir", str(root / "hawk")] + common) == 0
  return {"captions": str(root / "captions"), "hawk": str(root / "hawk")}
