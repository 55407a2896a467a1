"""The KV cache of LLaMA decoding: its layout, how a layer writes and attends over it, and how
beam search reorders it.

A cache is a dict of fixed-shape arrays, so one compiled step serves every token of a decode
loop:
  k, v   [layers, batch, kv_heads, max_len, head_dim]   keys (after RoPE) and values; or, for
         an unrolled model (`init_cache(..., per_layer=True)`), a tuple of one array per
         layer, [batch * kv_heads, max_len, head_dim] each: each layer updates and reads its
         own buffers in place (slicing a layer out of the stacked cache, or reshaping a
         [batch, kv_heads, ...] buffer for the products, copied it on every step on CPU)
  mask   [batch, max_len] bool   which slots hold a real (non-pad) token
  pos    [batch] int32           real tokens seen so far per row = RoPE position of the next one
  index  [] int32                next slot to write (slots fill left to right, same for all rows)
A call with `cache=` (models/llama.py) writes its T new tokens at slots index..index+T-1
(dynamic_update_slice), attends causally by slot over the valid slots, and returns
`(logits, new_cache)`. Prefill and decode steps are the same call with different T. Rows of
one batch may have different amounts of left padding; their pad slots stay masked forever. The
caller keeps index + T <= max_len (dynamic_update_slice clamps, so an overfull cache would
overwrite its last slots).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from hawk_jax.models.common import dtype_of
from hawk_jax.models.kernels import scale_queries
from hawk_jax.models.model_config import LlamaConfig

Cache = dict[str, jax.Array]


def write_slots(buf, new, cache_index):
  """Write new [B,T,K,D] into a per-layer buffer [B*K, S, D] at slots
  [cache_index, cache_index + T)."""
  b, t, k, d = new.shape
  return lax.dynamic_update_slice(
      buf, new.transpose(0, 2, 1, 3).reshape(b * k, t, d).astype(buf.dtype), (0, cache_index, 0))


def per_layer_attention(q, k, v, mask, scale, dtype):
  """q [B,T,N,D] over a per-layer cache (k, v [B*K, S, D]).

  Batch and kv-head share the products' one batch dimension, so each cache buffer is a dot
  operand as it is. With [B, K, S, D] buffers XLA reshaped (batch 1) or transposed (batch 8)
  the freshly updated cache for the products, computing the in-place update twice or copying
  every layer's cache on every decode step."""
  b, t, n, d = q.shape
  bk = k.shape[0]
  kh = bk // b
  g = n // kh
  s = mask.shape[-1]
  qr = scale_queries(q, scale, dtype).reshape(b, t, kh, g, d).transpose(0, 2, 3, 1, 4)
  qr = qr.reshape(bk, g * t, d)
  logits = jnp.einsum("nqd,nsd->nqs", qr, k.astype(dtype), preferred_element_type=jnp.float32)
  keep = jnp.broadcast_to(mask[:, :, None], (b, kh, g, t, s)).reshape(bk, g * t, s)
  logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  out = jnp.einsum("nqs,nsd->nqd", probs, v.astype(dtype), preferred_element_type=jnp.float32)
  out = out.astype(dtype).reshape(b, kh, g, t, d).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, t, n, d)


def stacked_attention(q, k, v, mask, scale, dtype):
  """q [B,T,N,D] over cache slots k/v [B,K,S,D] (the stacked cache's layout: every dot is a
  batched matrix product over contiguous [S,D] blocks, no transposes of the cache)."""
  b, t, n, d = q.shape
  kh = k.shape[1]
  q = scale_queries(q, scale, dtype).reshape(b, t, kh, n // kh, d)
  logits = jnp.einsum("btkgd,bksd->bkgts", q, k.astype(dtype), preferred_element_type=jnp.float32)
  logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  out = jnp.einsum("bkgts,bksd->btkgd", probs, v.astype(dtype),
                   preferred_element_type=jnp.float32)
  return out.astype(dtype).reshape(b, t, n, d)


def init_cache(config: LlamaConfig, batch: int, max_len: int, dtype=None,
               per_layer: bool = False) -> Cache:
  """An empty KV cache for `batch` rows and `max_len` slots (prompt + new tokens).

  `per_layer`: k and v as tuples of per-layer buffers (for unrolled models, `scan_layers`
  False), which decode without copying each layer's slice out of a stacked array; each is
  [batch * kv_heads, max_len, head_dim] (see `per_layer_attention`).
  """
  dtype = dtype_of(dtype if dtype is not None else config.dtype)
  shape = (batch, config.num_kv_heads, max_len, config.resolved_head_dim)
  if per_layer:
    per = (batch * config.num_kv_heads, max_len, config.resolved_head_dim)
    k = tuple(jnp.zeros(per, dtype) for _ in range(config.num_layers))
    v = tuple(jnp.zeros(per, dtype) for _ in range(config.num_layers))
  else:
    k = jnp.zeros((config.num_layers,) + shape, dtype)
    v = jnp.zeros((config.num_layers,) + shape, dtype)
  return {
      "k": k,
      "v": v,
      "mask": jnp.zeros((batch, max_len), jnp.bool_),
      "pos": jnp.zeros((batch,), jnp.int32),
      "index": jnp.zeros((), jnp.int32),
  }


def cache_logical_axes() -> dict[str, tuple]:
  """Logical axis names of each cache entry (for sharding a cache with the config's rules)."""
  kv = ("layers", "activation_batch", "activation_kv_heads", "activation_length", None)
  return {"k": kv, "v": kv, "mask": ("activation_batch", "activation_length"),
          "pos": ("activation_batch",), "index": ()}


def reorder_cache(cache: Cache, rows) -> Cache:
  """Gather cache rows (beam search): row i of the result is row rows[i] of `cache`."""
  if isinstance(cache["k"], tuple):  # per-layer buffers [B*K, ., .]: gather whole rows
    def take_rows(a):
      b = cache["pos"].shape[0]
      return jnp.take(a.reshape(b, -1, *a.shape[1:]), rows, axis=0).reshape(-1, *a.shape[1:])
    k = tuple(take_rows(a) for a in cache["k"])
    v = tuple(take_rows(a) for a in cache["v"])
  else:
    k, v = jnp.take(cache["k"], rows, axis=1), jnp.take(cache["v"], rows, axis=1)
  return {"k": k, "v": v, "mask": jnp.take(cache["mask"], rows, axis=0),
          "pos": jnp.take(cache["pos"], rows, axis=0), "index": cache["index"]}


def repeat_cache(cache: Cache, n: int) -> Cache:
  """Each row repeated n times consecutively ([b0, b0, ..., b1, ...]), as HF expands beams."""
  rows = jnp.repeat(jnp.arange(cache["pos"].shape[0]), n)
  return reorder_cache(cache, rows)


def attend(q, key, val, kv, layer, cache_index, mask, scale: float, dtype):
  """One layer's attention over the cache: writes its new keys/values [B,T,K,D] at slot
  `cache_index` of layer `layer` and attends with q [B,T,N,D] over that layer's slots.
  `kv` is (k, v): stacked [L,B,K,S,D] arrays, or tuples of per-layer buffers (then `layer` is a
  static Python int). Returns (out [B,T,N,D], the updated kv)."""
  ck, cv = kv
  if isinstance(ck, tuple):  # one [B*K, S, D] buffer per layer, for keys and for values
    k_l = write_slots(ck[layer], key, cache_index)
    v_l = write_slots(cv[layer], val, cache_index)
    kv = (ck[:layer] + (k_l,) + ck[layer + 1:], cv[:layer] + (v_l,) + cv[layer + 1:])
    return per_layer_attention(q, k_l, v_l, mask, scale, dtype), kv
  start = (layer, 0, 0, cache_index, 0)
  ck = lax.dynamic_update_slice(ck, key.transpose(0, 2, 1, 3)[None].astype(ck.dtype), start)
  cv = lax.dynamic_update_slice(cv, val.transpose(0, 2, 1, 3)[None].astype(cv.dtype), start)
  return stacked_attention(q, ck[layer], cv[layer], mask, scale, dtype), (ck, cv)
