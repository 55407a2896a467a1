"""Stage 2: fine-tuning on HAWK anomaly descriptions and QA with the LLaMA-2 chat template.

Usage: --config configs/stage2_finetune.py:size=hawk7b,variant=released
"""
from configs.common import base_config


def get_config(arg=None):
  c = base_config(2, arg)
  c.data.source = "hawk"
  if c.variant == "released":
    c.loss.ml_source = "vl"  # the released stage 2 has no motion-language pass
  return c
