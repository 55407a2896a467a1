"""KV-cache decoding and generation against the full forward and transformers' generate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hawk_jax.convert.llama_hf import llama_config_from_hf, params_from_state_dict  # noqa: E402
from hawk_jax.infer import generate as G  # noqa: E402
from hawk_jax.models import kv_cache, llama_decoding  # noqa: E402
from hawk_jax.models import llama as L  # noqa: E402

N_NEW = 10


def tiny(seed=0, scan=True, **kw):
  base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
              eos_token_id=2)
  base.update(kw)
  torch.manual_seed(seed)
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**base)).eval()
  with torch.no_grad():
    for p in hf.parameters():
      p.normal_(0.0, 0.3)
  cfg = llama_config_from_hf(hf.config, scan_layers=scan)
  sd = {k: v.numpy().copy() for k, v in hf.state_dict().items()}
  return hf, L.Llama(cfg), params_from_state_dict(sd, cfg)


def left_padded_batch(seed=0, b=3, t=7, vocab=64):
  rs = np.random.RandomState(seed)
  ids = rs.randint(3, vocab, (b, t))
  mask = np.ones_like(ids)
  for i in range(1, b):
    mask[i, :2 * i] = 0
  ids[mask == 0] = 0
  return ids, mask


def hf_generate(hf, ids, mask, **kw):
  with torch.no_grad():
    return hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                       max_new_tokens=N_NEW, **kw)


@pytest.fixture(scope="module")
def gqa():
  return tiny(seed=0)


# --- the cache --------------------------------------------------------------------------------

@pytest.mark.parametrize("scan", [True, False])
def test_cached_decoding_equals_full_forward(scan):
  _, model, params = tiny(seed=1, scan=scan)
  ids, mask = left_padded_batch(seed=1, t=9)
  full = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                attention_mask=jnp.asarray(mask)))
  apply = jax.jit(lambda p, x, m, c: model.apply({"params": p}, x, attention_mask=m, cache=c))
  cache = kv_cache.init_cache(model.config, 3, 12)
  outs = []
  for lo, hi in [(0, 5), (5, 7), (7, 8), (8, 9)]:  # prefill, a 2-token chunk, single tokens
    logits, cache = apply(params, jnp.asarray(ids[:, lo:hi]), jnp.asarray(mask[:, lo:hi]), cache)
    outs.append(np.asarray(logits))
  got = np.concatenate(outs, axis=1)
  real = mask.astype(bool)
  assert np.abs(got[real] - full[real]).max() < 1e-5
  assert int(cache["index"]) == 9
  np.testing.assert_array_equal(np.asarray(cache["pos"]), mask.sum(-1))
  np.testing.assert_array_equal(np.asarray(cache["mask"])[:, :9], real)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("length", [7, 100])  # 21 rows: kernel . x^T; 300 rows: x . kernel^T
def test_for_decoding_twin_is_the_same_model(bias, length):
  _, model, params = tiny(seed=3, attention_bias=bias, mlp_bias=bias)
  twin, flat = llama_decoding.for_decoding(model, params)
  assert not twin.config.scan_layers and "layers_1" in flat
  # q/k/v and gate/up are one product each in the decode layout, biases included
  assert sorted(flat["layers_1"]["self_attn"]) == ["o_proj", "qkv_proj"]
  assert sorted(flat["layers_1"]["mlp"]) == ["down_proj", "gate_up_proj"]
  assert ("bias" in flat["layers_1"]["self_attn"]["qkv_proj"]) == bias
  ids = jnp.asarray(np.random.RandomState(length).randint(3, 64, (3, length)))
  np.testing.assert_allclose(model.apply({"params": params}, ids),
                             twin.apply({"params": flat}, ids), atol=2e-5)


# --- greedy -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,scan,kw", [
    (0, True, {}),
    (2, False, dict(num_key_value_heads=4, head_dim=16, rope_theta=300.0)),
])
def test_greedy_matches_hf_token_for_token(seed, scan, kw):
  hf, model, params = tiny(seed=seed, scan=scan, **kw)
  ids, mask = left_padded_batch(seed=seed)
  ref = hf_generate(hf, ids, mask, min_new_tokens=N_NEW, output_logits=True,
                    return_dict_in_generate=True)
  # Guard against near-ties, where float noise could legitimately flip an argmax.
  logits = torch.stack(ref.logits, 1).numpy()
  logits[..., 2] = -np.inf  # EOS, masked by min_new_tokens
  top2 = np.sort(logits, axis=-1)[..., -2:]
  assert (top2[..., 1] - top2[..., 0]).min() > 1e-3
  out = G.greedy(model, params, ids, N_NEW, attention_mask=mask, eos_token_id=2)
  assert out.dtype == jnp.int32 and out.shape == (3, N_NEW)
  np.testing.assert_array_equal(np.asarray(out), ref.sequences.numpy()[:, ids.shape[1]:])


def test_generate_stops_rows_at_eos_like_hf(gqa):
  hf, model, params = gqa
  ids, mask = left_padded_batch()
  free = hf_generate(hf, ids, mask).numpy()[:, ids.shape[1]:]
  eos = [int(free[0, 2]), int(free[1, 5])]  # tokens greedy decoding does reach
  ref = hf_generate(hf, ids, mask, eos_token_id=eos, pad_token_id=0).numpy()[:, ids.shape[1]:]
  out = G.generate(model, params, ids, attention_mask=mask, max_new_tokens=N_NEW,
                   eos_token_id=eos, pad_token_id=0)
  tokens = np.asarray(out.tokens)
  np.testing.assert_array_equal(tokens[:, :ref.shape[1]], ref)
  assert (tokens[:, ref.shape[1]:] == 0).all()
  n0 = int(np.flatnonzero(np.isin(free[0], eos))[0]) + 1  # row 0 stops at its first EOS
  assert n0 <= 3 and int(out.lengths[0]) == n0 and tokens[0, n0 - 1] in eos
  assert (tokens[0, n0:] == 0).all()
  # min_new_tokens masks EOS as HF does
  ref = hf_generate(hf, ids, mask, eos_token_id=eos, pad_token_id=0,
                    min_new_tokens=4).numpy()[:, ids.shape[1]:]
  out = G.generate(model, params, ids, attention_mask=mask, max_new_tokens=N_NEW,
                   eos_token_id=eos, pad_token_id=0, min_new_tokens=4)
  np.testing.assert_array_equal(np.asarray(out.tokens)[:, :ref.shape[1]], ref)


def test_inputs_embeds_and_prompt_bucket_give_the_same_tokens(gqa):
  _, model, params = gqa
  ids, mask = left_padded_batch()
  ref = np.asarray(G.greedy(model, params, ids, N_NEW, attention_mask=mask))
  emb = model.apply({"params": params}, jnp.asarray(ids), method=L.Llama.embed)
  by_emb = G.greedy(model, params, None, N_NEW, inputs_embeds=emb, attention_mask=mask)
  np.testing.assert_array_equal(np.asarray(by_emb), ref)
  bucketed = G.generate(model, params, ids, attention_mask=mask, max_new_tokens=N_NEW,
                        prompt_bucket=16)
  np.testing.assert_array_equal(np.asarray(bucketed.tokens), ref)


# --- beam search ------------------------------------------------------------------------------

@pytest.mark.parametrize("num_beams,length_penalty,early_stopping,n_return,min_new", [
    (3, 1.0, False, 1, 0),
    (4, 0.5, True, 2, 0),
    (2, 2.0, "never", 2, 0),
    (3, -1.0, False, 1, 3),
])
def test_beam_search_matches_hf(gqa, num_beams, length_penalty, early_stopping, n_return,
                                min_new):
  hf, model, params = gqa
  ids, mask = left_padded_batch()
  free = hf_generate(hf, ids, mask).numpy()[:, ids.shape[1]:]
  eos = [int(free[0, 2]), int(free[1, 5])]
  ref = hf_generate(hf, ids, mask, num_beams=num_beams, length_penalty=length_penalty,
                    early_stopping=early_stopping, num_return_sequences=n_return,
                    eos_token_id=eos, pad_token_id=0, min_new_tokens=min_new,
                    output_scores=True, return_dict_in_generate=True)
  out = G.generate(model, params, ids, attention_mask=mask, max_new_tokens=N_NEW,
                   num_beams=num_beams, length_penalty=length_penalty,
                   early_stopping=early_stopping, num_return_sequences=n_return,
                   eos_token_id=eos, pad_token_id=0, min_new_tokens=min_new)
  seqs = ref.sequences.numpy()[:, ids.shape[1]:]
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  assert tokens.shape == (3 * n_return, N_NEW)
  for row in range(tokens.shape[0]):
    n = lengths[row]
    np.testing.assert_array_equal(tokens[row, :n], seqs[row, :n])
    # HF fills the rest of a finished hypothesis with EOS (its `pad or eos` quirk); we pad.
    assert n == N_NEW or seqs[row, n - 1] in eos
    assert (tokens[row, n:] == 0).all()
  np.testing.assert_allclose(np.asarray(out.scores), ref.sequences_scores.numpy(), rtol=1e-5,
                             atol=1e-5)


def test_one_beam_is_greedy(gqa):
  _, model, params = gqa
  ids, mask = left_padded_batch()
  _, settings, _, _ = G._options(model, False, 1.0, 1.0, 0, None, None, 0, 0)
  beam = G._beam_loop(model, params, jnp.asarray(ids), jnp.asarray(mask), settings,
                      jnp.float32(1.0), max_new_tokens=N_NEW, num_beams=1, n_eos=0,
                      early_stopping=False)
  np.testing.assert_array_equal(np.asarray(beam.tokens)[:, 0],
                                np.asarray(G.greedy(model, params, ids, N_NEW,
                                                    attention_mask=mask)))


# --- sampling and streaming -------------------------------------------------------------------

def test_sampling_is_seeded_and_streams_the_same(gqa):
  _, model, params = gqa
  ids, mask = left_padded_batch()
  kw = dict(attention_mask=mask, max_new_tokens=N_NEW, do_sample=True, temperature=1.5,
            top_p=0.9, top_k=20)
  a = G.generate(model, params, ids, rng=jax.random.PRNGKey(7), **kw)
  b = G.generate(model, params, ids, rng=jax.random.PRNGKey(7), **kw)
  c = G.generate(model, params, ids, rng=jax.random.PRNGKey(8), **kw)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
  streamed = np.stack(list(G.stream(model, params, ids, rng=jax.random.PRNGKey(7), **kw)), 1)
  np.testing.assert_array_equal(streamed, np.asarray(a.tokens))
  with pytest.raises(ValueError, match="rng"):
    G.generate(model, params, ids, **kw)


def test_tiny_nucleus_or_top1_is_greedy(gqa):
  _, model, params = gqa
  ids, mask = left_padded_batch()
  greedy = np.asarray(G.greedy(model, params, ids, N_NEW, attention_mask=mask))
  for kw in (dict(top_p=1e-4), dict(top_k=1)):
    out = G.generate(model, params, ids, attention_mask=mask, max_new_tokens=N_NEW,
                     do_sample=True, rng=jax.random.PRNGKey(0), **kw)
    np.testing.assert_array_equal(np.asarray(out.tokens), greedy)


def test_top_p_keeps_exactly_the_nucleus():
  probs = np.array([[0.5, 0.05, 0.2, 0.15, 0.1]], np.float32)
  logits = jnp.log(jnp.asarray(probs))
  kept = np.isfinite(np.asarray(G.process_logits(logits, 1.0, top_p=0.8)))
  np.testing.assert_array_equal(kept, [[True, False, True, True, False]])  # 0.5+0.2+0.15>=0.8
  kept = np.isfinite(np.asarray(G.process_logits(logits, 1.0, top_p=0.7)))
  np.testing.assert_array_equal(kept, [[True, False, True, False, False]])  # reaches 0.7
  kept = np.isfinite(np.asarray(G.process_logits(logits, 1.0, top_k=2)))
  np.testing.assert_array_equal(kept, [[True, False, True, False, False]])
  # Sampling never leaves the nucleus.
  f = jax.jit(jax.vmap(lambda k: jax.random.categorical(
      k, G.process_logits(logits[0], 1.0, top_p=0.8))))
  draws = np.asarray(f(jax.random.split(jax.random.PRNGKey(0), 2000)))
  assert set(np.unique(draws)) == {0, 2, 3}


def test_stream_ends_when_every_row_has_finished(gqa):
  hf, model, params = gqa
  ids, mask = left_padded_batch()
  free = np.asarray(G.greedy(model, params, ids, N_NEW, attention_mask=mask))
  eos = sorted({int(free[r, 3]) for r in range(3)})
  steps = list(G.stream(model, params, ids, attention_mask=mask, max_new_tokens=N_NEW,
                        eos_token_id=eos, pad_token_id=0))
  out = G.generate(model, params, ids, attention_mask=mask, max_new_tokens=N_NEW,
                   eos_token_id=eos, pad_token_id=0)
  assert len(steps) == int(np.max(np.asarray(out.lengths))) <= 4
  np.testing.assert_array_equal(np.stack(steps, 1), np.asarray(out.tokens)[:, :len(steps)])
