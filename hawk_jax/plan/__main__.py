"""python -m hawk_jax.plan: see hawk_jax/plan/cli.py."""
import sys

from hawk_jax.plan.cli import main

if __name__ == "__main__":
  sys.exit(main())
