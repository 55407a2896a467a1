"""Stage 3: description generation and QA on the held-out split, scored separately.

Usage: --config configs/stage3_test.py:size=tiny
"""
from configs.common import base_config


def get_config(arg=None):
  c = base_config(3, arg)
  c.data.source = "hawk"
  c.data.split = "test"
  return c
