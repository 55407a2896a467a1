"""The HAWK model in Flax Linen: the towers (eva_vit, qformer, llama), the two-branch model
(hawk), their dimensions (model_config), the parameter tree (params), the CPU-tuned products
every tower uses (kernels), the KV cache and the decoding twin of the LLM."""
