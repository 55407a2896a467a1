"""Reading and writing tensor files safely: safetensors, or torch.load(weights_only=True).

Nothing here unpickles arbitrary objects: a `.pth` that needs it is refused with a message that
says why (docs/model.md, "Checkpoints and conversion"). All tensors come back as numpy arrays
(bf16 as float32 unless asked).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Mapping

import numpy as np


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


def load_torch_file(path: str, keep_bf16: bool = False) -> dict:
  """A `.pth`/`.bin` file read with weights_only=True; nested dicts of tensors become numpy."""
  import pickle

  import torch
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise UnsafeCheckpointError(
        f"{path}: refused — it holds Python objects that only arbitrary unpickling could "
        f"rebuild, and weights are read with torch.load(weights_only=True) only. Re-save it as "
        f"a plain state dict (tensors, numbers, strings) or as safetensors. Detail: {e}") from e

  def conv(o):
    if isinstance(o, torch.Tensor):
      return _torch_to_numpy(o, keep_bf16)
    if isinstance(o, Mapping):
      return {k: conv(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
      return type(o)(conv(v) for v in o)
    return o
  return conv(obj)


def load_safetensors_folder(folder: str) -> dict[str, np.ndarray]:
  """All `*.safetensors` in a HuggingFace folder (sharded or not) as one flat dict."""
  from safetensors.numpy import load_file
  files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
  if not files:
    raise FileNotFoundError(f"{folder}: no *.safetensors files (save with safe_serialization)")
  out: dict[str, np.ndarray] = {}
  for f in files:
    try:
      out.update(load_file(f))
    except TypeError:
      # numpy has no bfloat16 in safetensors.numpy; go through torch for those files.
      from safetensors.torch import load_file as load_torch
      out.update({k: _torch_to_numpy(v) for k, v in load_torch(f).items()})
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A flat tensor dict from a safetensors file/folder or a weights-only torch file."""
  if os.path.isdir(path):
    return load_safetensors_folder(path)
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return dict(load_file(path))
  return load_torch_file(path)


def read_json(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)
