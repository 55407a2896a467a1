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


# jax.Device.device_kind -> CHIPS key, by prefix (lower case). "TPU v5 lite" is v5e, "TPU v5"
# v5p (and "TPU v5p"), "TPU v6 lite" v6e; GPUs report e.g. "NVIDIA H100 80GB HBM3".
_DEVICE_KINDS = (("tpu v5 lite", "v5e"), ("tpu v5e", "v5e"), ("tpu v5p", "v5p"), ("tpu v5", "v5p"),
                 ("tpu v6 lite", "v6e"), ("tpu v6e", "v6e"), ("tpu v4", "v4"),
                 ("nvidia h100", "h100"), ("nvidia h200", "h200"), ("cpu", "cpu"))


def chip_of_device_kind(device_kind: str) -> str | None:
  """The CHIPS key of a `jax.Device.device_kind`, None for a chip not listed."""
  kind = device_kind.strip().lower()
  for prefix, name in _DEVICE_KINDS:
    if kind.startswith(prefix):
      return name
  return None


def resolve_chip(name: str, device_kind: str) -> Chip:
  """`name` ("auto": the chip `device_kind` names) as a Chip; raises for unknown names."""
  if name.lower() != "auto":
    return chip(name)
  found = chip_of_device_kind(device_kind)
  if found is None:
    raise ValueError(f"train.chip=auto: no peak figures for device kind {device_kind!r}; set "
                     f"--config.train.chip to one of {sorted(CHIPS)} (hawk_jax/hardware.py)")
  return CHIPS[found]


def rated_peak_flops(name: str, *, f32: bool, device_kind: str) -> float:
  """Per-chip peak FLOP/s an MFU is rated against: the bf16 peak, or the f32 peak for f32
  compute where the chip has one listed (TPUs run f32 matmuls as bf16 passes: bf16 peak)."""
  c = resolve_chip(name, device_kind)
  return c.peak_f32_flops if f32 and c.peak_f32_flops else c.peak_bf16_flops
