"""Test setup: 8 fake CPU devices (for the 2x2x2 mesh tests) before JAX starts, absl flags
parsed for Grain worker processes, and float32 matmuls at full precision for parity."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Many tests compile the same tiny programs (train steps across stages and resumes): a
# persistent compilation cache makes the repeats cheap.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("HAWK_JAX_TEST_CACHE", "/tmp/hawk_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_configure(config):
  config.addinivalue_line("markers",
                          "slow: long-running (full-size compile, soak); run with -m slow")


# gs:// tests: `gcs_bucket` (session) and `gcs_dir` (a fresh prefix per test) on a local GCS
# emulator that Orbax's OCDBT checkpoints work against (tests/gcs_emulator.py).
from tests.gcs_emulator import gcs_bucket, gcs_dir  # noqa: E402, F401
