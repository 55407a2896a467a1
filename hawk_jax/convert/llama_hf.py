"""HuggingFace LLaMA <-> Flax `Llama`: config mapping, a reversible name table, folder I/O.

The table (`llama_rules`) serves every caller: a plain HF `save_pretrained` folder
(`model.*`, `lm_head.*`) and HAWK checkpoints, which hold the same keys under `llama_model.`
(`torch_to_flax(state, llama_rules(cfg), cfg.num_layers, scan, prefix="llama_model.")`).
Buffers such as `rotary_emb.inv_freq` are accepted and ignored (`IGNORED_SUFFIXES`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
from etils import epath

from hawk_jax.convert.table import (
  LINEAR,
  ConversionError,
  Rule,
  Transform,
  check_shapes,
  flax_to_torch,
  torch_to_flax,
)
from hawk_jax.models.common import dtype_of
from hawk_jax.models.llama import Llama, param_shapes
from hawk_jax.models.model_config import LlamaConfig
from hawk_jax.tensor_files import load_safetensors_folder, local_path_for, read_json

# Non-persistent buffers that older checkpoints (and released HAWK .pth files) still carry.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# --- config -----------------------------------------------------------------------------------

def llama_config_from_hf(hf: Mapping[str, Any] | Any, **overrides) -> LlamaConfig:
  """A HF LLaMA `config.json` dict (or a `transformers.LlamaConfig`) -> LlamaConfig.

  `overrides` set our own fields (dtype, param_dtype, scan_layers, remat_policy, ...).
  """
  if not isinstance(hf, Mapping):
    hf = hf.to_dict()
  act = hf.get("hidden_act", "silu")
  if act not in ("silu", "swish"):
    raise NotImplementedError(f"hidden_act={act!r}: only SwiGLU (silu) LLaMA is implemented")
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in (None, "default"):
    raise NotImplementedError(f"rope_type={rope_type!r}: only default RoPE is implemented")
  theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
  hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
  head_dim = hf.get("head_dim")
  if head_dim is not None and int(head_dim) == hidden // heads:
    head_dim = None  # the default; keep configs that mean the same thing equal
  kv = hf.get("num_key_value_heads") or heads
  fields = dict(
      vocab_size=int(hf["vocab_size"]),
      hidden_size=hidden,
      intermediate_size=int(hf["intermediate_size"]),
      num_layers=int(hf["num_hidden_layers"]),
      num_heads=heads,
      num_kv_heads=int(kv),
      head_dim=None if head_dim is None else int(head_dim),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),  # HF LlamaConfig's default
      rope_theta=float(theta),
      max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
      attention_bias=bool(hf.get("attention_bias", False)),
      mlp_bias=bool(hf.get("mlp_bias", False)),
  )
  if heads % fields["num_kv_heads"]:
    raise ValueError(f"num_attention_heads={heads} is not a multiple of "
                     f"num_key_value_heads={fields['num_kv_heads']}")
  fields.update(overrides)
  return LlamaConfig(**fields)


def llama_config_to_hf(cfg: LlamaConfig, torch_dtype: str | None = None) -> dict[str, Any]:
  """LlamaConfig -> a `config.json` dict that `transformers.LlamaConfig` (4.x and 5.x) reads."""
  d = {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.resolved_head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_position_embeddings,
      "rms_norm_eps": cfg.rms_norm_eps,
      "rope_theta": cfg.rope_theta,  # transformers 4.x
      "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # 5.x
      "tie_word_embeddings": cfg.tie_word_embeddings,
      "attention_bias": cfg.attention_bias,
      "mlp_bias": cfg.mlp_bias,
      "attention_dropout": 0.0,
      "initializer_range": 0.02,
      "use_cache": True,
      "bos_token_id": 1,
      "eos_token_id": 2,
  }
  if torch_dtype:
    d["torch_dtype"] = torch_dtype
    d["dtype"] = torch_dtype
  return d


# --- the table --------------------------------------------------------------------------------

def _proj_in(heads: int, head_dim: int) -> Transform:
  """q/k/v_proj weight [heads*head_dim, embed] <-> kernel [embed, heads, head_dim]."""
  return Transform(
      lambda w: np.ascontiguousarray(w.T).reshape(w.shape[1], heads, head_dim),
      lambda k: np.ascontiguousarray(k.reshape(k.shape[0], heads * head_dim).T))


def _proj_out(heads: int, head_dim: int) -> Transform:
  """o_proj weight [embed, heads*head_dim] <-> kernel [heads, head_dim, embed]."""
  return Transform(
      lambda w: np.ascontiguousarray(w.T).reshape(heads, head_dim, w.shape[0]),
      lambda k: np.ascontiguousarray(k.reshape(heads * head_dim, k.shape[-1]).T))


def _bias(heads: int, head_dim: int) -> Transform:
  return Transform(lambda b: b.reshape(heads, head_dim), lambda b: b.reshape(heads * head_dim))


def llama_rules(cfg: LlamaConfig) -> list[Rule]:
  """HF key -> Flax path for every parameter of `Llama(cfg)` (per-layer keys use `{i}`)."""
  n, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  L, A, M = "model.layers.{i}.", "layers_{i}/self_attn/", "layers_{i}/mlp/"
  rules = [
      Rule("model.embed_tokens.weight", "embed_tokens/embedding"),
      Rule(L + "input_layernorm.weight", "layers_{i}/input_layernorm/scale"),
      Rule(L + "post_attention_layernorm.weight", "layers_{i}/post_attention_layernorm/scale"),
      Rule(L + "self_attn.q_proj.weight", A + "q_proj/kernel", _proj_in(n, d)),
      Rule(L + "self_attn.k_proj.weight", A + "k_proj/kernel", _proj_in(k, d)),
      Rule(L + "self_attn.v_proj.weight", A + "v_proj/kernel", _proj_in(k, d)),
      Rule(L + "self_attn.o_proj.weight", A + "o_proj/kernel", _proj_out(n, d)),
      Rule(L + "mlp.gate_proj.weight", M + "gate_proj/kernel", LINEAR),
      Rule(L + "mlp.up_proj.weight", M + "up_proj/kernel", LINEAR),
      Rule(L + "mlp.down_proj.weight", M + "down_proj/kernel", LINEAR),
      Rule("model.norm.weight", "norm/scale"),
  ]
  if cfg.attention_bias:
    rules += [
        Rule(L + "self_attn.q_proj.bias", A + "q_proj/bias", _bias(n, d)),
        Rule(L + "self_attn.k_proj.bias", A + "k_proj/bias", _bias(k, d)),
        Rule(L + "self_attn.v_proj.bias", A + "v_proj/bias", _bias(k, d)),
        Rule(L + "self_attn.o_proj.bias", A + "o_proj/bias"),
    ]
  if cfg.mlp_bias:
    rules += [Rule(L + f"mlp.{p}.bias", M + f"{p}/bias")
              for p in ("gate_proj", "up_proj", "down_proj")]
  if not cfg.tie_word_embeddings:
    rules.append(Rule("lm_head.weight", "lm_head/kernel", LINEAR))
  return rules


def ignorable_keys(cfg: LlamaConfig, keys, prefix: str = "") -> set[str]:
  """Keys of a HF state dict that carry nothing the Flax model needs."""
  out = {key for key in keys if key.startswith(prefix) and key.endswith(IGNORED_SUFFIXES)}
  if cfg.tie_word_embeddings and prefix + "lm_head.weight" in keys:
    out.add(prefix + "lm_head.weight")  # transformers 4.x writes the tied copy too
  return out


def params_from_state_dict(state: Mapping[str, np.ndarray], cfg: LlamaConfig,
                           prefix: str = "", dtype=None, strict: bool = True) -> dict:
  """A HF LLaMA state dict (numpy) -> Flax params of `Llama(cfg)`, shape-checked.

  With `strict`, a key under `prefix` that the table does not know is an error naming it.
  """
  params, used = torch_to_flax(state, llama_rules(cfg), cfg.num_layers, scan=cfg.scan_layers,
                               prefix=prefix, dtype=dtype)
  if strict:
    extra = sorted(key for key in state if key.startswith(prefix)
                   and key not in used and key not in ignorable_keys(cfg, state, prefix))
    if extra:
      raise ConversionError(f"{len(extra)} tensor(s) in the source that a LLaMA with this "
                            f"config does not have, e.g. {extra[:5]}")
  check_shapes(params, param_shapes(cfg), what="LLaMA params")
  return params


def state_dict_from_params(params: Mapping, cfg: LlamaConfig,
                           prefix: str = "") -> dict[str, np.ndarray]:
  """Flax params -> a HF LLaMA state dict of numpy arrays (keys under `prefix`)."""
  return flax_to_torch(params, llama_rules(cfg), cfg.num_layers, scan=cfg.scan_layers,
                       prefix=prefix)


# --- folders ----------------------------------------------------------------------------------

def llama_from_hf(folder: str, dtype=None, scan_layers: bool = True, **config_overrides):
  """Load a `save_pretrained` LLaMA folder (config.json + safetensors, sharded or not; local or
  gs://).

  `dtype` (e.g. "bfloat16") sets both the parameter and the compute dtype; None keeps float32.
  Returns `(model, params)` with params as a nested dict of jax arrays.
  """
  import jax.numpy as jnp

  cfg_path = epath.Path(folder) / "config.json"
  if not cfg_path.exists():
    raise FileNotFoundError(f"{folder}: no config.json (expected a save_pretrained folder)")
  overrides = dict(scan_layers=scan_layers)
  if dtype is not None:
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    dtype_of(name)  # validates
    overrides.update(dtype=name, param_dtype=name)
  overrides.update(config_overrides)
  cfg = llama_config_from_hf(read_json(cfg_path), **overrides)
  state = load_safetensors_folder(folder)
  params = params_from_state_dict(state, cfg, dtype=dtype_of(cfg.param_dtype))
  del state
  params = _tree_map(params, jnp.asarray)
  return Llama(cfg), params


def llama_to_hf(model, params: Mapping, folder: str, torch_dtype: str | None = None) -> str:
  """Write `config.json` + `model.safetensors` that `LlamaForCausalLM.from_pretrained` loads
  (into a local folder, or gs://: written locally, then copied).

  `torch_dtype` ("float32", "bfloat16", ...) defaults to the parameters' dtype.
  """
  cfg = model.config if hasattr(model, "config") else model
  state = state_dict_from_params(_tree_map(params, np.asarray), cfg)
  dtypes = {str(a.dtype) for a in state.values()}
  if torch_dtype is None:
    torch_dtype = "bfloat16" if "bfloat16" in dtypes else (
        dtypes.pop() if len(dtypes) == 1 else "float32")
  with local_path_for(folder) as local:
    os.makedirs(local, exist_ok=True)
    _save_safetensors(state, os.path.join(local, "model.safetensors"), torch_dtype)
    with open(os.path.join(local, "config.json"), "w", encoding="utf-8") as f:
      json.dump(llama_config_to_hf(cfg, torch_dtype), f, indent=2)
  return folder


def _save_safetensors(state: dict[str, np.ndarray], path: str, torch_dtype: str) -> None:
  metadata = {"format": "pt"}
  if torch_dtype in ("float32", "float16", "float64"):
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v.astype(torch_dtype)) for k, v in state.items()}, path,
              metadata=metadata)
    return
  import torch
  from safetensors.torch import save_file
  tdt = getattr(torch, torch_dtype)
  save_file({k: torch.from_numpy(np.ascontiguousarray(v.astype(np.float32))).to(tdt)
             for k, v in state.items()}, path, metadata=metadata)


def _tree_map(tree, fn):
  if isinstance(tree, Mapping):
    return {k: _tree_map(v, fn) for k, v in tree.items()}
  return fn(tree)
