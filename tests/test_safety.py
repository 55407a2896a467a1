"""Nothing the project reads from a user's file can run code.

Weights are read with safetensors or `torch.load(weights_only=True)` only, arrays with
`np.load(allow_pickle=False)`, configs and predictions as JSON; nothing is unpickled, no YAML is
read unsafely, and no command goes through a shell. Two kinds of checks:

(a) a scan of the package sources (hawk_jax/, data_pipelines/, configs/, launch/) with `ast` --
    code, not docstrings or comments -- that fails on `shell=...` (anything but False),
    `os.system`/`os.popen`, pickle-family loads (pickle, _pickle, cPickle, dill, cloudpickle,
    joblib, shelve, marshal, pandas.read_pickle), `yaml.load` without a safe Loader (and
    yaml.unsafe_load / full_load), `allow_pickle=` anything but False, `np.load` without
    `allow_pickle=False`, `torch.load` without `weights_only=True`, `weights_only=` anything
    but True, `torch.jit.load`, `trust_remote_code=` anything but False, `from_pretrained`
    without `use_safetensors=True`, and the builtins eval/exec. The scan is tested on
    snippets, and must see the loaders the package is known to have;
(b) for every loader of user weight and array files, a crafted malicious file -- a pickle
    whose `__reduce__` makes a marker folder when unpickled -- is fed to the real function:
    it must raise, and the marker must not exist afterwards. A control shows that the same file
    does make the marker when unpickled without restriction.
"""
from __future__ import annotations

import ast
import io
import json
import os
import pathlib
import pickle

import numpy as np
import pytest

from tests.support import ROOT

SCANNED = ("hawk_jax", "data_pipelines", "configs", "launch")

# --------------------------------------------------------------------------- (a) source scan

_PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal",
                   "shelve"}
_PICKLE_LOADS = {"load", "loads", "Unpickler", "open"}
_SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _aliases(tree: ast.AST) -> dict[str, str]:
  """Local name -> the dotted module or object it stands for (`np` -> `numpy`,
  `load` -> `torch.load` after `from torch import load`)."""
  out: dict[str, str] = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.asname:
          out[a.asname] = a.name
        else:
          top = a.name.split(".")[0]
          out[top] = top
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        out[a.asname or a.name] = f"{node.module}.{a.name}"
  return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
  """`np.load` -> "numpy.load" (through the aliases); None for anything but a.b.c chains."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  parts.append(aliases.get(node.id, node.id))
  return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
  for k in call.keywords:
    if k.arg == name:
      return k.value
  return None


def _is_const(node, value) -> bool:
  return isinstance(node, ast.Constant) and node.value is value


def scan_source(source: str, filename: str = "<source>") -> tuple[list[str], list[str]]:
  """(problems, loads seen): each problem is `FILE:LINE: what`; loads seen are the safe loader
  calls found (`FILE:LINE: torch.load`, ...), so a scan that sees nothing can be told."""
  tree = ast.parse(source, filename)
  aliases = _aliases(tree)
  problems, seen = [], []

  def bad(node, what):
    problems.append(f"{filename}:{node.lineno}: {what}")

  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module in _PICKLE_MODULES:
      for a in node.names:
        if a.name in _PICKLE_LOADS:
          bad(node, f"from {node.module} import {a.name}")
    if not isinstance(node, ast.Call):
      continue
    name = _dotted(node.func, aliases) or ""
    head, _, last = name.rpartition(".")
    shell = _keyword(node, "shell")
    if shell is not None and not _is_const(shell, False):
      bad(node, f"{name or 'a call'}(shell=...) runs a shell")
    if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
      bad(node, f"{name} runs a shell")
    if head.split(".")[0] in _PICKLE_MODULES and last in _PICKLE_LOADS:
      bad(node, f"{name} unpickles")
    if last == "read_pickle":
      bad(node, f"{name} unpickles")
    if name in ("yaml.load", "yaml.load_all"):
      loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
      loader_name = (_dotted(loader, aliases) or "") if loader is not None else ""
      if loader_name.rpartition(".")[2] not in _SAFE_YAML_LOADERS:
        bad(node, f"{name} without a safe Loader")
    if name.startswith("yaml.") and last in ("unsafe_load", "unsafe_load_all", "full_load",
                                             "full_load_all"):
      bad(node, f"{name} builds arbitrary objects")
    allow = _keyword(node, "allow_pickle")
    if allow is not None and not _is_const(allow, False):
      bad(node, f"{name or 'a call'}(allow_pickle=...) unpickles")
    if name == "numpy.load":
      if allow is None:
        bad(node, "numpy.load without allow_pickle=False")
      else:
        seen.append(f"{filename}:{node.lineno}: numpy.load")
    weights_only = _keyword(node, "weights_only")
    if weights_only is not None and not _is_const(weights_only, True):
      bad(node, f"{name or 'a call'}(weights_only=...) unpickles")
    if name in ("torch.load", "torch.serialization.load"):
      if weights_only is None:
        bad(node, f"{name} without weights_only=True")
      else:
        seen.append(f"{filename}:{node.lineno}: torch.load")
    if name == "torch.jit.load":
      bad(node, "torch.jit.load runs TorchScript code")
    remote = _keyword(node, "trust_remote_code")
    if remote is not None and not _is_const(remote, False):
      bad(node, f"{name or 'a call'}(trust_remote_code=...) runs downloaded code")
    if last == "from_pretrained" and not _is_const(_keyword(node, "use_safetensors"), True):
      bad(node, f"{name} without use_safetensors=True")
    if last in ("load_file", "safe_open") and "safetensors" in head + name:
      seen.append(f"{filename}:{node.lineno}: safetensors")
    if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec") \
        and node.func.id not in aliases:
      bad(node, f"{node.func.id}() runs code")
  return problems, seen


def _package_sources() -> list[pathlib.Path]:
  files = []
  for top in SCANNED:
    files += sorted((ROOT / top).rglob("*.py"))
  return files


def _scan_package() -> tuple[list[str], list[str]]:
  problems, seen = [], []
  for path in _package_sources():
    p, s = scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    problems += p
    seen += s
  return problems, seen


def test_package_sources_load_nothing_unsafely():
  """scan_source over every .py of hawk_jax/, data_pipelines/, configs/, launch/."""
  assert len(_package_sources()) > 50
  problems, _ = _scan_package()
  assert not problems, "\n".join(problems)


def test_the_scan_sees_the_known_loaders():
  """scan_source finds the safe loaders the package has (so a scan that matches nothing
  cannot pass the test above by accident)."""
  _, seen = _scan_package()
  files = {s.split(":")[0]: s for s in seen}
  assert sum("torch.load" in s for s in seen) >= 2  # hawk_jax/tensor_files.py, file and stream
  assert "hawk_jax/tensor_files.py" in files
  assert "data_pipelines/clip_cache.py" in files and "data_pipelines/tower_cache.py" in files
  assert any("safetensors" in s for s in seen)


@pytest.mark.parametrize("snippet", [
    "import subprocess\nsubprocess.run('ls', shell=True)",
    "import subprocess as sp\nsp.Popen(cmd, shell=flag)",
    "import os\nos.system('ls')",
    "import pickle\npickle.load(f)",
    "import pickle as pk\npk.loads(b)",
    "from pickle import load\nload(f)",
    "import dill\ndill.load(f)",
    "import pandas as pd\npd.read_pickle(p)",
    "import yaml\nyaml.load(f)",
    "import yaml\nyaml.load(f, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(f)",
    "import numpy as np\nnp.load(p)",
    "import numpy as np\nnp.load(p, allow_pickle=True)",
    "import numpy\nnumpy.load(p, allow_pickle=flag)",
    "import torch\ntorch.load(p)",
    "import torch\ntorch.load(p, weights_only=False)",
    "from torch import load\nload(p, map_location='cpu')",
    "import torch\ntorch.jit.load(p)",
    "from transformers import AutoModel\nAutoModel.from_pretrained(d, trust_remote_code=True)",
    "from transformers import AutoModel\nAutoModel.from_pretrained(d)",
    "eval(text)",
    "exec(code)",
])
def test_the_scan_catches_unsafe_loads(snippet):
  """scan_source flags each unsafe form."""
  problems, _ = scan_source(snippet)
  assert problems, snippet


@pytest.mark.parametrize("snippet", [
    "import subprocess\nsubprocess.run(['ls', '-l'], check=True)",
    "import subprocess\nsubprocess.run(['ls'], shell=False)",
    "import pickle\ntry:\n  pass\nexcept pickle.UnpicklingError:\n  pass",
    "import yaml\nyaml.safe_load(f)",
    "import yaml\nyaml.load(f, Loader=yaml.SafeLoader)",
    "import numpy as np\nnp.load(p, allow_pickle=False)",
    "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
    "import ast\nast.literal_eval(text)",
    "model.eval()",
    "from transformers import AutoModel\nAutoModel.from_pretrained(d, use_safetensors=True)",
    '"""torch.load(p) and pickle.load(f) in a docstring are words, not calls."""',
])
def test_the_scan_passes_safe_forms(snippet):
  """scan_source leaves the safe forms alone."""
  problems, _ = scan_source(snippet)
  assert not problems, problems


# --------------------------------------------------------------------------- (b) behaviour


class _MakesMarker:
  """Unpickled, it calls os.mkdir(marker): what arbitrary unpickling would let a file do."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


def _payload(marker):
  import torch
  return {"model": {"visual_encoder.cls_token": torch.zeros(1, 1, 4),
                    "query_tokens": _MakesMarker(str(marker))}}


def write_malicious(path, marker, kind: str = "zip") -> str:
  """A weight file whose unpickling makes `marker`: torch.save's zip format, its legacy
  format, or a bare pickle."""
  import torch
  path = str(path)
  if kind == "zip":
    torch.save(_payload(marker), path)
  elif kind == "legacy":
    torch.save(_payload(marker), path, _use_new_zipfile_serialization=False)
  else:
    with open(path, "wb") as f:
      pickle.dump(_payload(marker), f)
  return path


KINDS = ("zip", "legacy", "pickle")


@pytest.fixture
def marker(tmp_path):
  path = tmp_path / "MARKER_code_ran"
  yield path
  if path.exists():
    path.rmdir()


def test_control_the_files_do_run_code_when_unpickled_freely(tmp_path, marker):
  """Control for the tests below: torch.load(weights_only=False) of the crafted .pth (and
  pickle.load of the bare pickle) does make the marker, so refusing them is what keeps it
  away."""
  import torch
  torch.load(write_malicious(tmp_path / "evil.pth", marker, "zip"), weights_only=False)
  assert marker.exists()
  marker.rmdir()
  with open(write_malicious(tmp_path / "evil.bin", marker, "pickle"), "rb") as f:
    pickle.load(f)  # the control itself: unrestricted unpickling of our own crafted file
  assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_load_torch_file_refuses_pickled_code(kind, tmp_path, marker):
  """hawk_jax.tensor_files.load_torch_file: UnsafeCheckpointError, no marker."""
  from hawk_jax.tensor_files import UnsafeCheckpointError, load_torch_file
  path = write_malicious(tmp_path / "evil.pth", marker, kind)
  with pytest.raises(UnsafeCheckpointError, match="refused") as e:
    load_torch_file(path)
  assert not marker.exists()
  # The message names what was refused, and does not relay torch's advice to retry with
  # weights_only=False (which would run the file's code).
  assert "weights_only` set to `False" not in str(e.value)
  assert "GLOBAL" in str(e.value) or "Unsupported" in str(e.value), str(e.value)


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt"])
def test_load_state_dict_refuses_pickled_code(suffix, tmp_path, marker):
  """hawk_jax.tensor_files.load_state_dict (the dispatch every converter uses)."""
  from hawk_jax.tensor_files import UnsafeCheckpointError, load_state_dict
  path = write_malicious(tmp_path / f"evil{suffix}", marker, "zip")
  with pytest.raises(UnsafeCheckpointError):
    load_state_dict(path)
  assert not marker.exists()


@pytest.fixture(scope="module")
def tiny():
  from configs.common import base_config
  from hawk_jax.models.model_config import HawkConfig
  return HawkConfig.from_stage_config(base_config(2, "size=tiny"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loader", ["load_lavis_state", "vision_from_lavis", "blip2_from_lavis",
                                    "hawk_params_from_torch"])
def test_lavis_and_hawk_loaders_refuse_pickled_code(loader, kind, tmp_path, marker, tiny):
  """hawk_jax.convert.lavis.load_lavis_state / vision_from_lavis (LAVIS eva_vit_g.pth) /
  blip2_from_lavis (LAVIS BLIP-2 .pth) and hawk_jax.convert.hawk_names.hawk_params_from_torch
  (released HAWK pretrained.pth / finetuned.pth)."""
  from hawk_jax.convert import hawk_names, lavis
  from hawk_jax.tensor_files import UnsafeCheckpointError
  path = write_malicious(tmp_path / "evil.pth", marker, kind)
  call = {"load_lavis_state": lambda: lavis.load_lavis_state(path),
          "vision_from_lavis": lambda: lavis.vision_from_lavis(path, tiny.vision),
          "blip2_from_lavis": lambda: lavis.blip2_from_lavis(path, None, tiny.qformer),
          "hawk_params_from_torch": lambda: hawk_names.hawk_params_from_torch(path, tiny)}
  with pytest.raises(UnsafeCheckpointError):
    call[loader]()
  assert not marker.exists()


def _hf_folder(tmp_path, tower: str, keep_safetensors: bool, marker) -> str:
  """A save_pretrained folder of a tiny HF model, with a malicious pytorch_model.bin: beside
  model.safetensors, or in its place (as an older transformers wrote it)."""
  import transformers

  from tests.blip2_hf_fixtures import hf_qformer, hf_vision
  if tower == "llama":
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2))
  else:
    model = hf_vision() if tower == "vision" else hf_qformer()
  folder = tmp_path / f"{tower}_hf"
  model.save_pretrained(str(folder))
  if not keep_safetensors:
    for f in folder.glob("*.safetensors*"):
      f.unlink()
  write_malicious(folder / "pytorch_model.bin", marker, "zip")
  return str(folder)


_HF_LOADERS = {"llama": "llama_from_hf", "vision": "vision_from_hf", "qformer": "qformer_from_hf"}


def _hf_load(tower, folder):
  from hawk_jax.convert import blip2_hf, llama_hf
  if tower == "llama":
    return llama_hf.llama_from_hf(folder)
  if tower == "vision":
    return blip2_hf.vision_from_hf(folder)
  return blip2_hf.qformer_from_hf(folder)


@pytest.mark.parametrize("tower", sorted(_HF_LOADERS))
def test_hf_loaders_refuse_a_pickled_bin(tower, tmp_path, marker):
  """hawk_jax.convert.llama_hf.llama_from_hf / blip2_hf.vision_from_hf / qformer_from_hf on a
  folder whose weights are only a (malicious) pytorch_model.bin: refused, never unpickled."""
  folder = _hf_folder(tmp_path, tower, keep_safetensors=False, marker=marker)
  with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
    _hf_load(tower, folder)
  assert not marker.exists()


@pytest.mark.parametrize("tower", sorted(_HF_LOADERS))
def test_hf_loaders_read_safetensors_and_ignore_a_pickled_bin(tower, tmp_path, marker):
  """The same loaders on a folder with model.safetensors and a malicious pytorch_model.bin
  beside it: the safetensors are read, the .bin is not touched."""
  folder = _hf_folder(tmp_path, tower, keep_safetensors=True, marker=marker)
  _hf_load(tower, folder)
  assert not marker.exists()


@pytest.mark.parametrize("flag", ["--hawk", "--eva_vit_lavis", "--blip2_lavis"])
def test_from_torch_command_line_refuses_pickled_code(flag, tmp_path, marker, capsys):
  """hawk_jax.convert.cli.main from-torch with a malicious .pth: one `error:` line saying it
  was refused, exit 2, no workdir written, no marker."""
  from hawk_jax.convert import cli as convert_cli
  path = write_malicious(tmp_path / "evil.pth", marker, "zip")
  out = tmp_path / "converted"
  code = convert_cli.main(["from-torch", flag, path, "--size", "tiny", "--variant", "released",
                           "--out", str(out)])
  err = capsys.readouterr().err
  assert code == 2
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and path in lines[0] and "refused" in lines[0], err
  assert "Traceback" not in err
  assert not marker.exists()
  assert not (out / "checkpoints").exists()


# np.load paths: the pre-extraction clip cache (.npz) and the tower cache records (npz bytes).

def _object_npz(marker) -> bytes:
  buf = io.BytesIO()
  payload = np.array([_MakesMarker(str(marker))], dtype=object)
  np.savez(buf, jpeg_data=payload, jpeg_sizes=np.zeros(1, np.int64), png_data=payload,
           png_sizes=np.zeros(1, np.int64), timestamps=np.zeros(1, np.float32),
           indices=np.zeros(1, np.int32), fps=np.float32(5), num_source_frames=np.int32(1),
           appearance=payload, motion=payload, record=payload, video=payload)
  return buf.getvalue()


def _object_npy(marker) -> bytes:
  buf = io.BytesIO()
  np.save(buf, np.array([_MakesMarker(str(marker))], dtype=object), allow_pickle=True)
  return buf.getvalue()


@pytest.mark.parametrize("container", ["npz", "npy"])
def test_clip_cache_load_visual_refuses_object_arrays(container, tmp_path, marker):
  """data_pipelines.clip_cache.load_visual (np.load of a cached .npz)."""
  from data_pipelines import clip_cache
  path = tmp_path / "cached.npz"
  path.write_bytes(_object_npz(marker) if container == "npz" else _object_npy(marker))
  with pytest.raises(ValueError, match="allow_pickle"):
    clip_cache.load_visual(str(path))
  assert not marker.exists()


@pytest.mark.parametrize("container", ["npz", "npy"])
def test_tower_cache_decode_record_refuses_object_arrays(container, marker):
  """data_pipelines.tower_cache.decode_record (np.load of a record's npz bytes)."""
  from data_pipelines import tower_cache
  data = _object_npz(marker) if container == "npz" else _object_npy(marker)
  with pytest.raises(tower_cache.CacheError):
    tower_cache.decode_record(data, "float32")
  assert not marker.exists()


def test_control_the_arrays_do_run_code_when_unpickled_freely(marker):
  """Control: the same .npy loaded with allow_pickle=True makes the marker."""
  np.load(io.BytesIO(_object_npy(marker)), allow_pickle=True)
  assert marker.exists()


def test_json_readers_build_no_objects(tmp_path):
  """hawk_jax.tensor_files.read_json (HF config.json): JSON gives dicts, lists, strings and
  numbers only, whatever the file says."""
  from hawk_jax.tensor_files import read_json
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"__reduce__": ["os.system", "touch x"], "py/object": "os.system"}))
  assert read_json(str(path)) == {"__reduce__": ["os.system", "touch x"],
                                  "py/object": "os.system"}
