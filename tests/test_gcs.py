"""gs:// end to end against the local emulator (tests/gcs_emulator.py): the emulator itself
(what Orbax's OCDBT format needs of it), then every reader and writer of the project."""
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorstore as ts
from etils import epath

from tests.convert.test_hawk_names import (
  _equal_trees,
  _write_workdir,
  original_trainable_names,
  randomize,
)
from tests.eval.test_judge import StubServer, make_judge, records_with_markers

# --- the emulator -----------------------------------------------------------------------------


def test_epath_and_subprocess_see_the_bucket(gcs_dir):
  path = epath.Path(gcs_dir) / "a" / "b.txt"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("hello")
  assert path.read_text() == "hello"
  assert [p.name for p in (epath.Path(gcs_dir) / "a").iterdir()] == ["b.txt"]
  # A subprocess inherits the settings through os.environ.
  code = f"from etils import epath; print(epath.Path({str(path)!r}).read_text())"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "hello"


def test_ocdbt_revalidates_and_commits_after_a_read(gcs_dir):
  """What failed against the stock emulator ("Malformed StorageGeneration"): a second read
  of an OCDBT database, and a write after a read, from a fresh tensorstore context."""
  spec = {"driver": "ocdbt", "base": f"{gcs_dir}/db/"}
  kv = ts.KvStore.open(spec).result()
  kv.write("k1", b"v1").result()
  kv.write("k2", b"v2").result()
  reader = ts.KvStore.open(spec, context=ts.Context()).result()
  assert reader.read("k1").result().value == b"v1"
  assert reader.read("k2").result().value == b"v2"
  reader.write("k3", b"v3").result()
  assert ts.KvStore.open(spec, context=ts.Context()).result().read("k3").result().value == b"v3"


def test_generation_preconditions(gcs_dir):
  """Conditional requests behave as on GCS: OCDBT's manifest commits depend on them."""
  no_value = b"\x02"  # tensorstore's StorageGeneration::NoValue(): "only if absent"
  kv = ts.KvStore.open(f"{gcs_dir}/plain/").result()
  first = kv.write("x", b"1", if_equal=no_value).result().generation
  assert first
  assert not kv.write("x", b"2", if_equal=no_value).result().generation  # exists: refused
  second = kv.write("x", b"3", if_equal=first).result().generation
  assert second and second != first
  assert not kv.write("x", b"4", if_equal=first).result().generation  # stale: refused
  read = kv.read("x").result()  # a media download: its generation comes from the headers
  assert read.value == b"3" and read.stamp.generation == second
  # Unchanged since `second`: the server answers 304 and the value is not sent again.
  assert kv.read("x", if_not_equal=second).result().state == "unspecified"
  assert kv.read("x", if_not_equal=first).result().value == b"3"


def test_orbax_ocdbt_checkpoint(gcs_dir):
  import orbax.checkpoint as ocp
  tree = {"a": np.arange(6.0).reshape(2, 3), "b": {"c": np.ones(4, np.int32)}}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(f"{gcs_dir}/ckpt", tree)
  assert (epath.Path(gcs_dir) / "ckpt" / "manifest.ocdbt").exists()
  for _ in range(2):  # a second restore revalidates the cached manifest
    with ocp.StandardCheckpointer() as ckptr:
      out = ckptr.restore(f"{gcs_dir}/ckpt")
    np.testing.assert_array_equal(out["a"], tree["a"])
    np.testing.assert_array_equal(out["b"]["c"], tree["b"]["c"])


def test_gcsfs_is_the_plain_filesystem(gcs_bucket):
  """Without the HNS/zonal extension, which would wait on a gRPC lookup per bucket."""
  import fsspec
  import gcsfs.core
  assert fsspec.get_filesystem_class("gs") is gcsfs.core.GCSFileSystem


# --- helpers ----------------------------------------------------------------------------------


def upload_tree(local, remote) -> str:
  """Copies a local file or folder tree to gs:// (what a user's `gsutil cp -r` does)."""
  local, remote = pathlib.Path(local), epath.Path(remote)
  if local.is_dir():
    remote.mkdir(parents=True, exist_ok=True)
    for child in sorted(local.iterdir()):
      upload_tree(child, remote / child.name)
  else:
    epath.Path(local).copy(remote, overwrite=True)
  return str(remote)


def download_tree(remote, local) -> str:
  remote, local = epath.Path(remote), pathlib.Path(local)
  if remote.is_dir():
    local.mkdir(parents=True, exist_ok=True)
    for child in remote.iterdir():
      download_tree(child, local / child.name)
  else:
    remote.copy(local, overwrite=True)
  return str(local)


# --- checkpoints (hawk_jax/checkpoint.py), Orbax's default OCDBT format -------------------------


def test_params_and_train_checkpoints_on_gs(gcs_dir):
  import jax
  import jax.numpy as jnp

  from hawk_jax import checkpoint, checksums
  params = {"a": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.ones(4, jnp.int32)}}
  checkpoint.save_params(f"{gcs_dir}/frozen", params)
  assert checkpoint.has_params(f"{gcs_dir}/frozen")
  assert jax.tree.map(lambda s: (s.shape, s.dtype), checkpoint.saved_shapes(f"{gcs_dir}/frozen")) \
      == jax.tree.map(lambda x: (x.shape, x.dtype), params)
  part = checkpoint.restore_params(f"{gcs_dir}/frozen",
                                   {"a": jax.ShapeDtypeStruct((2, 3), jnp.float32)})
  np.testing.assert_array_equal(part["a"], params["a"])

  ckpts = checkpoint.TrainCheckpoints(f"{gcs_dir}/checkpoints", keep=2)
  for step in (1, 2, 3):
    ckpts.save(step, {"w": jnp.full(3, float(step))}, {"m": jnp.zeros(3)}, meta={"stage": 2})
  ckpts.close()
  ckpts = checkpoint.TrainCheckpoints(f"{gcs_dir}/checkpoints")
  assert ckpts.latest_step() == 3
  target = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}
  out = ckpts.restore(3, target, {"m": jax.ShapeDtypeStruct((3,), jnp.float32)})
  np.testing.assert_array_equal(out["trainable"]["w"], np.full(3, 3.0))
  assert out["meta"]["stage"] == 2 and out["meta"]["step"] == 3
  assert out["meta"]["checksums"]["trainable"] == checksums.tree_checksums(
      {"w": jnp.full(3, 3.0)})
  ckpts.save(4, {"w": jnp.full(3, 4.0)}, {"m": jnp.zeros(3)})  # a resumed run saves on
  ckpts.close()
  assert sorted(int(p.name) for p in epath.Path(f"{gcs_dir}/checkpoints").iterdir()
                if p.name.isdigit()) == [3, 4]
  # A damaged step is moved aside in the bucket too (kept, out of keep-N's way).
  ckpts = checkpoint.TrainCheckpoints(f"{gcs_dir}/checkpoints")
  dest = ckpts.move_aside(4)
  assert ckpts.all_steps() == [3] and str(dest) == f"{gcs_dir}/damaged_checkpoints/4"
  assert (dest / "trainable").is_dir()
  ckpts.close()


# --- tokenizer, tensor files, compile cache -----------------------------------------------------


def test_tokenizer_from_gs(gcs_dir):
  from hawk_jax.text.tokenizer import default_tokenizer_path, load_tokenizer
  remote = upload_tree(default_tokenizer_path(), f"{gcs_dir}/llama/tokenizer.model")
  local = load_tokenizer()
  text = "A man runs across the street."
  for path in (remote, f"{gcs_dir}/llama"):  # the file, or the folder holding it
    tok = load_tokenizer(path)
    assert tok.path == remote
    assert tok.encode(text, bos=True) == local.encode(text, bos=True)
    assert pickle.loads(pickle.dumps(tok)).encode(text) == local.encode(text)
  with pytest.raises(FileNotFoundError):
    load_tokenizer(f"{gcs_dir}/missing.model")


def test_tensor_files_from_gs(gcs_dir, tmp_path):
  import torch
  from safetensors.numpy import save_file

  from hawk_jax import tensor_files
  a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.ones(2, np.int64)}
  save_file(a, str(tmp_path / "model.safetensors"))
  torch.save({"model": {"z": torch.arange(3.0)}}, str(tmp_path / "w.pth"))
  (tmp_path / "config.json").write_text('{"k": 1}')
  root = upload_tree(tmp_path, f"{gcs_dir}/files")
  for got in (tensor_files.load_state_dict(f"{root}/model.safetensors"),
              tensor_files.load_state_dict(root)):  # a folder of safetensors
    assert set(got) == set(a) and all(np.array_equal(got[k], a[k]) for k in a)
  np.testing.assert_array_equal(tensor_files.load_state_dict(f"{root}/w.pth")["model"]["z"],
                                np.arange(3.0))
  assert tensor_files.read_json(f"{root}/config.json") == {"k": 1}
  assert tensor_files.safetensors_keys(f"{root}/model.safetensors") == {"x", "y"}
  with tensor_files.local_copy_of(f"{root}/w.pth") as local:
    assert pathlib.Path(local).read_bytes() == (tmp_path / "w.pth").read_bytes()
  assert not os.path.exists(local)
  with tensor_files.local_path_for(f"{gcs_dir}/out/folder") as local:
    os.makedirs(os.path.join(local, "sub"))
    pathlib.Path(local, "sub", "f.txt").write_text("x")
  assert (epath.Path(gcs_dir) / "out" / "folder" / "sub" / "f.txt").read_text() == "x"


def test_jax_compile_cache_on_gs(gcs_dir):
  """compile_cache.enable(gs://...) leaves the files to JAX, which writes them through epath."""
  code = ("import jax, jax.numpy as jnp; from hawk_jax import compile_cache; "
          f"compile_cache.enable({gcs_dir + '/xla'!r}, min_compile_secs=0); "
          "print(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(3)).sum())")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  assert list(epath.Path(f"{gcs_dir}/xla").iterdir())


# --- training outputs: metrics, run summary ------------------------------------------------------


def _event_scalars(data: bytes) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in a TensorBoard event file (TFRecord framing)."""
  from tensorboardX.proto import event_pb2
  out, pos = [], 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
    out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  return out


def test_metrics_writer_on_gs(gcs_dir):
  from hawk_jax.train.metrics_log import MetricsWriter
  wd = epath.Path(gcs_dir) / "run"
  writer = MetricsWriter(str(wd), sync_secs=0)  # upload at every write
  writer.write(1, {"loss": 2.5})
  assert json.loads((wd / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.5}
  writer.write(2, {"loss": 2.0, "lr": 0.1})
  writer.close()
  resumed = MetricsWriter(str(wd))  # a resumed run keeps the lines before it
  resumed.write(3, {"loss": 1.5})
  resumed.close()
  lines = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [x["step"] for x in lines] == [1, 2, 3] and lines[1]["lr"] == pytest.approx(0.1)
  events = sorted((wd / "tensorboard").iterdir())
  assert len(events) == 2 and all(e.name.startswith("events.out.tfevents.") for e in events)
  scalars = sorted(s for e in events for s in _event_scalars(e.read_bytes()))
  assert scalars == [(1, "train/loss", 2.5), (2, "train/loss", 2.0),
                     (2, "train/lr", pytest.approx(0.1)), (3, "train/loss", 1.5)]
  MetricsWriter(str(epath.Path(gcs_dir) / "off"), enabled=False).close()
  assert not (epath.Path(gcs_dir) / "off").exists()


def test_run_summary_reads_gs(gcs_dir):
  from hawk_jax.train import run_summary
  wd = epath.Path(gcs_dir)
  (wd / "stage1").mkdir(parents=True)
  (wd / "stage1" / "result.json").write_text(json.dumps(
      {"steps": 4, "first_loss": 3.0, "last_loss": 2.0}))
  text = run_summary.summarize(gcs_dir)
  assert "stage1: steps=4 loss 3.0000 -> 2.0000" in text and "stage2: not run" in text


# --- evaluation: report and judge cache ----------------------------------------------------------


@pytest.fixture
def server(monkeypatch):
  """The stub OpenAI-compatible endpoint of tests/eval/test_judge.py."""
  monkeypatch.setenv("NO_PROXY", "127.0.0.1")
  monkeypatch.setenv("no_proxy", "127.0.0.1")
  stub = StubServer()
  yield stub
  stub.close()


def test_report_and_judge_cache_on_gs(server, gcs_dir):
  from hawk_jax.eval import judge as judge_lib
  from hawk_jax.eval import report
  cache = f"{gcs_dir}/eval/judge_cache.jsonl"
  records = records_with_markers()[:2]
  first = make_judge(server, cache).score(records)
  assert first.requests > 0 and first.cache_hits == 0
  lines = epath.Path(cache).read_text().splitlines()
  assert len(lines) == 2 * len(judge_lib.DIMENSIONS)
  before = server.count()
  again = make_judge(server, cache).score(records)
  assert server.count() == before and again.cache_hits == len(lines)
  assert again.scores == first.scores

  rep = {"tasks": {"description": {"items": 2, "bleu": {"bleu_1": 0.5}}}, "bleu_note": "x"}
  json_path, md_path = report.write_report(rep, f"{gcs_dir}/eval")
  assert json_path == f"{gcs_dir}/eval/report.json"
  assert json.loads(epath.Path(json_path).read_text()) == rep
  assert epath.Path(md_path).read_text() == report.report_markdown(rep)


# --- data: extraction into the bucket, the loader reading it, the tower cache -------------------

NUM_FRAMES, SIZE = 4, 64


@pytest.fixture(scope="module")
def gcs_data(gcs_bucket, tmp_path_factory):
  """Synthetic videos and annotations uploaded to the bucket and pre-extracted there with
  `python -m data_pipelines.extract --out_dir gs://...` (one worker process)."""
  from data_pipelines import extract, synthetic
  local = tmp_path_factory.mktemp("gcs_raw")
  paths = synthetic.make_synthetic_dataset(str(local / "raw"), num_videos=5, size=SIZE,
                                           num_frames=8)
  root = f"{gcs_bucket}/data-{os.getpid()}"
  raw = upload_tree(local / "raw", f"{root}/raw")
  remote = {k: v.replace(str(local / "raw"), raw) for k, v in paths.items()}
  args = ["--source", "hawk", "--annotations", remote["train"], "--test_annotations",
          remote["test"], "--videos_dir", remote["videos_dir"], "--out_dir", f"{root}/hawk",
          "--num_frames", str(NUM_FRAMES), "--size", str(SIZE), "--motion", "flow_soft",
          "--workers", "1", "--no_progress"]
  assert extract.main(args) == 0
  return {"hawk": f"{root}/hawk", "args": args}


def test_extract_writes_and_reuses_a_dataset_on_gs(gcs_data, capsys):
  from data_pipelines import extract, records
  (dataset,) = records.find_dataset_dirs(gcs_data["hawk"])
  names = {p.name for p in epath.Path(dataset).iterdir()}
  assert "dataset_info.json" in names and any(".array_record-" in n for n in names)
  assert (epath.Path(gcs_data["hawk"]) / "skipped.jsonl").exists()
  assert list((epath.Path(gcs_data["hawk"]) / "cache").glob("*.npz"))
  capsys.readouterr()
  assert extract.main(gcs_data["args"]) == 0  # a rerun: shards and dataset reused
  out = capsys.readouterr().out
  assert "videos: 0 extracted, 5 reused from cache" in out and "ok=5 skipped=0" in out


def test_open_split_and_loader_workers_read_gs(gcs_data, tmp_path):
  """ArrayRecord reads the gs:// shards itself (no local copy), also in Grain workers."""
  from data_pipelines import loaders, records
  from hawk_jax.models.model_config import hawk_config
  from hawk_jax.text.tokenizer import load_tokenizer
  local = download_tree(gcs_data["hawk"], tmp_path / "hawk")
  for split in ("train", "test"):
    remote_src, local_src = records.open_split(gcs_data["hawk"], split), \
        records.open_split(local, split)
    assert len(remote_src) == len(local_src) > 0
    for i in range(len(local_src)):
      a, b = remote_src[i], local_src[i]
      assert list(a["frames_jpeg"]) == list(b["frames_jpeg"]) and a["video"] == b["video"]
  assert records.decode_record(remote_src[0])["frames"].shape == (NUM_FRAMES, SIZE, SIZE, 3)

  examples = loaders.TrainExamples(stage=2, num_frames=NUM_FRAMES, image_size=32,
                                   num_visual_tokens=hawk_config("tiny").num_visual_tokens,
                                   max_len=160, seed=1)
  tok = load_tokenizer()
  batches = [next(iter(loaders.make_train_loader(d, examples, tok, batch_size=2,
                                                 worker_count=w)))
             for d, w in ((gcs_data["hawk"], 1), (local, 0))]
  assert batches[0].keys() == batches[1].keys()
  for k in batches[0]:
    np.testing.assert_array_equal(batches[0][k], batches[1][k], err_msg=k)


def test_tower_cache_on_gs(gcs_data, gcs_dir, tmp_path):
  from data_pipelines import tower_cache
  from hawk_jax import checkpoint
  from hawk_jax.models.hawk import split_params
  from hawk_jax.models.model_config import HawkConfig
  from hawk_jax.models.params import random_params
  from hawk_jax.train import write_tower_cache
  from tests.support import tiny_config
  cfg = tiny_config("stage2_finetune.py", gcs_data["hawk"])
  config = HawkConfig.from_stage_config(cfg)
  towers = f"{gcs_dir}/towers"
  checkpoint.write_config(towers, cfg)
  checkpoint.save_params(f"{towers}/frozen", split_params(random_params(config, 3), config)[1])

  def cache(out):
    return write_tower_cache.main(["--towers", towers, "--data_dir", gcs_data["hawk"], "--out",
                                   out, "--split", "train", "--batch_size", "2",
                                   "--shard_size", "2", "--devices", "1", "--workers", "1",
                                   "--no_progress"])
  remote, local = f"{gcs_dir}/cache", str(tmp_path / "cache")
  assert cache(remote) == 0 and cache(local) == 0
  assert tower_cache.read_meta(remote).towers_workdir == towers
  assert tower_cache.missing_shards(remote, "train") == []
  a, b = tower_cache.TokenSource(remote, "train"), tower_cache.TokenSource(local, "train")
  assert len(a) == len(b) == 4
  for i in range(len(a)):
    for key in ("appearance", "motion"):
      np.testing.assert_array_equal(a[i][key], b[i][key])
  assert cache(remote) == 0  # a finished cache is left as it is
  assert tower_cache.remove_partial_shards(remote, "train") == 0


# --- conversion: to-torch and from-torch with every path on gs:// -------------------------------


def test_convert_to_and_from_torch_on_gs(gcs_dir, tmp_path):
  import torch
  from safetensors.torch import save_file
  from transformers import LlamaForCausalLM

  from configs.common import model_for
  from hawk_jax import tensor_files
  from hawk_jax.convert import cli as convert_cli
  from hawk_jax.convert import hawk_names as ht
  from hawk_jax.convert.cli import main as convert_main
  from hawk_jax.convert.cli import read_for_export
  from hawk_jax.convert.torch_hawk import HawkTorch, from_params, state_numpy
  config = model_for("tiny", "released")  # as tests/convert/test_hawk_names.py's `tiny`
  torch.manual_seed(0)
  params = ht.assemble(ht.hawk_params_from_torch(
      state_numpy(randomize(HawkTorch(config), seed=0)), config))
  local_run = str(tmp_path / "run")
  _write_workdir(local_run, params)
  run = upload_tree(local_run, f"{gcs_dir}/run")
  out, hf = f"{gcs_dir}/export/hawk.pth", f"{gcs_dir}/llama_hf"
  assert convert_main(["to-torch", "--checkpoint", run, "--out", out, "--full",
                       "--hf_llama", hf]) == 0

  def load_pth(path):
    with epath.Path(path).open("rb") as f:
      return torch.load(f, weights_only=True)["model"]
  assert set(load_pth(out)) == original_trainable_names()
  full_path = f"{gcs_dir}/export/hawk_full.pth"
  full = load_pth(full_path)
  llama = LlamaForCausalLM.from_pretrained(download_tree(hf, tmp_path / "hf"))
  assert torch.equal(llama.lm_head.weight, full["llama_model.lm_head.weight"])

  back = f"{gcs_dir}/back"
  assert convert_main(["from-torch", "--hawk", full_path, "--size", "tiny", "--variant",
                       "released", "--out", back]) == 0
  _equal_trees(read_for_export(back)[1], params)
  assert convert_main(["from-torch", "--hawk", full_path, "--size", "tiny",
                       "--out", back]) == 2  # refuses to overwrite a workdir

  towers = from_params(params, config)
  towers.visual_encoder.save_pretrained(str(tmp_path / "vision_hf"))
  towers.Qformer.save_pretrained(str(tmp_path / "qformer_hf"))
  vision = upload_tree(tmp_path / "vision_hf", f"{gcs_dir}/vision_hf")
  qformer = upload_tree(tmp_path / "qformer_hf", f"{gcs_dir}/qformer_hf")
  rel = f"{gcs_dir}/released"
  assert convert_main(["from-torch", "--hawk", out, "--llama_hf", hf, "--vision_hf", vision,
                       "--qformer_hf", qformer, "--size", "tiny", "--variant", "released",
                       "--out", rel]) == 0
  _, rel_params = read_for_export(rel)
  assert convert_cli._hf_query_tokens(qformer) is None  # a bare Q-Former folder has none
  qt = np.arange(6, dtype=np.float32).reshape(1, 3, 2)
  with tensor_files.local_path_for(f"{gcs_dir}/blip2/model.safetensors") as local:
    save_file({"query_tokens": torch.from_numpy(qt)}, local)
  np.testing.assert_array_equal(convert_cli._hf_query_tokens(f"{gcs_dir}/blip2"), qt)
  for group in ht.EXPORTED_TRAINABLE + (("llm",), ("appearance", "vit"),
                                        ("appearance", "qformer")):
    got, want = rel_params, params
    for p in group:
      got, want = got[p], want[p]
    _equal_trees({"x": got}, {"x": want})


def test_pretrain_llm_reads_and_writes_gs(gcs_data, gcs_dir, monkeypatch):
  from hawk_jax.train import pretrain_llm
  from tests.support import ROOT
  # main() would point JAX's (process-wide) compilation cache away from the tests' one.
  monkeypatch.setattr(pretrain_llm.compile_cache, "enable", lambda *a, **k: None)
  wd = f"{gcs_dir}/towers"
  argv = ["--config", f"{ROOT / 'configs' / 'stage1_pretrain.py'}:size=tiny",
          "--config.data.max_len=64", "--data_dirs", gcs_data["hawk"], "--workdir", wd,
          "--steps", "2", "--batch_size", "2"]
  assert pretrain_llm.main(argv) == 0
  assert json.loads((epath.Path(wd) / "result.json").read_text())["steps"] == 2
  assert (epath.Path(wd) / "config.json").exists() and (epath.Path(wd) / "frozen").is_dir()
  assert pretrain_llm.main(argv) == 0  # done already: frozen/ is found on gs://
