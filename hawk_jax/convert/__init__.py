"""Weight conversion to and from PyTorch / HuggingFace, by declarative name tables.

  llama_from_hf, llama_to_hf         HF LLaMA folder <-> Flax Llama
  vision_from_hf, vision_to_hf       HF Blip2VisionModel folder <-> Flax EvaViT (+ ln_vision)
  qformer_from_hf, qformer_to_hf     HF Blip2QFormerModel folder <-> Flax QFormer

The whole HAWK model: hawk_names (the original key names), torch_hawk (a PyTorch HAWK, needs
torch) and `python -m hawk_jax.convert` (cli.py). torch itself is imported only where a
function writes or reads torch tensors.
"""
from hawk_jax.convert.blip2_hf import qformer_from_hf, qformer_to_hf, vision_from_hf, vision_to_hf
from hawk_jax.convert.llama_hf import llama_from_hf, llama_to_hf

__all__ = ["llama_from_hf", "llama_to_hf", "vision_from_hf", "vision_to_hf", "qformer_from_hf",
           "qformer_to_hf"]
