"""python -m hawk_jax.convert: see hawk_jax/convert/cli.py."""
import sys

from hawk_jax.convert.cli import main

if __name__ == "__main__":
  sys.exit(main())
