"""Dimension dataclasses of every tower, and the named sizes (tiny, small, hawk7b).

These are plain frozen dataclasses so that modules hash them as static attributes; the
ml_collections stage configs hold them as dicts (``dataclasses.asdict``) and rebuild them with
``from_dict`` so that ``--config.model.llm.num_layers=2`` style overrides work.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def _from_dict(cls, d: Mapping[str, Any]):
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(d) - names
  if unknown:
    raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
  return cls(**dict(d))


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """EVA-CLIP ViT (pre-LN, q/v biases only, learned absolute positions) + ln_vision."""
  image_size: int = 224
  patch_size: int = 14
  hidden_size: int = 1408
  num_layers: int = 39
  num_heads: int = 16
  mlp_dim: int = 6144
  layer_norm_eps: float = 1e-6
  ln_vision_eps: float = 1e-5  # BLIP-2's ln_vision; HF Blip2VisionModel uses layer_norm_eps for it
  dtype: str = "float32"        # compute dtype
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention_impl: str = "auto"  # einsum | xla | cudnn | auto (models/common.py)

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def seq_len(self) -> int:
    return self.num_patches + 1

  @classmethod
  def from_dict(cls, d):
    return _from_dict(cls, d)


@dataclasses.dataclass(frozen=True)
class QFormerConfig:
  """BERT-style Q-Former over learned queries; cross-attention every `cross_attention_freq`."""
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  layer_norm_eps: float = 1e-12
  cross_attention_freq: int = 2
  encoder_hidden_size: int = 1408
  num_query_tokens: int = 32
  dropout: float = 0.0  # hidden and attention-probability dropout (BERT's 0.1 for trainable ones)
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "auto"  # einsum | xla | cudnn | auto; training dropout forces einsum

  @classmethod
  def from_dict(cls, d):
    return _from_dict(cls, d)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int | None = None  # None: hidden_size // num_heads
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention_impl: str = "auto"  # einsum | xla | cudnn | auto (models/common.py); training pass

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  @classmethod
  def from_dict(cls, d):
    return _from_dict(cls, d)


# The towers of a HawkConfig, and those whose parameters training updates.
TOWERS = ("vision", "qformer", "video_qformer", "llm")
TRAINABLE_TOWERS = ("video_qformer",)


@dataclasses.dataclass(frozen=True)
class HawkConfig:
  """Two branches (appearance, motion) of ViT -> ln_vision -> image Q-Former -> frame
  positions -> video Q-Former -> projection, feeding one LLaMA."""
  vision: VisionConfig = VisionConfig()
  qformer: QFormerConfig = QFormerConfig()
  video_qformer: QFormerConfig = QFormerConfig(
      num_layers=2, cross_attention_freq=1, encoder_hidden_size=768, dropout=0.1)
  llm: LlamaConfig = LlamaConfig()
  max_frames: int = 32          # rows of the frame position table
  proj_hidden_size: int = 4096  # llama_proj_0 / encoder_0 width
  tight_size: int = 256         # llama_proj_last.encoder_1 output (consistency-loss space)
  trainable_query_tokens_motion: bool = False  # the released code trains it by accident
  # Released HAWK feeds frames to EVA in [0, 1]; the paper (and BLIP-2) use CLIP mean/std.
  normalize_pixels: bool = True

  @property
  def num_visual_tokens_per_branch(self) -> int:
    return self.video_qformer.num_query_tokens

  @property
  def num_visual_tokens(self) -> int:
    """Placeholders in a prompt: [appearance tokens; motion tokens]."""
    return 2 * self.num_visual_tokens_per_branch

  def with_dtype(self, dtype: str) -> "HawkConfig":
    """The precision policy, in one place: every tower computes in `dtype`; the frozen ones
    (ViT, image Q-Former, LLM) also store their parameters in it, while the trainable video
    Q-Formers keep float32 parameters (the optimizer updates them in float32).

    Training at full size is `with_dtype("bfloat16")` (configs/common.py), inference on a CPU
    casts to "float32" (hawk_jax/workdir.py), the benchmark picks either."""
    def tower(name):
      c = getattr(self, name)
      param_dtype = "float32" if name in TRAINABLE_TOWERS else dtype
      return dataclasses.replace(c, dtype=dtype, param_dtype=param_dtype)
    return dataclasses.replace(self, **{name: tower(name) for name in TOWERS})

  @classmethod
  def from_dict(cls, d):
    d = dict(d)
    sub = {"vision": VisionConfig, "qformer": QFormerConfig, "video_qformer": QFormerConfig,
           "llm": LlamaConfig}
    for k, c in sub.items():
      if k in d and not isinstance(d[k], c):
        d[k] = c.from_dict(d[k])
    return _from_dict(cls, d)

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_stage_config(cls, cfg) -> "HawkConfig":
    """The model section (`cfg.model`) of a stage config (an ml_collections ConfigDict)."""
    return cls.from_dict(cfg.model.to_dict())


def hawk_config(size: str) -> HawkConfig:
  """Named model sizes. `hawk7b` is the released model; `tiny` runs the CPU smoke job and
  tests; `small` is the benchmark size shared across the project."""
  if size == "hawk7b":
    return HawkConfig()
  if size == "hawk13b":
    return HawkConfig(
        llm=LlamaConfig(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40,
                        num_kv_heads=40),
        proj_hidden_size=5120)
  if size == "small":
    # Layers unrolled (not scanned): on CPU, XLA upcasts a stacked bf16 weight to f32 before
    # slicing a layer out of it (a full f32 copy of every tower per call), and copies each
    # f32 layer slice; unrolled layers read their weights in place and compile faster.
    return HawkConfig(
        vision=VisionConfig(hidden_size=192, num_layers=4, num_heads=3, mlp_dim=768,
                            scan_layers=False),
        qformer=QFormerConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
                              cross_attention_freq=2, encoder_hidden_size=192),
        video_qformer=QFormerConfig(hidden_size=256, num_layers=2, num_heads=4,
                                    intermediate_size=1024, cross_attention_freq=1,
                                    encoder_hidden_size=256, dropout=0.1),
        llm=LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_layers=6,
                        num_heads=12, num_kv_heads=12, max_position_embeddings=2048,
                        scan_layers=False),
        proj_hidden_size=768, tight_size=48)
  if size == "tiny":
    # Small enough to train three stages on 2 CPU cores in minutes; every width divides a
    # 2-way tensor axis so the 2x2x2 fake-device mesh test shards it. 64 px frames, 16 patches.
    return HawkConfig(
        vision=VisionConfig(image_size=64, patch_size=16, hidden_size=64, num_layers=2,
                            num_heads=4, mlp_dim=128),
        qformer=QFormerConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                              cross_attention_freq=2, encoder_hidden_size=64,
                              num_query_tokens=8),
        video_qformer=QFormerConfig(hidden_size=64, num_layers=2, num_heads=4,
                                    intermediate_size=128, cross_attention_freq=1,
                                    encoder_hidden_size=64, num_query_tokens=8, dropout=0.1),
        llm=LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2,
                        num_heads=4, num_kv_heads=2, max_position_embeddings=512),
        max_frames=8, proj_hidden_size=128, tight_size=32)
  raise ValueError(f"unknown model size {size!r}; known: tiny, small, hawk7b, hawk13b")
