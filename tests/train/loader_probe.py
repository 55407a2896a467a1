"""Prints a fingerprint of each row of the first training batch this process loads:
`python -m tests.train.loader_probe DATA_DIR` (under launch/local_pod.sh: each process's rows).
tests/train/test_pod.py compares the processes' rows with a one-process run's."""
import hashlib
import os
import sys

from absl import flags

from hawk_jax import distributed
from hawk_jax.train.data import train_iterator
from tests.support import tiny_config


def main(data_dir: str) -> None:
  flags.FLAGS.mark_as_parsed()
  if os.environ.get("JAX_NUM_PROCESSES"):
    distributed.initialize()
  batch = next(train_iterator(tiny_config("stage1_pretrain.py", data_dir)))
  rows = [hashlib.sha1(batch["input_ids"][i].tobytes() + batch["frames"][i].tobytes())
          .hexdigest()[:12] for i in range(len(batch["input_ids"]))]
  print("rows " + ",".join(rows), flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
