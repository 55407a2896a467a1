"""Reading and writing tensor files safely: safetensors, or torch.load(weights_only=True).

Nothing here unpickles arbitrary objects: a `.pth` that needs it is refused with a message that
says why (docs/model.md, "Checkpoints and conversion"). All tensors come back as numpy arrays
(bf16 as float32 unless asked).

Paths are local or gs:// (etils.epath). Local files are read in place; a gs:// safetensors file
is read from a temporary local copy (`local_copy_of`: safetensors opens local files only, and a
copy on disk keeps a multi-GB shard from sitting in memory twice), and a gs:// torch file is
streamed to torch.load as a file object. Writers that only write local files (safetensors,
torch.save, transformers' save_pretrained) write through `local_path_for`.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from typing import Iterator, Mapping

import numpy as np
from etils import epath


def is_remote(path) -> bool:
  """Whether `path` is an object-store URL (gs://...) rather than a local path."""
  return "://" in os.fspath(path)


@contextlib.contextmanager
def local_path_for(path) -> Iterator[str]:
  """A local path to write the file or folder `path` through: `path` itself when it is local;
  for gs:// a path in a temporary folder whose file (or folder tree) is copied to `path` when
  the block ends without an error, then deleted. Each file appears on gs:// whole."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  tmp = tempfile.mkdtemp(prefix="hawk_upload_")
  try:
    local = os.path.join(tmp, epath.Path(path).name or "file")
    yield local
    _upload(local, epath.Path(path))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local_copy_of(path) -> Iterator[str]:
  """A local path to read the file `path` from: `path` itself when it is local; for gs:// a
  temporary copy, deleted when the block ends."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  tmp = tempfile.mkdtemp(prefix="hawk_download_")
  try:
    local = os.path.join(tmp, epath.Path(path).name or "file")
    epath.Path(path).copy(local)
    yield local
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _upload(local: str, dst: epath.Path) -> None:
  if os.path.isdir(local):
    dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(local)):
      _upload(os.path.join(local, name), dst / name)
  elif os.path.exists(local):
    epath.Path(local).copy(dst, overwrite=True)


class UnsafeCheckpointError(ValueError):
  pass


def _torch_to_numpy(t, keep_bf16: bool = False):
  import torch
  if t.dtype == torch.bfloat16:
    if keep_bf16:
      import ml_dtypes
      return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    t = t.float()
  return t.detach().cpu().numpy()


def _unpickling_detail(e: Exception) -> str:
  """What torch's weights-only unpickler refused ("Trying to load unsupported GLOBAL
  posix.system ..."), without its advice to retry with weights_only=False: that runs the
  file's code."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
  return (named or lines or [type(e).__name__])[0]


def load_torch_file(path: str, keep_bf16: bool = False) -> dict:
  """A `.pth`/`.bin` file read with weights_only=True; nested dicts of tensors become numpy."""
  import pickle

  import torch
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"{path}: no such file")
  try:
    if is_remote(path):
      with epath.Path(path).open("rb") as f:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    else:
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise UnsafeCheckpointError(
        f"{path}: refused — it holds Python objects that only arbitrary unpickling could "
        f"rebuild, and weights are read with torch.load(weights_only=True) only. Re-save it as "
        f"a plain state dict (tensors, numbers, strings) or as safetensors. Detail: "
        f"{_unpickling_detail(e)}") from e

  def conv(o):
    if isinstance(o, torch.Tensor):
      return _torch_to_numpy(o, keep_bf16)
    if isinstance(o, Mapping):
      return {k: conv(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
      return type(o)(conv(v) for v in o)
    return o
  return conv(obj)


def _load_safetensors_file(path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  with local_copy_of(path) as local:
    try:
      return dict(load_file(local))
    except TypeError:
      # numpy has no bfloat16 in safetensors.numpy; go through torch for those files.
      from safetensors.torch import load_file as load_torch
      return {k: _torch_to_numpy(v) for k, v in load_torch(local).items()}


def safetensors_keys(path) -> set[str]:
  """The tensor names of a safetensors file (local or gs://), from its header alone."""
  with epath.Path(path).open("rb") as f:
    (size,) = struct.unpack("<Q", f.read(8))
    return set(json.loads(f.read(size))) - {"__metadata__"}


def load_safetensors_folder(folder: str) -> dict[str, np.ndarray]:
  """All `*.safetensors` in a HuggingFace folder (sharded or not) as one flat dict."""
  files = sorted(epath.Path(folder).glob("*.safetensors"), key=lambda p: p.name)
  if not files:
    raise FileNotFoundError(f"{folder}: no *.safetensors files (save with safe_serialization)")
  out: dict[str, np.ndarray] = {}
  for f in files:
    out.update(_load_safetensors_file(f))
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A flat tensor dict from a safetensors file/folder or a weights-only torch file."""
  if epath.Path(path).is_dir():
    return load_safetensors_folder(path)
  if os.fspath(path).endswith(".safetensors"):
    return _load_safetensors_file(path)
  return load_torch_file(path)


def read_json(path: str) -> dict:
  return json.loads(epath.Path(path).read_text(encoding="utf-8"))
