"""Peak figures of the chips people train on, for MFU estimates and the planner.

bf16 dense matmul peak FLOP/s and memory per chip (vendor figures). `cpu` is what was measured
on the 2-core development machines (docs/model.md, "These machines": bf16 with f32
accumulation; f32 ~0.28 TFLOP/s).

Interconnect (for hawk_jax.plan.estimate's collective-time estimate): `ici_gbps` is the chip's
bidirectional chip-to-chip bandwidth in GB/s (Cloud TPU docs: v5e 400, v5p 1200, v6e 800; v4
from its 6 links of ~50 GB/s; NVLink 4 for H100/H200: 900), shared by the chips of one
`ici_domain` (a TPU slice, an 8-GPU NVLink node); `dcn_gbps` is one chip's share of the network
between domains in GB/s (v5e: 2 x 100 Gbps NICs per 8-chip host; v5p: 50 Gbps per chip; GPUs:
one 400 Gbps InfiniBand NIC each), 0 where unknown.
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
  ici_gbps: float = 0.0       # bidirectional chip-to-chip bandwidth, GB/s
  ici_domain: int = 1         # chips sharing that interconnect (slice / NVLink node)
  dcn_gbps: float = 0.0       # per-chip bandwidth between domains, GB/s (0: unknown)


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 32, 1200, ici_gbps=300, ici_domain=4096),
    "v5e": Chip("TPU v5e", 197e12, 16, 819, ici_gbps=400, ici_domain=256, dcn_gbps=3.125),
    "v5p": Chip("TPU v5p", 459e12, 95, 2765, ici_gbps=1200, ici_domain=6144, dcn_gbps=6.25),
    "v6e": Chip("TPU v6e (Trillium)", 918e12, 32, 1640, ici_gbps=800, ici_domain=256),
    "h100": Chip("NVIDIA H100 SXM", 989e12, 80, 3350, 67e12, ici_gbps=900, ici_domain=8,
                 dcn_gbps=50),
    "h200": Chip("NVIDIA H200", 989e12, 141, 4800, 67e12, ici_gbps=900, ici_domain=8,
                 dcn_gbps=50),
    "cpu": Chip("2-core CPU (measured)", 1.2e12, 24, 28, 0.28e12, ici_gbps=56,
                ici_domain=1 << 20),
}


def chip(name: str) -> Chip:
  try:
    return CHIPS[name.lower()]
  except KeyError:
    raise ValueError(f"unknown chip {name!r}; known: {sorted(CHIPS)}") from None
