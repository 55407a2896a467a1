"""Peak figures of the chips people train on, for MFU estimates and the planner.

bf16 dense matmul peak FLOP/s and memory per chip (vendor figures). `cpu` is what DESIGN.md
§11 measured on the 2-core machines here (bf16 with f32 accumulation; f32 ~0.28 TFLOP/s).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  peak_bf16_flops: float      # per chip, dense
  hbm_gib: float              # memory per chip
  hbm_gbps: float             # memory bandwidth, GB/s
  peak_f32_flops: float = 0.0


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 32, 1200),
    "v5e": Chip("TPU v5e", 197e12, 16, 819),
    "v5p": Chip("TPU v5p", 459e12, 95, 2765),
    "v6e": Chip("TPU v6e (Trillium)", 918e12, 32, 1640),
    "h100": Chip("NVIDIA H100 SXM", 989e12, 80, 3350, 67e12),
    "h200": Chip("NVIDIA H200", 989e12, 141, 4800, 67e12),
    "cpu": Chip("2-core CPU (measured)", 1.2e12, 24, 28, 0.28e12),
}


def chip(name: str) -> Chip:
  try:
    return CHIPS[name.lower()]
  except KeyError:
    raise ValueError(f"unknown chip {name!r}; known: {sorted(CHIPS)}") from None
