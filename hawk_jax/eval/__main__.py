"""python -m hawk_jax.eval: see hawk_jax/eval/cli.py."""
import sys

from hawk_jax.eval.cli import main

if __name__ == "__main__":
  sys.exit(main())
