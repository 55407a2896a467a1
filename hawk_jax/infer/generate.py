"""Text generation for `Llama` with a fixed-size KV cache: greedy, sampling, beam search.

Everything runs on static shapes: the cache holds prompt + `max_new_tokens` slots, each decode
step writes one slot with `dynamic_update_slice`, and the token loop is a `lax.while_loop`
inside one `jit` (no host sync, no recompilation per token). Compilations are keyed by the
model config, the shapes and a few structural options (see `generate`); temperature, top-k/p,
EOS/pad ids, min_new_tokens and the length penalty are traced, so changing them reuses the
compiled loop. `prompt_bucket` left-pads prompts to a multiple of it so that prompts of
different lengths share compilations too (padding is masked: the tokens do not change).

A model with `scan_layers` is decoded through its decoding twin (models/llama_decoding.py),
its layer weights unstacked once per call; an unrolled model is decoded as given, so convert it
once, outside, for the twin's layout.
`prefill`/`decode_step` take the model as given: callers driving their own loop should convert
once with `model, params = for_decoding(model, params)`.

Entry points:
  generate(model, params, input_ids | inputs_embeds=..., attention_mask=..., ...)
      -> GenerateOutput(tokens [B, N] int32, lengths [B], scores [B] or None)
  greedy(model, params, input_ids, max_new_tokens) -> [B, N]: HF greedy, no EOS stop.
  stream(model, params, ...) yields each step's tokens [B] (numpy) as they are decoded:
      prefill once, then one jitted step per token called from Python.
  prefill / decode_step: the two jitted model calls, for callers that drive their own loop.

Semantics follow `transformers` generate: left-padded batches (positions from the mask), EOS
stops a row (it keeps the EOS, later tokens are `pad_token_id`), `min_new_tokens` masks EOS,
sampling applies temperature -> top-k -> top-p, and beam search is HF's (length penalty
`score / generated_len ** length_penalty`, `early_stopping` True / False / "never").
"""
from __future__ import annotations

import functools
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hawk_jax.models.kv_cache import init_cache, reorder_cache, repeat_cache
from hawk_jax.models.llama import Llama
from hawk_jax.models.llama_decoding import decoding_model, for_decoding

_NEG = -1.0e9  # HF beam search's "impossible" score


class GenerateOutput(NamedTuple):
  tokens: jax.Array    # [B, max_new_tokens] int32 (beam: [B * num_return_sequences, N]);
                       # positions past a row's length hold the pad id
  lengths: jax.Array   # [B] tokens generated per row, EOS included
  scores: jax.Array | None = None  # beam search: length-penalised sequence scores


def _eos_tuple(eos) -> tuple[int, ...]:
  if eos is None:
    return ()
  if isinstance(eos, (int, np.integer)):
    return (int(eos),)
  return tuple(int(e) for e in eos)


def _pad_id(pad, eos: tuple[int, ...]) -> int:
  if pad is not None:
    return int(pad)
  return eos[0] if eos else 0  # as HF: pad with EOS when no pad token is set


# --- model calls ------------------------------------------------------------------------------

def _decoding(model: Llama, params):
  """Inside a jitted loop: a scanned model becomes its decoding twin (`for_decoding`: the
  unstacking copies the weights anyway, the decode layout comes with that copy); an unrolled
  model is used as it is -- pass `for_decoding(model, params)` once, outside, for the decode
  layout without a copy per call."""
  if model.config.scan_layers or model.config.remat_policy != "none":
    return for_decoding(model, params)
  return model, params


def _forward(model: Llama, params, inputs, mask, cache):
  """One cached model call; `inputs` are ids [B,T] or embeddings [B,T,E]. -> ([B,V], cache)."""
  kw = dict(attention_mask=mask, cache=cache, last_only=True)
  if inputs.ndim == 3:
    logits, cache = model.apply({"params": params}, inputs_embeds=inputs, **kw)
  else:
    logits, cache = model.apply({"params": params}, inputs, **kw)
  return logits[:, -1], cache


def _prefill_impl(model, params, inputs, mask, max_len: int):
  cfg = model.config
  # An unrolled model keeps one cache buffer per layer: no per-step copy of a layer's slice.
  cache = init_cache(cfg, inputs.shape[0], max_len, per_layer=not cfg.scan_layers)
  if mask is None:
    mask = jnp.ones(inputs.shape[:2], jnp.int32)
  return _forward(model, params, inputs, mask, cache)


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def prefill(model: Llama, params, inputs, mask, max_len: int):
  """Fill a fresh cache of `max_len` slots with a (left-padded) prompt of ids or embeddings.

  Returns (logits of the last slot [B, V] float32, cache).
  """
  return _prefill_impl(model, params, inputs, mask, max_len)


@functools.partial(jax.jit, static_argnames=("model",), donate_argnames=("cache",))
def decode_step(model: Llama, params, tokens, cache):
  """Feed one token per row [B]; returns (logits [B, V], cache). The cache is donated."""
  return _forward(model, params, tokens[:, None], jnp.ones((tokens.shape[0], 1), jnp.int32),
                  cache)


# --- token choice -----------------------------------------------------------------------------

class _TokenChoice(NamedTuple):
  """Static choices of token selection (part of the jit cache key)."""
  do_sample: bool
  filtering: bool  # top-k or top-p active (costs a sort of the vocabulary per step)


class _TracedSettings(NamedTuple):
  """Traced settings: changing them reuses the compiled loop."""
  temperature: jax.Array     # [] f32
  top_k: jax.Array           # [] i32, 0 = off
  top_p: jax.Array           # [] f32, >= 1 = off
  min_new_tokens: jax.Array  # [] i32, EOS masked before this many tokens
  eos_mask: jax.Array        # [V] bool
  pad: jax.Array             # [] i32


def _suppress_eos(logits, step, settings: _TracedSettings):
  return jnp.where(settings.eos_mask & (step < settings.min_new_tokens), -jnp.inf, logits)


def process_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
  """HF's warpers in HF's order: temperature, top-k, top-p (nucleus), on float32 logits
  [..., V]; removed tokens get -inf. `top_k` 0 and `top_p` >= 1 switch those off. All three
  may be traced values."""
  logits = logits.astype(jnp.float32) / temperature
  vocab = logits.shape[-1]
  desc = -jnp.sort(-logits, axis=-1)
  rank = jnp.arange(vocab)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
  desc = jnp.where(rank < k, desc, -jnp.inf)
  # Nucleus: keep the smallest set of most likely tokens whose probability reaches top_p; a
  # token stays if the mass strictly above it is below top_p (the top token always stays).
  probs = jax.nn.softmax(desc, axis=-1)
  above = jnp.cumsum(probs, axis=-1) - probs
  n_keep = jnp.sum((above < top_p) & (rank < k), axis=-1, keepdims=True)
  n_keep = jnp.where(top_p >= 1.0, k, jnp.maximum(n_keep, 1))
  cutoff = jnp.take_along_axis(desc, n_keep - 1, axis=-1)
  return jnp.where(logits < cutoff, -jnp.inf, logits)


def _choose(logits, step, rng, settings: _TracedSettings, choice: _TokenChoice):
  """Next token per row [B] int32 from logits [B, V] at decode step `step`."""
  logits = _suppress_eos(logits.astype(jnp.float32), step, settings)
  if not choice.do_sample:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if choice.filtering:
    logits = process_logits(logits, settings.temperature, settings.top_k, settings.top_p)
  else:
    logits = logits / settings.temperature
  return jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1).astype(jnp.int32)


# --- greedy / sampling loop -------------------------------------------------------------------

class _State(NamedTuple):
  step: jax.Array       # index of the token chosen last
  token: jax.Array      # [B] that token
  tokens: jax.Array     # [B, N]
  finished: jax.Array   # [B]
  lengths: jax.Array    # [B]
  cache: dict


def _record(state: _State, tok, step, settings: _TracedSettings) -> _State:
  tok = jnp.where(state.finished, settings.pad, tok)
  tokens = lax.dynamic_update_slice(state.tokens, tok[:, None], (0, step))
  lengths = state.lengths + (~state.finished).astype(jnp.int32)
  finished = state.finished | settings.eos_mask[tok]
  return _State(step, tok, tokens, finished, lengths, state.cache)


def _start(model, params, inputs, mask, rng, settings, choice, n_tokens: int, max_new_tokens: int):
  """Prefill and choose the first token. `n_tokens` is the width of the token buffer."""
  b = inputs.shape[0]
  logits, cache = _prefill_impl(model, params, inputs, mask, inputs.shape[1] + max_new_tokens)
  init = _State(jnp.zeros((), jnp.int32), jnp.zeros((b,), jnp.int32),
                jnp.full((b, n_tokens), settings.pad, jnp.int32), jnp.zeros((b,), jnp.bool_),
                jnp.zeros((b,), jnp.int32), cache)
  return _record(init, _choose(logits, 0, rng, settings, choice), 0, settings)


def _advance(model, params, s: _State, rng, settings, choice) -> _State:
  """Feed the last token, choose the next one."""
  b = s.token.shape[0]
  logits, cache = _forward(model, params, s.token[:, None], jnp.ones((b, 1), jnp.int32), s.cache)
  step = s.step + 1
  token = _choose(logits, step, rng, settings, choice)
  return _record(s._replace(cache=cache), token, step, settings)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "choice"))
def _sample_loop(model, params, inputs, mask, rng, settings: _TracedSettings, *,
                 max_new_tokens: int, choice: _TokenChoice):
  model, params = _decoding(model, params)
  state = _start(model, params, inputs, mask, rng, settings, choice, max_new_tokens, max_new_tokens)
  state = lax.while_loop(
      lambda s: (s.step + 1 < max_new_tokens) & ~jnp.all(s.finished),
      lambda s: _advance(model, params, s, rng, settings, choice), state)
  return GenerateOutput(state.tokens, state.lengths, None)


# --- beam search (HF's algorithm on static shapes) --------------------------------------------

class _Beams(NamedTuple):
  step: jax.Array
  running_seq: jax.Array     # [B, nb, N]
  running_scores: jax.Array  # [B, nb] summed log-probs
  seqs: jax.Array            # [B, nb, N] finished hypotheses
  seq_scores: jax.Array      # [B, nb] length-penalised
  seq_lens: jax.Array        # [B, nb]
  is_finished: jax.Array     # [B, nb]
  improvable: jax.Array      # [B, 1] HF's is_early_stop_heuristic_unsatisfied
  done: jax.Array            # []
  cache: dict


def _gather(x, idx):
  """x [B, k, ...] gathered along axis 1 by idx [B, j]."""
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def _beam_update(s: _Beams, logits, *, nb: int, n_keep: int, n_new: int, settings: _TracedSettings,
                 penalty, best_len_div, early_stopping) -> _Beams:
  """One HF beam-search step from the logits of the running beams [B*nb, V]."""
  b = s.running_seq.shape[0]
  vocab = logits.shape[-1]
  step = s.step
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  log_probs = _suppress_eos(log_probs, step, settings)
  log_probs = log_probs.reshape(b, nb, vocab) + s.running_scores[:, :, None]
  topk_lp, topk_idx = lax.top_k(log_probs.reshape(b, nb * vocab), n_keep)
  src = topk_idx // vocab
  ids = (topk_idx % vocab).astype(jnp.int32)
  topk_seq = _gather(s.running_seq, src)
  topk_seq = lax.dynamic_update_slice(topk_seq, ids[:, :, None], (0, 0, step))
  hits = settings.eos_mask[ids] | (step + 1 >= n_new)

  # Running beams for the next step: the best continuations that did not just stop.
  running_lp = topk_lp + hits.astype(jnp.float32) * _NEG
  nxt = lax.top_k(running_lp, nb)[1]
  running_seq = _gather(topk_seq, nxt)
  running_scores = _gather(running_lp, nxt)
  running_src = _gather(src, nxt)

  # Finished hypotheses: merge the just-stopped ones among the top nb with the kept ones.
  just = hits & (jnp.arange(n_keep) < nb)[None, :]
  fin_lp = topk_lp / penalty[step + 1]
  if early_stopping is True:
    fin_lp += jnp.all(s.is_finished, axis=-1, keepdims=True).astype(jnp.float32) * _NEG
  fin_lp += (~s.improvable).astype(jnp.float32) * _NEG
  fin_lp += (~just).astype(jnp.float32) * _NEG
  merged_scores = jnp.concatenate([s.seq_scores, fin_lp], axis=1)
  sel = lax.top_k(merged_scores, nb)[1]
  seqs = _gather(jnp.concatenate([s.seqs, topk_seq], axis=1), sel)
  seq_scores = _gather(merged_scores, sel)
  new_lens = jnp.full(just.shape, step + 1, jnp.int32)
  seq_lens = _gather(jnp.concatenate([s.seq_lens, new_lens], axis=1), sel)
  is_finished = _gather(jnp.concatenate([s.is_finished, just], axis=1), sel)

  rows = (jnp.arange(b)[:, None] * nb + running_src).reshape(-1)
  cache = reorder_cache(s.cache, rows)

  step = step + 1
  best = running_scores[:, :1] / best_len_div[step]
  worst = jnp.where(is_finished, jnp.min(seq_scores, axis=1, keepdims=True), _NEG)
  improvable = s.improvable & jnp.any(best > worst, axis=-1, keepdims=True)
  open_beam = ~(jnp.all(is_finished) & (early_stopping is True))
  done = ~(jnp.any(improvable) & open_beam & ~jnp.all(hits))
  return _Beams(step, running_seq, running_scores, seqs, seq_scores, seq_lens, is_finished,
                improvable, done, cache)


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "num_beams", "n_eos", "early_stopping"))
def _beam_loop(model, params, inputs, mask, settings: _TracedSettings, length_penalty, *,
               max_new_tokens: int, num_beams: int, n_eos: int, early_stopping):
  b, nb, n = inputs.shape[0], num_beams, max_new_tokens
  model, params = _decoding(model, params)
  logits, cache = _prefill_impl(model, params, inputs, mask, inputs.shape[1] + n)
  cache = repeat_cache(cache, nb)
  logits = jnp.repeat(logits, nb, axis=0)
  # Length-penalty divisors: generated_len ** length_penalty, for generated_len = 0..n.
  lens = jnp.maximum(jnp.arange(n + 1, dtype=jnp.float32), 1.0)
  penalty = lens ** length_penalty
  if early_stopping == "never":  # HF: assume the best score comes at max length if lp > 0
    best_len_div = jnp.where(length_penalty > 0.0, jnp.float32(n) ** length_penalty, penalty)
  else:
    best_len_div = penalty
  fill = jnp.full((b, nb, n), settings.pad, jnp.int32)
  init = _Beams(
      step=jnp.zeros((), jnp.int32), running_seq=fill,
      running_scores=jnp.zeros((b, nb), jnp.float32).at[:, 1:].set(_NEG),
      seqs=fill, seq_scores=jnp.full((b, nb), _NEG, jnp.float32),
      seq_lens=jnp.zeros((b, nb), jnp.int32), is_finished=jnp.zeros((b, nb), jnp.bool_),
      improvable=jnp.ones((b, 1), jnp.bool_), done=jnp.zeros((), jnp.bool_), cache=cache)
  # HF keeps (1 + number of EOS ids, at least 2) x num_beams candidates per step.
  update = functools.partial(_beam_update, nb=nb, n_keep=max(2, 1 + n_eos) * nb, n_new=n,
                             settings=settings, penalty=penalty, best_len_div=best_len_div,
                             early_stopping=early_stopping)
  state = update(init, logits)

  def body(s: _Beams):
    last = lax.dynamic_index_in_dim(s.running_seq, s.step - 1, axis=2, keepdims=False)
    logits, cache = _forward(model, params, last.reshape(-1, 1),
                             jnp.ones((b * nb, 1), jnp.int32), s.cache)
    return update(s._replace(cache=cache), logits)

  state = lax.while_loop(lambda s: ~s.done & (s.step < n), body, state)
  # Positions past a hypothesis' end hold whatever its beam had; show them as padding.
  tokens = jnp.where(jnp.arange(n) < state.seq_lens[..., None], state.seqs, settings.pad)
  return GenerateOutput(tokens, state.seq_lens, state.seq_scores)  # [B, nb, ...], best first


# --- public API -------------------------------------------------------------------------------

def _prepare(input_ids, inputs_embeds, attention_mask, prompt_bucket):
  if (input_ids is None) == (inputs_embeds is None):
    raise ValueError("pass exactly one of input_ids and inputs_embeds")
  inputs = jnp.asarray(input_ids, jnp.int32) if inputs_embeds is None else jnp.asarray(
      inputs_embeds)
  b, t = inputs.shape[:2]
  mask = (jnp.ones((b, t), jnp.int32) if attention_mask is None
          else jnp.asarray(attention_mask, jnp.int32))
  if prompt_bucket:
    extra = -t % prompt_bucket
    if extra:  # left padding: masked slots, positions unchanged
      widths = [(0, 0), (extra, 0)] + [(0, 0)] * (inputs.ndim - 2)
      inputs = jnp.pad(inputs, widths)
      mask = jnp.pad(mask, [(0, 0), (extra, 0)])
  return inputs, mask


def _options(model, do_sample, temperature, top_p, top_k, rng, eos_token_id, pad_token_id,
             min_new_tokens):
  """Validate the decoding options; split them into the static _TokenChoice and the traced
  _TracedSettings."""
  vocab = model.config.vocab_size
  eos = _eos_tuple(eos_token_id)
  bad = [e for e in eos if not 0 <= e < vocab]
  if bad:
    raise ValueError(f"eos_token_id {bad} outside the vocabulary (size {vocab})")
  eos_mask = np.zeros((vocab,), np.bool_)
  eos_mask[list(eos)] = True
  if do_sample:
    if temperature <= 0:
      raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {top_k}")
    if rng is None:
      raise ValueError("sampling needs rng=jax.random.PRNGKey(seed)")
  choice = _TokenChoice(bool(do_sample), bool(do_sample and (top_k > 0 or top_p < 1.0)))
  settings = _TracedSettings(jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p),
                 jnp.int32(min_new_tokens), jnp.asarray(eos_mask),
                 jnp.int32(_pad_id(pad_token_id, eos)))
  return choice, settings, eos, (jax.random.PRNGKey(0) if rng is None else rng)


def generate(model: Llama, params, input_ids=None, *, inputs_embeds=None, attention_mask=None,
             max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, rng=None, num_beams: int = 1,
             length_penalty: float = 1.0, early_stopping: bool | str = False,
             num_return_sequences: int = 1, eos_token_id: int | Sequence[int] | None = None,
             pad_token_id: int | None = None, min_new_tokens: int = 0,
             prompt_bucket: int | None = None) -> GenerateOutput:
  """Generate up to `max_new_tokens` tokens after a prompt of ids or embeddings.

  `attention_mask` [B, T] marks real prompt tokens (left padding for batches of different
  lengths). Greedy by default; `do_sample` samples with `temperature`/`top_k`/`top_p` from
  `rng` (a jax PRNG key; the same key gives the same tokens); `num_beams > 1` runs HF beam
  search (`num_return_sequences` best hypotheses per row, best first, rows
  [b0h0, b0h1, ..., b1h0, ...] as HF). Rows stop at any of `eos_token_id` (kept in the output;
  later positions hold `pad_token_id`, default the first EOS id). Only the shapes,
  `max_new_tokens`, `do_sample`, whether top-k/top-p is on, `num_beams`, the number of EOS ids
  (beam search) and `early_stopping` select a compilation; the other settings are traced.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  inputs, mask = _prepare(input_ids, inputs_embeds, attention_mask, prompt_bucket)
  if num_beams > 1:
    if do_sample:
      raise NotImplementedError("beam sampling (num_beams > 1 with do_sample) is not implemented")
    if not 1 <= num_return_sequences <= num_beams:
      raise ValueError("num_return_sequences must be in [1, num_beams]")
    if early_stopping not in (True, False, "never"):
      raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    _, settings, eos, _ = _options(model, False, 1.0, 1.0, 0, None, eos_token_id, pad_token_id,
                                min_new_tokens)
    out = _beam_loop(model, params, inputs, mask, settings, jnp.float32(length_penalty),
                     max_new_tokens=int(max_new_tokens), num_beams=int(num_beams),
                     n_eos=len(eos), early_stopping=early_stopping)
    r, b = num_return_sequences, inputs.shape[0]
    return GenerateOutput(out.tokens[:, :r].reshape(b * r, -1), out.lengths[:, :r].reshape(-1),
                          out.scores[:, :r].reshape(-1))
  if num_return_sequences != 1:
    raise NotImplementedError("num_return_sequences > 1 needs beam search; repeat the prompt "
                              "rows to draw several samples")
  choice, settings, _, rng = _options(model, do_sample, temperature, top_p, top_k, rng,
                                      eos_token_id, pad_token_id, min_new_tokens)
  return _sample_loop(model, params, inputs, mask, rng, settings,
                      max_new_tokens=int(max_new_tokens), choice=choice)


def greedy(model: Llama, params, input_ids, max_new_tokens: int, *, attention_mask=None,
           eos_token_id=None, inputs_embeds=None) -> jax.Array:
  """Greedy tokens [B, max_new_tokens] int32, never stopping early.

  Equals `transformers` `generate(do_sample=False, max_new_tokens=n, min_new_tokens=n)`: pass
  the model's `eos_token_id` to mask EOS as `min_new_tokens` does (without it, EOS may be chosen
  and decoding simply goes on, as HF does when it has no EOS id).
  """
  out = generate(model, params, input_ids, inputs_embeds=inputs_embeds,
                 attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                 eos_token_id=eos_token_id, min_new_tokens=max_new_tokens)
  return out.tokens


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "choice"))
def _stream_start(model, params, inputs, mask, rng, settings, *, max_new_tokens: int,
                  choice: _TokenChoice):
  # The token buffer is a [B, 1] scratch: the stream hands each token out as it comes.
  return _start(model, params, inputs, mask, rng, settings, choice, 1, max_new_tokens)


@functools.partial(jax.jit, static_argnames=("model", "choice"), donate_argnames=("state",))
def _stream_step(model, params, state: _State, rng, settings, *, choice: _TokenChoice):
  return _advance(model, params, state, rng, settings, choice)


@functools.partial(jax.jit, static_argnames=("model",))
def _unstacked_params(model, params):
  return for_decoding(model, params)[1]


def stream(model: Llama, params, input_ids=None, *, inputs_embeds=None, attention_mask=None,
           max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
           top_p: float = 1.0, top_k: int = 0, rng=None, eos_token_id=None, pad_token_id=None,
           min_new_tokens: int = 0, prompt_bucket: int | None = None) -> Iterator[np.ndarray]:
  """Yield the next token of every row ([B] numpy int32) as soon as it is decoded.

  Same choices as `generate` (greedy or sampling; the same rng gives the same tokens), but the
  loop runs in Python around one jitted step (its cache updated in place), so a CLI can print
  as it goes. Finished rows yield the pad id; the generator ends when every row has finished
  or after `max_new_tokens` tokens.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  inputs, mask = _prepare(input_ids, inputs_embeds, attention_mask, prompt_bucket)
  choice, settings, _, rng = _options(model, do_sample, temperature, top_p, top_k, rng,
                                      eos_token_id, pad_token_id, min_new_tokens)
  if model.config.scan_layers:
    params = _unstacked_params(model, params)
    model = decoding_model(model)
  state = _stream_start(model, params, inputs, mask, rng, settings,
                        max_new_tokens=int(max_new_tokens), choice=choice)
  for i in range(max_new_tokens):
    if i:
      state = _stream_step(model, params, state, rng, settings, choice=choice)
    token, finished = jax.device_get((state.token, state.finished))
    yield token
    if finished.all():
      return
