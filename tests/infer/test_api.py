"""The notebook API: `from hawk_jax import Engine`, describe / ask / chat, and one folder of
safetensors (save_pretrained / from_pretrained) -- equal to the command lines and to the
workdir, bit for bit, locally and on gs://.

The tiny workdir, its engine and the two short videos are tests/infer/test_engine.py's
fixtures (same shapes, so the compilations are shared)."""
import copy
import io
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from etils import epath
from safetensors.numpy import load_file, save_file

from hawk_jax import Chat, Engine
from hawk_jax.infer import chat as chat_cli
from hawk_jax.infer import describe as describe_cli
from hawk_jax.infer import engine as engine_lib
from hawk_jax.infer import pretrained
from hawk_jax.infer.engine import AnswerText, GenerationOptions
from hawk_jax.models.hawk import merge_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import flatten_paths
from hawk_jax.text.tokenizer import Tokenizer, default_tokenizer_path
from tests.infer import test_engine
from tests.infer.test_engine import LONG_QUESTION, QUESTION
from tests.support import ROOT, write_random_workdir

# test_engine's fixtures, in this module's scope.
tiny_cfg = test_engine.tiny_cfg
workdir = test_engine.workdir
videos = test_engine.videos
engine = test_engine.engine
FOLLOW_UP = "And what happens next?"


def _workdir_params(workdir):
  """Every parameter the workdir holds at its latest step (20), as written."""
  return merge_params(workdir[1]["frozen"], workdir[1][20])


def _assert_bitwise_equal(a, b):
  fa, fb = flatten_paths(a), flatten_paths(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    x, y = np.asarray(fa[k]), np.asarray(fb[k])
    assert (x.dtype, x.shape) == (y.dtype, y.shape), k
    assert x.tobytes() == y.tobytes(), k


def _engine_params(e):
  return {"params": e.params, "llm": e.llm_params}


@pytest.fixture(scope="module")
def saved(engine, tmp_path_factory):
  """The engine's save_pretrained folder (one file: the tiny model is far below 5GB)."""
  path = str(tmp_path_factory.mktemp("pretrained") / "hawk")
  files = engine.save_pretrained(path)
  return path, files


@pytest.fixture(scope="module")
def loaded(saved):
  return Engine.from_pretrained(saved[0])


# --- the package root ---------------------------------------------------------------------------

def test_import_hawk_jax_is_cheap_and_exports_the_engine():
  code = ("import sys, hawk_jax; assert 'jax' not in sys.modules, 'jax imported'; "
          "from hawk_jax import Engine; from hawk_jax.infer.engine import Engine as E; "
          "assert Engine is E and 'Engine' in dir(hawk_jax); print('ok')")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), check=False)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
  import hawk_jax
  with pytest.raises(AttributeError, match="no attribute 'Nope'"):
    hawk_jax.Nope


# --- describe / ask / chat ----------------------------------------------------------------------

def test_describe_one_path_many_and_the_cli_agree(engine, workdir, videos, capsys):
  one = engine.describe(videos[0])       # a str path: one answer, not one per character
  assert isinstance(one, str) and isinstance(one, AnswerText) and one
  assert engine.describe([videos[0]]) == [one]
  both = engine.describe(videos)
  assert isinstance(both, list) and both == [one, engine.describe(videos[1])]
  assert engine.describe(pathlib.Path(videos[0])) == one
  assert engine.describe(engine.load_video(videos[0])) == one   # an already loaded video
  assert engine.describe(videos, batch_size=1) == both
  assert engine.describe([]) == []
  assert describe_cli.main(["--checkpoint", workdir[0], videos[0]]) == 0
  assert capsys.readouterr().out == one + "\n"
  # What describe returned before (Answer) is still there.
  assert one.text == str(one) and one.tokens and isinstance(one.stopped_at_eos, bool)
  assert engine.decode(one.tokens) == one
  assert pickle.loads(pickle.dumps(one)).tokens == one.tokens


def test_describe_generation_keywords(engine, videos):
  one = engine.describe(videos[0])
  short = engine.describe(videos[0], max_new_tokens=3)
  assert len(short.tokens) <= 3 and short.tokens == one.tokens[:len(short.tokens)]
  assert engine.describe(videos[0], options=GenerationOptions(max_new_tokens=3)) == short
  sample = dict(strategy="sample", temperature=1.5, top_p=0.95, seed=3)
  assert engine.describe(videos[0], **sample) == engine.describe(videos[0], **sample)
  with pytest.raises(TypeError, match="unknown generation option.*max_tokens"):
    engine.describe(videos[0], max_tokens=3)
  with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
    engine.describe(videos[0], max_new_tokens=0)
  with pytest.raises(TypeError, match="a path or a Video"):
    engine.describe([np.zeros((4, 64, 64, 3), np.uint8)])


def test_ask(engine, workdir, videos, capsys):
  answer = engine.ask(videos[0], LONG_QUESTION)
  assert isinstance(answer, str) and answer
  assert engine.ask(engine.load_video(videos[0]), LONG_QUESTION) == answer
  assert describe_cli.main(["--checkpoint", workdir[0], "--question", LONG_QUESTION,
                            videos[0]]) == 0
  assert capsys.readouterr().out == answer + "\n"
  assert engine.ask(videos[0], QUESTION) == engine.describe(videos[0])
  with pytest.raises(TypeError, match="one video"):
    engine.ask(videos, QUESTION)
  with pytest.raises(ValueError, match="question is empty"):
    engine.ask(videos[0], " ")


def test_chat_two_turns_keep_history_and_encode_once(engine, workdir, videos, monkeypatch,
                                                     capsys):
  calls = engine.encode_calls
  chat = engine.chat(videos[0], system=" ")
  assert isinstance(chat, Chat)
  first = chat.ask(QUESTION)
  second = chat.ask(FOLLOW_UP)
  assert isinstance(first, str) and first == engine.describe(videos[0])  # training layout
  assert chat.history == [(QUESTION, first), (FOLLOW_UP, second)]
  assert engine.encode_calls == calls + 2   # the chat's one encoding, then describe's
  # The chat command answers the same two turns.
  monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{FOLLOW_UP}\n"))
  assert chat_cli.main(["--checkpoint", workdir[0], "--system", " ", videos[0]]) == 0
  assert capsys.readouterr().out.splitlines() == [first, second]
  # Streaming gives the same text; reset starts over on the already encoded video.
  chat.reset()
  assert "".join(chat.stream(QUESTION)) == first and chat.history == [(QUESTION, first)]
  short = engine.chat(engine.load_video(videos[0]), max_new_tokens=3)   # the demo's system
  assert short.conversation.options.max_new_tokens == 3
  assert short.conversation.system != " " and short.ask(QUESTION) == short.history[0][1]
  with pytest.raises(ValueError, match="not beam search"):
    engine.chat(videos[0], strategy="beam")


# --- save_pretrained / from_pretrained ----------------------------------------------------------

def test_save_pretrained_writes_the_workdir_bit_for_bit(engine, workdir, saved):
  path, files = saved
  assert files == ["model.safetensors", "config.json"]
  assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]   # built-in tokenizer
  tensors = load_file(os.path.join(path, "model.safetensors"))
  want = _workdir_params(workdir)
  assert set(tensors) == {k.replace("/", ".") for k in flatten_paths(want)}
  assert "llm.layers.self_attn.q_proj.kernel" in tensors   # scanned: [L, D, heads, head_dim]
  assert tensors["llm.layers.self_attn.q_proj.kernel"].shape == (2, 128, 4, 32)
  _assert_bitwise_equal(pretrained.nested(tensors), want)
  _assert_bitwise_equal(engine.hawk_params(), want)
  assert (pathlib.Path(path) / "config.json").read_text() == \
      (pathlib.Path(workdir[0]) / "config.json").read_text()


def test_from_pretrained_equals_the_workdir_engine(engine, loaded, videos):
  _assert_bitwise_equal(_engine_params(loaded), _engine_params(engine))
  assert (loaded.layout.kind, loaded.layout.mesh) == (engine.layout.kind, engine.layout.mesh)
  assert loaded.describe(videos) == engine.describe(videos)
  assert loaded.describe(videos[0]) == engine.describe(videos[0])


def test_sharded_save_and_stale_files(engine, loaded, saved, tmp_path):
  path = str(tmp_path / "sharded")
  files = engine.save_pretrained(path, max_shard_size="300KB")
  shards = [f for f in files if f.endswith(".safetensors")]
  assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
  index = json.loads((pathlib.Path(path) / "model.safetensors.index.json").read_text())
  assert sorted(set(index["weight_map"].values())) == shards
  assert index["metadata"]["total_size"] == sum(
      (pathlib.Path(path) / f).stat().st_size for f in shards) - sum(
      8 + int.from_bytes((pathlib.Path(path) / f).read_bytes()[:8], "little") for f in shards)
  _assert_bitwise_equal(_engine_params(Engine.from_pretrained(path)), _engine_params(loaded))
  # Saving again unsharded replaces the shards (none left for the index to mislead).
  assert loaded.save_pretrained(path) == ["model.safetensors", "config.json"]
  assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
  assert (pathlib.Path(path) / "model.safetensors").read_bytes() == \
      (pathlib.Path(saved[0]) / "model.safetensors").read_bytes()
  with pytest.raises(ValueError, match="max_shard_size"):
    engine.save_pretrained(path, max_shard_size="lots")


def _copy(saved, tmp_path, name="copy"):
  dst = tmp_path / name
  shutil.copytree(saved[0], dst)
  return dst


def test_from_pretrained_names_a_tampered_tensor(saved, tmp_path):
  dst = _copy(saved, tmp_path)
  tensors = load_file(str(dst / "model.safetensors"))
  tensors["llm.norm.scale"] = np.ones((127,), np.float32)
  del tensors["motion.proj.decoder_2.dense.kernel"]
  tensors["llm.extra"] = np.zeros((2,), np.float32)
  save_file(tensors, str(dst / "model.safetensors"))
  with pytest.raises(pretrained.PretrainedError) as e:
    Engine.from_pretrained(str(dst))
  message = str(e.value)
  assert "3 tensor(s) do not match the model in its config.json" in message
  assert ("shape of llm.norm.scale: got (127,) in model.safetensors, the model wants (128,)"
          in message)
  assert "missing motion.proj.decoder_2.dense.kernel" in message
  assert "unexpected llm.extra (2,)" in message


class _MakesMarker:
  """Unpickled, it makes a folder: what arbitrary unpickling would let a file do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


def test_from_pretrained_reads_safetensors_only(saved, tmp_path):
  marker = tmp_path / "marker"
  dst = _copy(saved, tmp_path)
  with open(dst / "model.safetensors", "wb") as f:
    pickle.dump({"w": _MakesMarker(str(marker))}, f)
  with pytest.raises(pretrained.PretrainedError, match="not a safetensors file"):
    Engine.from_pretrained(str(dst))
  os.remove(dst / "model.safetensors")
  with open(dst / "pytorch_model.bin", "wb") as f:
    pickle.dump({"w": _MakesMarker(str(marker))}, f)
  with pytest.raises(pretrained.PretrainedError, match="no model.safetensors.*pytorch_model"):
    Engine.from_pretrained(str(dst))
  assert not marker.exists()
  with pytest.raises(pretrained.PretrainedError, match="no config.json"):
    Engine.from_pretrained(str(tmp_path))
  with pytest.raises(pretrained.PretrainedError, match="no such folder"):
    Engine.from_pretrained(str(tmp_path / "missing"))


def test_a_tokenizer_other_than_the_builtin_travels_with_the_folder(engine, tmp_path):
  builtin = pathlib.Path(default_tokenizer_path()).read_bytes()
  proto = builtin + bytes([0xC0, 0x3E, 0x01])  # an unknown proto field: other bytes, same model
  other = copy.copy(engine)
  other.tokenizer = Tokenizer(model_proto=proto)
  path = tmp_path / "with_tokenizer"
  assert "tokenizer.model" in other.save_pretrained(str(path))
  assert (path / "tokenizer.model").read_bytes() == proto
  assert Engine.from_pretrained(str(path)).tokenizer.__getstate__()["proto"] == proto


def test_tensor_parallel_engine_saves_and_loads_the_same_model(workdir, saved):
  sharded = Engine.from_workdir(workdir[0], layout="tensor:2")
  assert sharded.layout.tensor == 2 and not sharded.llm.decode_layout
  _assert_bitwise_equal(sharded.hawk_params(), _workdir_params(workdir))
  again = Engine.from_pretrained(saved[0], layout="tensor:2")
  assert (again.layout.kind, again.layout.mesh) == (sharded.layout.kind, sharded.layout.mesh)
  for a, b in zip(jax.tree.leaves(_engine_params(again)), jax.tree.leaves(_engine_params(sharded))):
    assert a.sharding == b.sharding
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_a_bfloat16_model_loaded_in_float32_is_saved_as_it_was(tiny_cfg, tmp_path, videos):
  cfg = copy.deepcopy(tiny_cfg)
  cfg.model = HawkConfig.from_stage_config(cfg).with_dtype("bfloat16").to_dict()
  written = write_random_workdir(str(tmp_path / "bf16"), cfg, steps=(5,), std=0.08)
  engine = Engine.from_workdir(str(tmp_path / "bf16"), dtype="float32")
  assert engine.params["motion"]["vit"]["cls_token"].dtype == np.float32
  engine.save_pretrained(str(tmp_path / "hawk"))
  tensors = load_file(str(tmp_path / "hawk" / "model.safetensors"))
  assert tensors["llm.lm_head.kernel"].dtype == np.dtype("bfloat16")
  _assert_bitwise_equal(pretrained.nested(tensors), merge_params(written["frozen"], written[5]))
  again = Engine.from_pretrained(str(tmp_path / "hawk"), dtype="float32")
  _assert_bitwise_equal(_engine_params(again), _engine_params(engine))
  assert again.describe(videos[0]) == engine.describe(videos[0])


# --- gs:// --------------------------------------------------------------------------------------

def _upload(local, remote):
  local, remote = pathlib.Path(local), epath.Path(remote)
  if local.is_dir():
    remote.mkdir(parents=True, exist_ok=True)
    for child in sorted(local.iterdir()):
      _upload(child, remote / child.name)
  else:
    epath.Path(local).copy(remote, overwrite=True)


def test_workdir_and_pretrained_folder_on_gs(engine, workdir, videos, gcs_dir):
  remote = f"{gcs_dir}/stage2"
  _upload(workdir[0], remote)
  from_gs = Engine.from_workdir(remote)
  want = engine.describe(videos[0])
  assert from_gs.describe(videos[0]) == want
  folder = f"{gcs_dir}/hawk"
  assert from_gs.save_pretrained(folder, max_shard_size="1MB")[-1] == "config.json"
  assert (epath.Path(folder) / "model.safetensors.index.json").exists()
  loaded = Engine.from_pretrained(folder)
  _assert_bitwise_equal(_engine_params(loaded), _engine_params(engine))
  assert loaded.describe(videos[0]) == want
  assert engine_lib.Engine is Engine
