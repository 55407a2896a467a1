"""train.chip: "auto" names the chip from the devices' kind, and f32 runs are rated against the
f32 peak, so the logged MFU of a pod is against its own chips."""
import jax
import pytest

from hawk_jax.hardware import CHIPS, chip_of_device_kind, rated_peak_flops, resolve_chip


@pytest.mark.parametrize("kind, name", [
    ("TPU v4", "v4"), ("TPU v5 lite", "v5e"), ("TPU v5e", "v5e"), ("TPU v5", "v5p"),
    ("TPU v5p", "v5p"), ("TPU v6 lite", "v6e"), ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA H200", "h200"), ("cpu", "cpu")])
def test_device_kinds_name_their_chip(kind, name):
  assert chip_of_device_kind(kind) == name
  assert resolve_chip("auto", kind) is CHIPS[name]


def test_this_machine_is_a_cpu():
  assert resolve_chip("auto", jax.devices()[0].device_kind) is CHIPS["cpu"]


def test_unknown_kinds_and_names_fail_clearly():
  assert chip_of_device_kind("Quantum Annealer 9000") is None
  with pytest.raises(ValueError, match="train.chip=auto: no peak figures for device kind "
                                       "'Quantum Annealer 9000'"):
    resolve_chip("auto", "Quantum Annealer 9000")
  with pytest.raises(ValueError, match="unknown chip 'v9'"):
    resolve_chip("v9", "cpu")


def test_f32_runs_are_rated_against_the_f32_peak():
  assert rated_peak_flops("auto", f32=True, device_kind="cpu") == CHIPS["cpu"].peak_f32_flops
  assert rated_peak_flops("auto", f32=False, device_kind="cpu") == CHIPS["cpu"].peak_bf16_flops
  assert rated_peak_flops("h100", f32=True, device_kind="cpu") == CHIPS["h100"].peak_f32_flops
  # TPUs list no f32 peak (their f32 matmuls are bf16 passes): the bf16 peak
  assert rated_peak_flops("v5e", f32=True, device_kind="cpu") == CHIPS["v5e"].peak_bf16_flops
