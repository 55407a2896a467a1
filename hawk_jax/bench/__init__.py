"""Benchmarks: commands that print figures, side by side with a reference in one run.

  python -m hawk_jax.bench             JAX vs PyTorch train step, JAX vs transformers
                                       generation, loader vs the step's appetite (side_by_side)
  python -m hawk_jax.bench.train_step  the train step alone, on whatever devices are present
  python -m hawk_jax.bench.inference   load, encode, prefill and decode timings of the engine
  python -m hawk_jax.bench.loader      the ArrayRecord loader vs decoding videos on the fly
"""
