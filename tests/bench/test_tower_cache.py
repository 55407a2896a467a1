"""`python -m hawk_jax.bench.tower_cache`: the figures of one pixels-against-cache comparison
(checked here on the run of the whole bench, tests/bench/test_side_by_side.py, which includes
this section) and the command's own table and argument errors. No timing is asserted."""
import json

import numpy as np
import pytest

from hawk_jax.bench import tower_cache as bench

# The cache stores float16: each token is kept to half an ulp, 2^-11 of its magnitude (both
# steps compute in float32 here, so that rounding is the only difference between the paths).
F16_REL = 2.0 ** -11


def check_tower_cache_figures(r: dict) -> None:
  """Both input paths give positive figures, and the cache path starts where the pixel path
  does (its tokens and its first loss)."""
  assert (r["dtype"], r["cache_dtype"]) == ("float32", "float16")
  for path in ("pixels", "cache"):
    for figure in ("loader", "step", "e2e"):
      assert r[f"{path}_{figure}_samples_per_s"] > 0, (path, figure)
  assert r["cache_over_pixels_e2e"] > 0 and r["cache_write_s"] > 0
  assert r["cache_bytes_per_sample"] > 0 and r["record_bytes"] > 0
  # The prompts keep their answers: both steps train the main pass's LM head.
  assert r["supervised"] > 0
  # Largest token error over the largest token: float16's 2^-11, plus float32 reassociation
  # (the cache was computed on padded batches of 8, the check on the batch of 2; seen 3.8e-4).
  assert r["cache_token_error"] <= F16_REL + 1e-4
  # A relative error of at most 2^-11 in the visual input moves the loss by no more than about
  # as much (seen: equal in float32 at tiny); 2 x 2^-11 ~ 1e-3. At random weights the loss
  # barely depends on the videos, hence the token check above.
  np.testing.assert_allclose(r["first_loss_cache"], r["first_loss_pixels"], rtol=2 * F16_REL)


def test_tower_cache_command_prints_its_table(tmp_path, capsys, monkeypatch):
  """The command's own output around `tower_cache_case` (run for real in the whole bench's
  test): here the case is a recorded result, so only the command is exercised."""
  recorded = {
      "size": "tiny", "dtype": "float32", "batch": 2, "frames": 4, "image_size": 64,
      "tokens": 208, "workers": 1, "cache_dtype": "float16", "steps": 2, "repeats": 1,
      "loader_batches": 16, "records": 8, "load": "1.00 1.00 1.00", "supervised": 40.0,
      "cache_over_pixels_e2e": 1.5, "cache_over_pixels_step": 1.6, "cache_token_error": 3e-4,
      "cache_write_s": 5.0, "cache_bytes_per_sample": 9e3, "record_bytes": 5e3,
      **{f"{p}_{f}_samples_per_s": 10.0 for p in ("pixels", "cache")
         for f in ("loader", "step", "e2e")},
      "first_loss_pixels": 6.8, "first_loss_cache": 6.8}
  calls = []
  monkeypatch.setattr(bench, "tower_cache_case",
                      lambda *a, **k: calls.append((a, k)) or dict(recorded))
  out = tmp_path / "tower_cache.json"
  assert bench.main(["--sizes", "tiny", "--workers", "1", "--repeats", "1", "--steps", "2",
                     "--json", str(out)]) == 0
  (args, kwargs), = calls
  assert args == ("tiny", 1, 1, 2) and kwargs["text_len"] is None
  text = capsys.readouterr().out
  assert text.startswith("machine: ") and "cache/pixels 1.50x end to end" in text
  assert json.loads(out.read_text())["tower_cache"] == [recorded]


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "huge"], "--sizes"),
    (["--steps", "0"], "--repeats and --steps must be >= 1"),
])
def test_tower_cache_command_refuses_bad_arguments(argv, message):
  with pytest.raises(SystemExit, match=message):
    bench.main(argv)
