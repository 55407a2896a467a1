"""From a trained workdir to text: the engine (video -> visual tokens -> prompt -> answer),
KV-cache generation (`generate`), multi-turn chat (`conversation`), test-split predictions
(`predict`), and the commands `python -m hawk_jax.infer.describe` and `... .infer.chat`."""
