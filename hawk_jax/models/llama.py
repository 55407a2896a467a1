"""The LLaMA-family decoder (LLaMA-2, and GQA / head_dim / bias variants) in Flax Linen.

Numerically it follows `transformers.LlamaForCausalLM`: RMSNorm in float32, RoPE in the
half-rotation (`rotate_half`) layout, SwiGLU MLP, grouped-query attention. Matmuls run in
`config.dtype` with float32 accumulation (`preferred_element_type`); logits are float32.

Parameter layout (HF names, Flax leaves; `layers_{i}` or, with `scan_layers`, one `layers`
module whose leaves carry a leading layer axis):
  embed_tokens/embedding                  [vocab, embed]
  layers_{i}/input_layernorm/scale        [embed]
  layers_{i}/self_attn/q_proj/kernel      [embed, heads, head_dim]     (+ bias [heads, head_dim])
  layers_{i}/self_attn/{k,v}_proj/kernel  [embed, kv_heads, head_dim]  (+ bias)
  layers_{i}/self_attn/o_proj/kernel      [heads, head_dim, embed]     (+ bias [embed])
  layers_{i}/post_attention_layernorm/scale
  layers_{i}/mlp/{gate,up}_proj/kernel    [embed, mlp]; mlp/down_proj/kernel [mlp, embed]
  norm/scale                              [embed]
  lm_head/kernel                          [embed, vocab]  (absent with tie_word_embeddings)

Call forms:
  logits = model.apply({"params": p}, input_ids)                       # [B,T] -> [B,T,V] f32
  logits = model.apply({"params": p}, inputs_embeds=e, attention_mask=m)
  emb    = model.apply({"params": p}, input_ids, method=Llama.embed)   # [B,T,E] compute dtype
  logits, cache = model.apply({"params": p}, ids_or_embeds, attention_mask=m, cache=cache)

`attention_mask` is [B,T] with 1 for real tokens and 0 for padding, on either side. Positions
come from the mask as in HF generation (`cumsum(mask) - 1`), so a left-padded prompt gets the
same positions as the unpadded one; pass `positions` to override.

With `cache=` (a KV cache: models/kv_cache.py) a call writes its new tokens into the cache and
returns `(logits, new_cache)`; prefill and decode steps are the same call with different
lengths. With `last_only=True` only the last position's logits are computed ([B,1,V]): what
prefill needs. `decode_layout=True` is the decoding twin's kernel layout
(models/llama_decoding.py).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hawk_jax.models import kv_cache
from hawk_jax.models.common import (
  constrain,
  dtype_of,
  fused_attention,
  maybe_remat,
  param_with_axes,
  resolve_attention_impl,
)
from hawk_jax.models.kernels import einsum_f32, matmul_as_2d, matmul_transposed, scale_queries
from hawk_jax.models.model_config import LlamaConfig

_INIT = nn.initializers.normal(stddev=0.02)  # HF's initializer_range


class Linear(nn.Module):
  """A dense layer with a multi-dimensional kernel [*in_shape, *out_shape] and logical axes.

  `transposed`: the kernel is stored [*out_shape, *in_shape] (the decoding twin's layout, see
  `for_decoding`), which XLA's CPU products stream faster when only a few rows come in.
  """
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  out_dtype: Any = None  # None: `dtype`; the LM head keeps float32
  transposed: bool = False

  @nn.compact
  def __call__(self, x):
    n_in = len(self.in_shape)
    shape, axes = tuple(self.in_shape) + tuple(self.out_shape), tuple(self.kernel_axes)
    if self.transposed:
      shape, axes = tuple(self.out_shape) + tuple(self.in_shape), axes[n_in:] + axes[:n_in]
    kernel = self.param("kernel", param_with_axes(_INIT, *axes), shape, self.param_dtype)
    if self.transposed:
      y = matmul_transposed(x, kernel, n_in, self.dtype)
    else:
      y = matmul_as_2d(x, kernel, n_in, self.dtype)
    if self.use_bias:
      bias = self.param("bias", param_with_axes(nn.initializers.zeros,
                                                *self.kernel_axes[n_in:]),
                        tuple(self.out_shape), self.param_dtype)
      y = y + bias.astype(jnp.float32)
    return y.astype(self.out_dtype or self.dtype)


class RMSNorm(nn.Module):
  """x / rms(x) in float32, cast back, times a learned scale (HF LlamaRMSNorm)."""
  eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", param_with_axes(nn.initializers.ones, "norm"), (x.shape[-1],),
                       self.param_dtype)
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = (x32 * lax.rsqrt(var + self.eps)).astype(self.dtype)
    return scale.astype(self.dtype) * y


def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
  return (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32)
                                       / np.float32(head_dim)))).astype(np.float32)


def rope_cos_sin(positions, head_dim: int, theta: float):
  """cos, sin of shape [B, T, head_dim] (float32) for integer positions [B, T]."""
  freqs = positions.astype(jnp.float32)[..., None] * rope_inv_freq(head_dim, theta)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def rotate_half(x):
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x, cos, sin):
  """x [B, T, heads, D]; cos/sin [B, T, D]. Rotation done in float32, result in x's dtype."""
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  x32 = x.astype(jnp.float32)
  return (x32 * c + rotate_half(x32) * s).astype(x.dtype)


class LlamaMLP(nn.Module):
  config: LlamaConfig
  transposed: bool = False  # kernels stored [out, in] (decoding twin)

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    kw = dict(use_bias=cfg.mlp_bias, dtype=dtype_of(cfg.dtype),
              param_dtype=dtype_of(cfg.param_dtype), transposed=self.transposed)
    e, m = cfg.hidden_size, cfg.intermediate_size
    if self.transposed:  # the decode layout's one product for both (see `to_decode_layout`)
      gate_up = Linear((e,), (2 * m,), ("embed", "mlp"), name="gate_up_proj", **kw)(x)
      gate, up = gate_up[..., :m], gate_up[..., m:]
    else:
      gate = Linear((e,), (m,), ("embed", "mlp"), name="gate_proj", **kw)(x)
      up = Linear((e,), (m,), ("embed", "mlp"), name="up_proj", **kw)(x)
    h = constrain(nn.silu(gate) * up, "activation_batch", "activation_length", "activation_mlp")
    return Linear((m,), (e,), ("mlp", "embed"), name="down_proj", **kw)(h)


class LlamaAttention(nn.Module):
  """Grouped-query self-attention with RoPE; optionally reads/writes a stacked KV cache.

  `kv` is None (no cache) or the pair of full stacked caches [L, B, K, S, D]; this layer writes
  its new keys/values at slot `cache_index` of layer `layer` and attends over its own slice.
  """
  config: LlamaConfig
  transposed: bool = False  # kernels stored [out, in] (decoding twin)

  @nn.compact
  def __call__(self, x, cos, sin, mask, kv=None, layer=None, cache_index=None):
    cfg = self.config
    dtype = dtype_of(cfg.dtype)
    n, k, d, e = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim, cfg.hidden_size
    kw = dict(use_bias=cfg.attention_bias, dtype=dtype, param_dtype=dtype_of(cfg.param_dtype),
              transposed=self.transposed)
    if self.transposed:  # the decode layout's one product for all three (`to_decode_layout`)
      qkv = Linear((e,), (n + 2 * k, d), ("embed", "heads", "head_dim"), name="qkv_proj",
                   **kw)(x)
      q, key, val = qkv[..., :n, :], qkv[..., n:n + k, :], qkv[..., n + k:, :]
    else:
      q = Linear((e,), (n, d), ("embed", "heads", "head_dim"), name="q_proj", **kw)(x)
      key = Linear((e,), (k, d), ("embed", "kv_heads", "head_dim"), name="k_proj", **kw)(x)
      val = Linear((e,), (k, d), ("embed", "kv_heads", "head_dim"), name="v_proj", **kw)(x)
    q = apply_rope(q, cos, sin)
    key = apply_rope(key, cos, sin)
    q = constrain(q, "activation_batch", "activation_length", "activation_heads", None)
    key = constrain(key, "activation_batch", "activation_length", "activation_kv_heads", None)
    val = constrain(val, "activation_batch", "activation_length", "activation_kv_heads", None)

    impl = resolve_attention_impl(cfg.attention_impl, dtype, d, q.shape[1], key.shape[1],
                                  masked=mask is not None)
    if kv is None and impl != "einsum":
      out = fused_attention(q.astype(dtype), key, val, impl=impl, scale=d ** -0.5, mask=mask,
                            is_causal=mask is None)
    elif kv is None:
      out = _attention(q, key, val, mask, d ** -0.5, dtype)
    else:
      out, kv = kv_cache.attend(q, key, val, kv, layer, cache_index, mask, d ** -0.5, dtype)
    out = constrain(out, "activation_batch", "activation_length", "activation_heads", None)
    out = Linear((n, d), (e,), ("heads", "head_dim", "embed"), name="o_proj", **kw)(out)
    return out, kv


def _attention(q, k, v, mask, scale, dtype):
  """Grouped-query attention without a cache: q [B,T,N,D], k/v [B,T,K,D] -> [B,T,N,D].

  `mask` [B,1,T,T] bool (True = attend) or None (causal). The products run head-major and in
  `einsum_f32` (float32 accumulation; a bf16 backward pass in bf16), the softmax in float32.
  On CPU this is faster than `jax.nn.dot_product_attention`, whose bf16 product of the
  probabilities with the values has a bf16 result (slow there) and an f32 backward pass.
  """
  b, t, n, d = q.shape
  kh = k.shape[2]
  g = n // kh
  qh = scale_queries(q, scale, dtype).reshape(b, t, kh, g, d).transpose(0, 2, 3, 1, 4)
  k = k.astype(dtype).transpose(0, 2, 1, 3)                               # [B,K,S,D]
  v = v.astype(dtype).transpose(0, 2, 1, 3)
  logits = einsum_f32("bkgtd,bksd->bkgts", qh, k)
  if mask is None:
    mask = jnp.tril(jnp.ones((t, t), jnp.bool_))[None, None]
  logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  out = einsum_f32("bkgts,bksd->bkgtd", probs, v)
  return out.astype(dtype).transpose(0, 3, 1, 2, 4).reshape(b, t, n, d)


class LlamaDecoderLayer(nn.Module):
  """Pre-norm attention + SwiGLU block. Scan-shaped: carry = (hidden, kv cache, layer index)."""
  config: LlamaConfig
  transposed: bool = False  # kernels stored [out, in] (decoding twin)

  @nn.compact
  def __call__(self, carry, cos, sin, mask, cache_index):
    cfg = self.config
    x, kv, layer = carry
    norm = dict(eps=cfg.rms_norm_eps, dtype=dtype_of(cfg.dtype),
                param_dtype=dtype_of(cfg.param_dtype))
    h = RMSNorm(name="input_layernorm", **norm)(x)
    h, kv = LlamaAttention(cfg, self.transposed, name="self_attn")(h, cos, sin, mask, kv, layer,
                                                                  cache_index)
    x = x + h
    h = RMSNorm(name="post_attention_layernorm", **norm)(x)
    x = x + LlamaMLP(cfg, self.transposed, name="mlp")(h)
    x = constrain(x, "activation_batch", "activation_length", "activation_embed")
    return (x, kv, layer + 1), None


class Llama(nn.Module):
  """LlamaForCausalLM. See the module docstring for call forms, layout and the cache.

  `decode_layout`: every projection kernel (and the LM head) stored [out, in], q/k/v as one
  `qkv_proj` and gate/up as one `gate_up_proj`: the layout of the decoding twin that
  `for_decoding` builds; same outputs, faster few-row steps on CPU.
  """
  config: LlamaConfig
  decode_layout: bool = False

  def setup(self):
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    self.embed_tokens = nn.Embed(
        cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=pdtype,
        embedding_init=param_with_axes(_INIT, "vocab", "embed"))
    layer_cls = maybe_remat(LlamaDecoderLayer, cfg.remat_policy)
    if cfg.scan_layers:
      self.layers = nn.scan(
          layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(nn.broadcast,) * 4, length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(cfg, self.decode_layout)
    else:  # named layers_{i}
      self.layers = [layer_cls(cfg, self.decode_layout) for _ in range(cfg.num_layers)]
    self.norm = RMSNorm(eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=pdtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = Linear((cfg.hidden_size,), (cfg.vocab_size,), ("embed", "vocab"),
                            dtype=dtype, param_dtype=pdtype, out_dtype=jnp.float32,
                            transposed=self.decode_layout)

  def embed(self, input_ids):
    x = self.embed_tokens(input_ids.astype(jnp.int32))
    return constrain(x, "activation_batch", "activation_length", "activation_embed")

  def logits(self, x):
    """Final hidden states [B,T,E] (after the norm) -> float32 logits [B,T,V]."""
    if self.config.tie_word_embeddings:
      y = matmul_as_2d(x, self.embed_tokens.embedding.T, 1, dtype_of(self.config.dtype))
    else:
      y = self.lm_head(x)
    return constrain(y, "activation_batch", "activation_length", "activation_vocab")

  def __call__(self, input_ids=None, *, inputs_embeds=None, attention_mask=None, positions=None,
               cache: kv_cache.Cache | None = None, last_only: bool = False,
               return_hidden: bool = False):
    """Logits [B,T,V] float32 (or [B,1,V] with last_only); with `cache`, (logits, new_cache).

    `return_hidden` (no cache): the final hidden states after the norm [B,T,E] in place of the
    logits, for a loss that applies `logits` itself (e.g. only where targets are supervised).
    """
    cfg = self.config
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if return_hidden and cache is not None:
      raise ValueError("return_hidden is for cache-free calls")
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(
        dtype_of(cfg.dtype))
    x = constrain(x, "activation_batch", "activation_length", "activation_embed")
    b, t = x.shape[:2]
    m = None if attention_mask is None else attention_mask.astype(jnp.bool_)

    if cache is None:
      kv, cache_index = None, jnp.zeros((), jnp.int32)
      if positions is None:
        positions = (jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)) if m is None
                     else jnp.where(m, jnp.cumsum(m, axis=-1, dtype=jnp.int32) - 1, 0))
      if m is None:
        mask = None  # plain causal
      else:
        causal = jnp.tril(jnp.ones((t, t), jnp.bool_))
        mask = causal[None, None] & m[:, None, None, :]
    else:
      mm = jnp.ones((b, t), jnp.bool_) if m is None else m
      cache_index = cache["index"]
      if positions is None:
        positions = jnp.where(
            mm, cache["pos"][:, None] + jnp.cumsum(mm, axis=-1, dtype=jnp.int32) - 1, 0)
      slots = lax.dynamic_update_slice(cache["mask"], mm, (0, cache_index))
      s = slots.shape[1]
      causal = (jnp.arange(s, dtype=jnp.int32)[None, :]
                <= cache_index + jnp.arange(t, dtype=jnp.int32)[:, None])
      mask = causal[None, None] & slots[:, None, None, :]
      kv = (cache["k"], cache["v"])
      if isinstance(kv[0], tuple) and cfg.scan_layers:
        raise ValueError("a per-layer KV cache needs an unrolled model (scan_layers=False; "
                         "see for_decoding)")

    cos, sin = rope_cos_sin(positions, cfg.resolved_head_dim, cfg.rope_theta)
    if cfg.scan_layers:
      carry, _ = self.layers((x, kv, jnp.zeros((), jnp.int32)), cos, sin, mask, cache_index)
    else:
      carry = (x, kv, 0)  # a Python layer index: static cache slices
      for layer in self.layers:
        carry, _ = layer(carry, cos, sin, mask, cache_index)
    x, kv, _ = carry
    x = self.norm(x)
    if last_only:
      x = x[:, -1:]
    if return_hidden:
      return x
    logits = self.logits(x)
    if cache is None:
      return logits
    new_cache = {"k": kv[0], "v": kv[1], "mask": slots,
                 "pos": cache["pos"] + jnp.sum(mm, axis=-1, dtype=jnp.int32),
                 "index": cache_index + t}
    return logits, new_cache


def init_params(config: LlamaConfig, seed: int = 0):
  """Random parameters (unboxed) for `config`, drawn on the host with numpy: N(0, 0.02)
  weights (HF's initializer_range), unit norm scales, zero biases. For tests and smoke runs:
  it compiles nothing (XLA's threefry init of even a tiny model takes seconds to compile)."""
  rs = np.random.RandomState(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "scale":
      a = np.ones(leaf.shape, np.float32)
    elif name == "bias":
      a = np.zeros(leaf.shape, np.float32)
    else:
      a = rs.normal(0.0, 0.02, leaf.shape).astype(np.float32)
    return jnp.asarray(a, leaf.dtype)
  return Llama(config), jax.tree_util.tree_map_with_path(draw, param_shapes(config))


def param_shapes(config: LlamaConfig):
  """The model's parameter tree as ShapeDtypeStructs (unboxed), without allocating."""
  model = Llama(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 1), jnp.int32)))
  return nn.unbox(shapes["params"])


