"""The planner's real-TPU route: `--tpu_topology` compiles with libtpu's TPU compiler on this
CPU (jax.experimental.topologies), for a tiny config on a 2x2 v5e slice."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT

FINAL = re.compile(r"^fits=(true|false) per_device_gib=([0-9.e+-]+) step_tflop=([0-9.e+-]+)$")
SMALL = ["--config.data.num_frames=2", "--config.data.max_len=80", "--config.data.ml_max_len=40"]
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason='libtpu is not installed: pip install "libtpu==0.0.42.*" (the version jax[tpu]==0.10.2 '
           'pins; it compiles for TPUs on a CPU, no TPU needed)')


def _run_cli(args):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # the planner sets its own device count
  env["HAWK_JAX_COMPILE_CACHE"] = os.environ.get("HAWK_JAX_TEST_CACHE",
                                                 "/tmp/hawk_jax_test_xla_cache")
  return subprocess.run([sys.executable, "-m", "hawk_jax.plan", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


@needs_libtpu
def test_tpu_topology_compiles_with_the_tpu_compiler(tmp_path):
  out_json = tmp_path / "plan.json"
  r = _run_cli(["--config", "configs/stage2_finetune.py:size=tiny", "--tpu_topology", "v5e:2x2",
                "--batch", "4", "--no_generate", "--json", str(out_json), *SMALL])
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "compiled for TPU topology v5e:2x2" in r.stdout and "note:" not in r.stdout
  report = json.loads(out_json.read_text())
  assert report["compiled_for"] == "tpu topology" and report["tpu_topology"] == "v5e:2x2"
  assert report["devices"] == 4 and report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  mem = report["memory"]
  # The TPU compiler's own figures: no CPU correction, and arguments at least their logical
  # bytes (tiles pad them).
  assert mem["temp_scale"] == 1.0 and mem["temp_compiled"] > 0
  assert mem["argument"] >= mem["trainable"] + mem["frozen"] + mem["opt_state"] + mem["batch"]
  assert mem["total"] == mem["argument"] + mem["unaliased_output"] + mem["temp"]
  m = FINAL.match(r.stdout.strip().splitlines()[-1])
  assert m and m.group(1) == "true"
  assert float(m.group(2)) == pytest.approx(mem["total"] / 2**30, rel=1e-3)


@needs_libtpu
def test_a_topology_libtpu_cannot_describe_is_an_error():
  r = _run_cli(["--config", "configs/stage2_finetune.py:size=tiny", "--tpu_topology", "v5e:3x3",
                "--no_generate", *SMALL])
  assert r.returncode != 0
  assert "--tpu_topology v5e:3x3: libtpu cannot describe it" in r.stderr
  assert "not divisible" in r.stderr  # libtpu's reason
  assert "fake CPU devices" not in r.stdout


@needs_libtpu
def test_a_topology_of_two_devices_per_chip_is_refused():
  # libtpu's v4 slice has one device per TensorCore; JAX meshes need one per chip.
  r = _run_cli(["--config", "configs/stage2_finetune.py:size=tiny", "--tpu_topology",
                "v4:2x2x1", "--no_generate", *SMALL])
  assert r.returncode != 0
  assert "describes 8 devices (TPU v4) on 4 chips" in r.stderr
  assert "--devices 4 --chip v4" in r.stderr
