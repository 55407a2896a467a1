"""Training one stage (`python -m hawk_jax.train`): the train step set up for a mesh (`state`),
the loop with checkpoints and resume (`loop`), initialisation (`init`), the input (`data`),
the optimizer (`optim`); plus the tiny LM pretraining of the CPU run (`pretrain_llm`) and the
tower-cache writer (`write_tower_cache`)."""
