"""python -m hawk_jax.timeline: see hawk_jax/timeline/cli.py."""
import sys

from hawk_jax.timeline.cli import main

if __name__ == "__main__":
  sys.exit(main())
