"""Stage 1: pretraining on a caption corpus, `[BOS][visual][caption + "\\n"]`, no prompt.

Usage: --config configs/stage1_pretrain.py:size=tiny,variant=paper
"""
from configs.common import base_config


def get_config(arg=None):
  c = base_config(1, arg)
  c.data.source = "captions"
  return c
