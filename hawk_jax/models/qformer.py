"""BLIP-2's Q-Former as applied to query tokens only (no text).

Post-LN BERT layers: the embeddings LayerNorm (and dropout) on the queries, then per layer
self-attention, cross-attention to the encoder states in layers `i % cross_attention_freq == 0`,
and the query FFN (`intermediate_query` / `output_query`), each sub-block ending in
LayerNorm(dropout(dense(.)) + residual). The text-only BERT parts (word/position embeddings,
the text FFN) are not built: HAWK never feeds text to its Q-Formers.

The same class is BLIP-2's image Q-Former (12 layers, cross-attention every 2nd layer to 1408-wide
ViT tokens) and HAWK's video Q-Former (2 layers, cross-attention every layer to 768-wide frame
tokens). Layers differ (some have cross-attention), so they are not scanned.

Parameter tree (the converters rely on these names):
  input_norm/{scale, bias}
  layers_{i}/self_attention/{query, key, value}/{kernel [E, H, Dh], bias [H, Dh]},
             self_attention/out/{kernel [H, Dh, E], bias}, self_attention/norm/{scale, bias},
             cross_attention/... (same; key/value kernels [encoder_hidden_size, H, Dh]),
             mlp/{wi/{kernel [E, F], bias}, wo/{kernel [F, E], bias}, norm/{scale, bias}}
"""
from __future__ import annotations

import flax.linen as nn

from hawk_jax.models.blip2_layers import Dense, LayerNorm, attention
from hawk_jax.models.common import constrain, dtype_of
from hawk_jax.models.kernels import gelu_exact
from hawk_jax.models.model_config import QFormerConfig

_HIDDEN = ("activation_batch", "activation_length", "activation_embed")
_HEADS = ("activation_batch", "activation_length", "activation_heads", "activation_head_dim")


def has_cross_attention(config: QFormerConfig, layer: int) -> bool:
  """BLIP-2 puts cross-attention in layers 0, f, 2f, ... (f = cross_attention_freq)."""
  return layer % config.cross_attention_freq == 0


class BertAttention(nn.Module):
  """Multi-head attention + output dense + dropout + residual LayerNorm (BERT's post-LN)."""
  config: QFormerConfig
  cross: bool = False

  @nn.compact
  def __call__(self, x, kv=None, kv_mask=None, deterministic: bool = True):
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    if cfg.hidden_size % cfg.num_heads:
      raise ValueError(f"Q-Former hidden_size {cfg.hidden_size} is not a multiple of num_heads "
                       f"{cfg.num_heads}")
    heads, head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    kv_axis = "kv_embed" if self.cross else "embed"
    source = kv if self.cross else x

    def proj(name, inputs, in_axis):
      y = Dense((heads, head_dim), (in_axis, "heads", "head_dim"), dtype=dtype,
                param_dtype=pdtype, name=name)(inputs)
      return constrain(y, *_HEADS)

    q = proj("query", x, "embed")
    k = proj("key", source, kv_axis)
    v = proj("value", source, kv_axis)
    probs_dropout = None
    if cfg.dropout > 0 and not deterministic:
      probs_dropout = nn.Dropout(cfg.dropout, deterministic=False, name="probs_dropout")
    out = attention(q, k, v, dtype, kv_mask=kv_mask if self.cross else None,
                    probs_dropout=probs_dropout, impl=cfg.attention_impl)
    out = constrain(out, *_HEADS)
    out = Dense((cfg.hidden_size,), ("heads", "head_dim", "embed"), n_contract=2, dtype=dtype,
                param_dtype=pdtype, name="out")(out)
    out = nn.Dropout(cfg.dropout)(out, deterministic=deterministic)
    out = LayerNorm(cfg.layer_norm_eps, dtype, pdtype, name="norm")(out + x)
    return constrain(out, *_HIDDEN)


class BertQueryMlp(nn.Module):
  """`intermediate_query` (dense + exact GELU) and `output_query` (dense, dropout, residual LN)."""
  config: QFormerConfig

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    h = Dense((cfg.intermediate_size,), ("embed", "mlp"), dtype=dtype, param_dtype=pdtype,
              name="wi")(x)
    h = gelu_exact(h)
    h = constrain(h, "activation_batch", "activation_length", "activation_mlp")
    out = Dense((cfg.hidden_size,), ("mlp", "embed"), dtype=dtype, param_dtype=pdtype,
                name="wo")(h)
    out = nn.Dropout(cfg.dropout)(out, deterministic=deterministic)
    out = LayerNorm(cfg.layer_norm_eps, dtype, pdtype, name="norm")(out + x)
    return constrain(out, *_HIDDEN)


class QFormerLayer(nn.Module):
  config: QFormerConfig
  cross: bool

  @nn.compact
  def __call__(self, x, encoder_states, encoder_mask, deterministic: bool = True):
    x = BertAttention(self.config, name="self_attention")(x, deterministic=deterministic)
    if self.cross:
      x = BertAttention(self.config, cross=True, name="cross_attention")(
          x, encoder_states, encoder_mask, deterministic=deterministic)
    return BertQueryMlp(self.config, name="mlp")(x, deterministic=deterministic)


class QFormer(nn.Module):
  """query_embeds [B, Q, E], encoder_hidden_states [B, N, encoder_hidden_size] -> [B, Q, E].

  `encoder_attention_mask` [B, N] (nonzero = attend) hides padded encoder tokens. With
  deterministic=False and config.dropout > 0 it draws from the "dropout" rng.
  """
  config: QFormerConfig

  @nn.compact
  def __call__(self, query_embeds, encoder_hidden_states, encoder_attention_mask=None,
               deterministic: bool = True):
    cfg = self.config
    dtype, pdtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    if query_embeds.ndim != 3 or query_embeds.shape[-1] != cfg.hidden_size:
      raise ValueError(f"Q-Former wants query_embeds [batch, queries, {cfg.hidden_size}]; got "
                       f"{query_embeds.shape}")
    if (encoder_hidden_states.ndim != 3
        or encoder_hidden_states.shape[-1] != cfg.encoder_hidden_size
        or encoder_hidden_states.shape[0] != query_embeds.shape[0]):
      raise ValueError(f"Q-Former wants encoder_hidden_states [{query_embeds.shape[0]}, tokens, "
                       f"{cfg.encoder_hidden_size}]; got {encoder_hidden_states.shape}")
    x = LayerNorm(cfg.layer_norm_eps, dtype, pdtype, name="input_norm")(query_embeds)
    x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
    x = constrain(x, *_HIDDEN)
    encoder_states = constrain(encoder_hidden_states.astype(dtype), *_HIDDEN)
    for i in range(cfg.num_layers):
      x = QFormerLayer(cfg, has_cross_attention(cfg, i), name=f"layers_{i}")(
          x, encoder_states, encoder_attention_mask, deterministic=deterministic)
    return x
