"""A whole HAWK in one folder of safetensors: what `Engine.save_pretrained` writes and
`Engine.from_pretrained` reads (hawk_jax/infer/engine.py).

  folder/
    config.json                        the stage config, as a workdir's config.json
    model.safetensors                  every parameter (frozen and trainable), or, when the
                                       tensors pass `max_shard_size` (default 5GB):
    model-00001-of-0000N.safetensors   ... sharded, with
    model.safetensors.index.json       {"metadata": {"total_size": bytes},
                                        "weight_map": {tensor name: file}}
    tokenizer.model                    only when the tokenizer is not the built-in tiny one

Tensor names are the paths of `Hawk(config)`'s parameter tree (hawk_jax.models.params.
abstract_params) joined with ".", and their shapes are that tree's: e.g.
`appearance.vit.layers.attn.qkv.kernel`, `llm.embed_tokens.embedding` [vocab, D] and, for an
LLM whose config scans its layers, `llm.layers.self_attn.q_proj.kernel` [L, D, heads, head_dim]
(layer axis first). Tensors are stored in the dtypes of the stage config (an engine loaded in
float32 on a CPU still writes a bfloat16 model as bfloat16, bit for bit). The layout is the
model's own, not the original PyTorch names (`python -m hawk_jax.convert to-torch` writes those).

Reading is safe: only safetensors are opened (a folder holding only pickles is refused), and the
headers are checked against the model of config.json -- every tensor there, none missing, none
extra, every shape equal -- before any tensor is read; a mismatch is a PretrainedError naming the
tensors. Paths are local or gs://: a gs:// file is read from a temporary local copy
(hawk_jax.tensor_files), a gs:// folder is written through a local one.
"""
from __future__ import annotations

import json
import logging
import math
import re
import struct
from typing import Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from etils import epath
from safetensors import safe_open
from safetensors.numpy import save_file

from hawk_jax import checkpoint, tensor_files
from hawk_jax.models.llama_decoding import _DECODE_FUSED, _KERNEL_INPUT_AXES
from hawk_jax.models.params import flatten_paths

log = logging.getLogger("hawk_jax.infer.pretrained")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.model"
SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
DEFAULT_MAX_SHARD_SIZE = "5GB"
SEP = "."
# The largest header a safetensors file may have (the format's own limit is 100 MB).
_MAX_HEADER_BYTES = 100_000_000


class PretrainedError(ValueError):
  """A folder that is not a readable save_pretrained folder, or does not match its config."""


# --- names ------------------------------------------------------------------------------------

def flat_tensors(tree: Mapping) -> dict:
  """{"a.b.c": leaf} of a nested parameter dict (the folder's tensor names)."""
  flat = flatten_paths(tree, sep="/")
  bad = [k for k in flat if SEP in k]
  if bad:
    raise ValueError(f"parameter paths with {SEP!r} in a key cannot be named: {bad[:3]}")
  return {k.replace("/", SEP): v for k, v in flat.items()}


def nested(flat: Mapping) -> dict:
  """The inverse of `flat_tensors`."""
  out: dict = {}
  for name, leaf in flat.items():
    node = out
    *parents, last = name.split(SEP)
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = leaf
  return out


def parse_size(size: int | str) -> int:
  """Bytes of 5000000, "5GB", "500MB", "2GiB" (decimal units as HuggingFace's max_shard_size)."""
  if isinstance(size, (int, np.integer)):
    value = int(size)
  else:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), re.IGNORECASE)
    if not m:
      raise ValueError(f"max_shard_size {size!r}: expected bytes or e.g. '5GB', '500MB'")
    unit = (m.group(2) or "B").upper()
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    base = 1024 if "I" in unit else 1000
    value = int(float(m.group(1)) * base ** power)
  if value < 1:
    raise ValueError(f"max_shard_size {size!r}: must be positive")
  return value


def plan_shards(nbytes: Mapping[str, int], max_bytes: int) -> list[list[str]]:
  """Tensor names in order, cut into files of at most `max_bytes` (a larger tensor alone)."""
  shards: list[list[str]] = [[]]
  size = 0
  for name, n in nbytes.items():
    if shards[-1] and size + n > max_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += n
  return shards


# --- writing ----------------------------------------------------------------------------------

def _stale_files(directory: epath.Path) -> list[epath.Path]:
  if not directory.is_dir():
    return []
  return [p for p in directory.iterdir()
          if p.name in (WEIGHTS_FILE, INDEX_FILE, TOKENIZER_FILE) or SHARD_PATTERN.match(p.name)]


def write_pretrained(directory, cfg: ml_collections.ConfigDict, specs: Mapping[str, object],
                     tensor: Callable[[str], np.ndarray], *, tokenizer_proto: bytes | None,
                     max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
                     write: bool = True) -> list[str]:
  """Writes a save_pretrained folder; returns the names of the files written.

  `specs`: {tensor name: ShapeDtypeStruct} in file order; `tensor(name)` gives each as numpy
  (called once per name, a shard at a time, so only one shard is on the host at once; under
  several processes every process calls it -- it may be a collective -- and only the one with
  `write` writes). `tokenizer_proto`: the bytes of a tokenizer.model to include, or None."""
  max_bytes = parse_size(max_shard_size)
  nbytes = {k: int(math.prod(s.shape)) * np.dtype(s.dtype).itemsize for k, s in specs.items()}
  shards = plan_shards(nbytes, max_bytes)
  files = ([WEIGHTS_FILE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  dest = epath.Path(directory)
  if write:
    if dest.exists() and not dest.is_dir():
      raise PretrainedError(f"{directory}: exists and is not a folder")
    for stale in _stale_files(dest):  # a previous save's shards must not outlive this one
      stale.unlink()
  with tensor_files.local_path_for(directory) as local:
    if write:
      epath.Path(local).mkdir(parents=True, exist_ok=True)
    for names, file in zip(shards, files):
      arrays = {}
      for name in names:
        spec = specs[name]
        array = np.ascontiguousarray(np.asarray(tensor(name)).astype(spec.dtype, copy=False))
        if array.shape != tuple(spec.shape):
          raise AssertionError(f"{name}: built {array.shape}, the model has {spec.shape}")
        arrays[name] = array
      if write:
        save_file(arrays, str(epath.Path(local) / file), metadata={"format": "flax"})
      del arrays
    if not write:
      return files
    if len(shards) > 1:
      index = {"metadata": {"total_size": sum(nbytes.values())},
               "weight_map": {name: file for names, file in zip(shards, files)
                              for name in names}}
      (epath.Path(local) / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
      files = files + [INDEX_FILE]
    checkpoint.write_config(local, cfg)
    files = files + [CONFIG_FILE]
    if tokenizer_proto is not None:
      (epath.Path(local) / TOKENIZER_FILE).write_bytes(tokenizer_proto)
      files = files + [TOKENIZER_FILE]
  log.info("wrote %s (%d tensors, %.1f MB in %d file(s))", directory, len(specs),
           sum(nbytes.values()) / 1e6, len(shards))
  return files


# --- reading ----------------------------------------------------------------------------------

def read_config(directory) -> ml_collections.ConfigDict:
  """The stage config of a save_pretrained folder."""
  path = epath.Path(directory)
  if not path.is_dir():
    raise PretrainedError(f"{directory}: no such folder")
  if not (path / CONFIG_FILE).exists():
    raise PretrainedError(f"{directory}: no {CONFIG_FILE} -- not a save_pretrained folder")
  try:
    cfg = ml_collections.ConfigDict(json.loads((path / CONFIG_FILE).read_text()))
  except (ValueError, UnicodeDecodeError) as e:
    raise PretrainedError(f"{path / CONFIG_FILE}: not JSON ({e})") from None
  if "model" not in cfg:
    raise PretrainedError(f"{path / CONFIG_FILE} has no 'model' section; not a hawk-jax "
                          "stage config")
  return cfg


def tokenizer_file(directory) -> str | None:
  """The folder's tokenizer.model, or None (the built-in tokenizer)."""
  path = epath.Path(directory) / TOKENIZER_FILE
  return str(path) if path.exists() else None


def read_header(path) -> dict[str, tuple[str, tuple[int, ...]]]:
  """{name: (dtype, shape)} from a safetensors file's header (local or gs://), nothing else
  read; a file that is not safetensors (a pickle, a truncated file) is a PretrainedError."""
  p = epath.Path(path)
  try:
    with p.open("rb") as f:
      head = f.read(8)
      if len(head) < 8:
        raise PretrainedError(f"{path}: not a safetensors file (shorter than a header)")
      (size,) = struct.unpack("<Q", head)
      if size > _MAX_HEADER_BYTES:
        raise PretrainedError(f"{path}: not a safetensors file (its first 8 bytes give a "
                              f"header of {size} bytes); weights are read from safetensors "
                              "only")
      raw = f.read(size)
  except OSError as e:
    raise PretrainedError(f"{path}: cannot be read ({e})") from None
  try:
    header = json.loads(raw)
    if not isinstance(header, dict):
      raise ValueError("the header is not a JSON object")
    return {k: (str(v["dtype"]), tuple(int(n) for n in v["shape"]))
            for k, v in header.items() if k != "__metadata__"}
  except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise PretrainedError(f"{path}: not a safetensors file (unreadable header: {e}); weights "
                          "are read from safetensors only") from None


def weight_files(directory) -> list[str]:
  """The folder's safetensors files: those of model.safetensors.index.json, else
  model.safetensors."""
  path = epath.Path(directory)
  if (path / INDEX_FILE).exists():
    try:
      index = json.loads((path / INDEX_FILE).read_text())
      names = sorted(set(index["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise PretrainedError(f"{path / INDEX_FILE}: not a safetensors index ({e})") from None
    missing = [n for n in names if not (path / n).exists()]
    if missing:
      raise PretrainedError(f"{directory}: {INDEX_FILE} names missing file(s) {missing}")
    return [str(path / n) for n in names]
  if (path / WEIGHTS_FILE).exists():
    return [str(path / WEIGHTS_FILE)]
  others = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
  raise PretrainedError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE} (files there: "
                        f"{others[:10]}); write one with Engine.save_pretrained -- weights are "
                        "read from safetensors only")


def list_tensors(directory) -> dict[str, tuple[str, str, tuple[int, ...]]]:
  """{name: (file, dtype, shape)} of every tensor of the folder, from the headers alone."""
  out: dict[str, tuple[str, str, tuple[int, ...]]] = {}
  for file in weight_files(directory):
    for name, (dtype, shape) in read_header(file).items():
      if name in out:
        raise PretrainedError(f"{directory}: tensor {name} is in both {out[name][0]} and {file}")
      out[name] = (file, dtype, shape)
  return out


def check_tensors(directory, tensors: Mapping[str, tuple], expected: Mapping[str, object]
                  ) -> None:
  """Raises PretrainedError naming every tensor that is missing, unexpected or of another shape
  than the model of config.json has (`expected`: {name: ShapeDtypeStruct})."""
  problems = [f"missing {k} {tuple(expected[k].shape)}"
              for k in sorted(set(expected) - set(tensors))]
  problems += [f"unexpected {k} {tensors[k][2]}" for k in sorted(set(tensors) - set(expected))]
  problems += [f"shape of {k}: got {tensors[k][2]} in {epath.Path(tensors[k][0]).name}, the "
               f"model wants {tuple(expected[k].shape)}"
               for k in sorted(set(tensors) & set(expected))
               if tuple(tensors[k][2]) != tuple(expected[k].shape)]
  if problems:
    shown = "; ".join(problems[:10]) + (f"; ... ({len(problems) - 10} more)"
                                        if len(problems) > 10 else "")
    raise PretrainedError(f"{directory}: {len(problems)} tensor(s) do not match the model in "
                          f"its {CONFIG_FILE}: {shown}")


def read_params(directory, expected: Mapping[str, object], shardings=None, *,
                tensors: Mapping[str, tuple] | None = None) -> dict:
  """The folder's parameters as a nested dict of arrays in the dtypes of `expected`
  ({name: ShapeDtypeStruct}); checked first (`check_tensors`; `tensors`: `list_tensors` of the
  folder when already read). `shardings`: a nested tree of NamedShardings over the parameters
  (each device reads only its slice of each tensor), or None for the default device."""
  tensors = list_tensors(directory) if tensors is None else tensors
  check_tensors(directory, tensors, expected)
  flat_shardings = flat_tensors(shardings) if shardings is not None else {}
  by_file: dict[str, list[str]] = {}
  for name, (file, _, _) in tensors.items():
    by_file.setdefault(file, []).append(name)
  out = {}
  for file, names in by_file.items():
    with tensor_files.local_copy_of(file) as local, safe_open(local, framework="numpy") as f:
      for name in names:
        dtype = expected[name].dtype
        sharding = flat_shardings.get(name)
        if sharding is None:
          out[name] = jax.device_put(np.asarray(f.get_tensor(name)).astype(dtype, copy=False))
        else:
          piece = f.get_slice(name)
          out[name] = jax.make_array_from_callback(
              tuple(expected[name].shape), sharding,
              lambda index, piece=piece, dtype=dtype: np.asarray(piece[index]).astype(dtype))
  return nested(out)


# --- the LLM back from its decoding twin ------------------------------------------------------

def _decode_shape(name: str, leaf: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The shape a leaf of the model's layout has in the decode layout (kernels [*out, *in])."""
  n_in = _KERNEL_INPUT_AXES.get(name)
  if leaf != "kernel" or n_in is None:
    return tuple(shape)
  return tuple(shape[n_in:]) + tuple(shape[:n_in])


def _from_decode(name: str, leaf: str, array: np.ndarray) -> np.ndarray:
  n_in = _KERNEL_INPUT_AXES.get(name)
  if leaf != "kernel" or n_in is None:
    return array
  n_out = array.ndim - n_in
  return np.transpose(array, tuple(range(n_out, array.ndim)) + tuple(range(n_out)))


def llm_from_twin(abstract_llm: Mapping, twin_params: Mapping, *, scanned: bool,
                  decode_layout: bool, fetch: Callable[[object], np.ndarray]
                  ) -> dict[str, Callable[[], np.ndarray]]:
  """How to rebuild each leaf of the LLM's own parameter tree (`abstract_llm`, the model's
  layout: scanned `layers` when `scanned`, kernels [*in, *out]) from its decoding twin's
  parameters (hawk_jax.models.llama_decoding: per-layer `layers_{i}`, and with
  `decode_layout` kernels [*out, *in] with q/k/v and gate/up fused). Returns {"a.b": thunk};
  each thunk gives that leaf as numpy, `fetch` (array -> numpy) reading the twin's leaves.
  Pure data movement (transposes, splits, stacks): bit for bit the parameters the twin was
  made from."""
  flat_abs = flat_tensors(abstract_llm)

  def twin_leaf(path: tuple[str, ...]) -> np.ndarray:
    node = twin_params
    for p in path:
      node = node[p]
    return fetch(node)

  def layer_shape(path: tuple[str, ...]) -> tuple[int, ...]:
    shape = tuple(flat_abs[SEP.join(path)].shape)
    return shape[1:] if scanned and path[0] == "layers" else shape

  def unrolled_leaf(path: tuple[str, ...], layer: str | None) -> np.ndarray:
    where = ((layer,) + path[1:]) if layer is not None else path
    if not decode_layout:
      return twin_leaf(where)
    leaf, name = path[-1], path[-2]
    for fused, parts, holder in _DECODE_FUSED:
      if len(path) >= 3 and path[-3] == holder and name in parts:
        sizes = [_decode_shape(part, leaf, layer_shape(path[:-2] + (part, leaf)))[0]
                 for part in parts]
        whole = twin_leaf(where[:-2] + (fused, leaf))
        piece = np.split(whole, np.cumsum(sizes)[:-1], axis=0)[parts.index(name)]
        return _from_decode(name, leaf, piece)
    return _from_decode(name, leaf, twin_leaf(where))

  def thunk(key: str) -> Callable[[], np.ndarray]:
    path = tuple(key.split(SEP))
    if scanned and path[0] == "layers":
      layers = flat_abs[key].shape[0]
      return lambda: np.stack([unrolled_leaf(path, f"layers_{i}") for i in range(layers)])
    return lambda: unrolled_leaf(path, None)

  return {key: thunk(key) for key in flat_abs}
