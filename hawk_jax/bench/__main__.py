"""python -m hawk_jax.bench: see hawk_jax/bench/side_by_side.py."""
import os
import sys

from hawk_jax.bench import side_by_side


def main(argv=None) -> int:
  # PyTorch's OpenMP threads spin-wait for work by default; on 2 cores shared with XLA's
  # threads and other processes that made its steps up to 10x slower. Passive waiting is its
  # best setting here (set before torch loads OpenMP).
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  return side_by_side.main(argv)


if __name__ == "__main__":
  sys.exit(main())
