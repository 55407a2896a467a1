"""Parameter summary from shapes alone (`jax.eval_shape`; nothing is allocated).

  python -m hawk_jax.plan.param_summary --config configs/stage2_finetune.py:size=hawk7b

prints one row per module group (parameters, trainable or frozen, dtype) and ends with
`total=<int> trainable=<int>`.
"""
from __future__ import annotations

import collections
import sys
from typing import Sequence

import jax
import numpy as np

from hawk_jax import console
from hawk_jax.models.hawk import is_trainable
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import abstract_params
from hawk_jax.stage_config import add_config_arguments, parse_args_with_config


def summarize(config: HawkConfig, depth: int = 2):
  """Rows (group, n_params, trainable, dtype) grouped by the first `depth` path names."""
  flat = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
  groups = collections.OrderedDict()
  for path, leaf in flat:
    names = tuple(str(getattr(k, "key", k)) for k in path)
    key = (names[:depth], is_trainable(names, config), str(leaf.dtype))
    groups[key] = groups.get(key, 0) + int(np.prod(leaf.shape))
  return [("/".join(n), count, tr, dt) for (n, tr, dt), count in groups.items()]


def format_table(rows) -> str:
  lines = [f"{'module':<40} {'params':>15} {'trainable':>9} {'dtype':>9}"]
  lines.append("-" * len(lines[0]))
  for name, n, tr, dt in rows:
    lines.append(f"{name:<40} {n:>15,} {'yes' if tr else 'no':>9} {dt:>9}")
  total = sum(r[1] for r in rows)
  trainable = sum(r[1] for r in rows if r[2])
  lines.append("-" * len(lines[0]))
  lines.append(f"total={total} trainable={trainable}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = console.parser("python -m hawk_jax.plan.param_summary", __doc__)
  add_config_arguments(parser)
  args, cfg = parse_args_with_config(parser, argv)
  console.setup_logging(args.log_level)
  print(format_table(summarize(HawkConfig.from_stage_config(cfg))))
  return 0


if __name__ == "__main__":
  sys.exit(main())
