"""Tiny random HuggingFace BLIP-2 towers for the EVA ViT / Q-Former parity and conversion tests.

HF's init leaves LayerNorms at one/zero and biases at zero, which would hide a swapped scale or
a dropped bias; every tensor is re-drawn here. EVA has no k bias, so the k third of HF's fused
`qkv.bias` stays zero (as in every real BLIP-2 checkpoint).
"""
import numpy as np
import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel


def randomize(model: torch.nn.Module, seed: int, std: float = 0.3) -> torch.nn.Module:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)
      if "norm" in name.lower() and name.endswith(".weight"):
        p.add_(1.0)  # keep the scale around one so activations stay O(1) across layers
      if name.endswith("qkv.bias"):
        d = p.shape[0] // 3
        p[d:2 * d] = 0
  return model.eval()


def hf_vision(seed: int = 0, **kwargs) -> Blip2VisionModel:
  fields = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3,
                image_size=28, patch_size=7, layer_norm_eps=1e-6)
  fields.update(kwargs)
  torch.manual_seed(seed)
  return randomize(Blip2VisionModel(Blip2VisionConfig(**fields)), seed)


def hf_qformer(seed: int = 0, **kwargs) -> Blip2QFormerModel:
  fields = dict(hidden_size=20, num_hidden_layers=3, num_attention_heads=4, intermediate_size=36,
                cross_attention_frequency=2, encoder_hidden_size=24, layer_norm_eps=1e-12)
  fields.update(kwargs)
  torch.manual_seed(seed)
  return randomize(Blip2QFormerModel(Blip2QFormerConfig(**fields)), seed)


def pixels(config, batch: int = 2, seed: int = 0) -> np.ndarray:
  """NHWC float32 pixels in [0, 1) for the HF vision config."""
  size = config.image_size
  return np.random.RandomState(seed).rand(batch, size, size, 3).astype(np.float32)


def hf_vision_out(model: Blip2VisionModel, x_nhwc: np.ndarray, hidden_states: bool = False):
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)),
                output_hidden_states=hidden_states)
  if hidden_states:
    return out.last_hidden_state.numpy(), [h.numpy() for h in out.hidden_states]
  return out.last_hidden_state.numpy()


def qformer_inputs(config, batch: int = 2, queries: int = 5, tokens: int = 7, seed: int = 0):
  rng = np.random.RandomState(seed)
  q = rng.randn(batch, queries, config.hidden_size).astype(np.float32)
  enc = rng.randn(batch, tokens, config.encoder_hidden_size).astype(np.float32)
  return q, enc


def hf_qformer_out(model: Blip2QFormerModel, q, enc, mask=None, hidden_states: bool = False):
  with torch.no_grad():
    out = model(query_embeds=torch.from_numpy(q), encoder_hidden_states=torch.from_numpy(enc),
                encoder_attention_mask=None if mask is None else torch.from_numpy(mask),
                output_hidden_states=hidden_states)
  if hidden_states:
    return out.last_hidden_state.numpy(), [h.numpy() for h in out.hidden_states]
  return out.last_hidden_state.numpy()


def state_numpy(model: torch.nn.Module) -> dict:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
