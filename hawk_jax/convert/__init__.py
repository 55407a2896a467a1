"""Weight conversion to and from PyTorch / HuggingFace, by declarative name tables.

Exports (imported lazily so that `import hawk_jax.convert` needs no torch):
  llama_from_hf, llama_to_hf         — HF LLaMA folder <-> Flax Llama
  vision_from_hf, vision_to_hf       — HF Blip2VisionModel folder <-> Flax EvaViT (+ ln_vision)
  qformer_from_hf, qformer_to_hf     — HF Blip2QFormerModel folder <-> Flax QFormer
"""
import importlib

_EXPORTS = {
    "llama_from_hf": "hawk_jax.convert.llama_hf",
    "llama_to_hf": "hawk_jax.convert.llama_hf",
    "vision_from_hf": "hawk_jax.convert.blip2_hf",
    "vision_to_hf": "hawk_jax.convert.blip2_hf",
    "qformer_from_hf": "hawk_jax.convert.blip2_hf",
    "qformer_to_hf": "hawk_jax.convert.blip2_hf",
}


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'hawk_jax.convert' has no attribute {name!r}")


__all__ = list(_EXPORTS)
