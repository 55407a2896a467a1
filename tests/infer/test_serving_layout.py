"""Serving layouts on 8 fake devices in one process: which layout "auto" picks, that a
tensor-parallel engine holds only its share of the sharded weights (and whole copies of what
does not divide), that its decode program gathers no weight, and that it generates the tokens of
a one-device engine (greedy and beam search)."""
import re

import jax
import numpy as np
import pytest

from configs.common import base_config
from hawk_jax.infer import generate as generate_lib
from hawk_jax.infer import serving_layout
from hawk_jax.infer.engine import Engine, GenerationOptions
from hawk_jax.infer.serving_layout import LayoutRequest, parse_layout, plan_layout
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.text import prompts
from tests.support import write_random_workdir

MAX_NEW = 6
QUESTIONS = (prompts.DESCRIPTION_QUESTIONS[0],
             "Who is in the video and what do they do after that?")


@pytest.fixture(scope="module")
def tiny_cfg():
  cfg = base_config(2, "size=tiny")
  cfg.data.num_frames = 4
  cfg.generate.max_new_tokens = MAX_NEW
  return cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_cfg):
  path = str(tmp_path_factory.mktemp("stage2"))
  write_random_workdir(path, tiny_cfg, steps=(10,), std=0.08)
  return path


def test_parse_layout():
  assert parse_layout("auto") == LayoutRequest("auto")
  assert parse_layout("tensor:4") == LayoutRequest("tensor", 4)
  assert str(parse_layout("tensor:4")) == "tensor:4"
  for bad in ("fsdp", "tensor:", "tensor:0", "tensor:x"):
    with pytest.raises(ValueError, match="layout"):
      parse_layout(bad)


def test_auto_replicates_what_fits_and_splits_what_does_not(tiny_cfg):
  config = HawkConfig.from_stage_config(tiny_cfg)
  total = serving_layout._weights_bytes(config)
  roomy = plan_layout(config, "auto", capacity=100 * total)
  assert roomy.kind == "replicated" and dict(roomy.mesh.shape) == {"data": 8, "fsdp": 1,
                                                                     "tensor": 1}
  assert roomy.weight_bytes == total
  # Replicated weights would take 0.8 of a device (more than WEIGHT_FRACTION): the smallest
  # tensor axis whose shards fit is chosen, and no weight is split over data or fsdp.
  tight = plan_layout(config, "auto", capacity=total / 0.8)
  assert tight.kind == "tensor" and tight.tensor == 2 and tight.mesh.shape["data"] == 4
  assert tight.weight_bytes <= serving_layout.WEIGHT_FRACTION * tight.capacity_bytes
  specs = [s.spec for s in jax.tree.leaves(tight.param_shardings(config))]
  assert {a for spec in specs for a in spec if a is not None} == {"tensor"}
  assert plan_layout(config, "auto", devices=jax.devices()[:1]).kind == "single"
  with pytest.raises(ValueError, match="does not divide"):
    plan_layout(config, "tensor:3")


def _addressable_shapes(array):
  return {tuple(s.data.shape) for s in array.addressable_shards}


def _answers(engine, options):
  vids = np.random.default_rng(0).integers(0, 256, (2, 4, 64, 64, 3), dtype=np.uint8)
  visual = engine.encode(vids, vids[:, ::-1])
  batch = [engine.test_prompt(q, [0.0, 0.5, 1.0, 1.5]) for q in QUESTIONS]
  return [a.tokens for a in engine.generate(visual, batch, options)]


def test_tensor_parallel_engine_holds_its_share_and_matches_one_device(workdir):
  single = Engine.from_workdir(workdir, layout="single")
  # tensor:4 over 8 devices: heads (4), MLP (256) and vocabulary (512) split 4 ways; the 2 kv
  # heads do not divide by 4 and stay whole on every device.
  sharded = Engine.from_workdir(workdir, layout="tensor:4")
  assert sharded.layout.kind == "tensor" and dict(sharded.layout.mesh.shape) == {
      "data": 2, "fsdp": 1, "tensor": 4}
  layer = sharded.llm_params["layers_0"]
  assert layer["mlp"]["gate_proj"]["kernel"].shape == (128, 256)
  assert _addressable_shapes(layer["mlp"]["gate_proj"]["kernel"]) == {(128, 64)}
  assert _addressable_shapes(layer["mlp"]["down_proj"]["kernel"]) == {(64, 128)}
  assert _addressable_shapes(layer["self_attn"]["q_proj"]["kernel"]) == {(128, 1, 32)}
  assert _addressable_shapes(layer["self_attn"]["k_proj"]["kernel"]) == {(128, 2, 32)}
  assert _addressable_shapes(sharded.llm_params["lm_head"]["kernel"]) == {(128, 128)}
  assert _addressable_shapes(sharded.params["llm"]["embed_tokens"]["embedding"]) == {(128, 128)}
  vit = sharded.params["appearance"]["vit"]["layers"]  # the towers' widths split too
  assert _addressable_shapes(vit["mlp"]["fc1"]["kernel"]) == {(2, 64, 32)}
  assert sharded.layout.weight_bytes < single.layout.weight_bytes / 2
  for leaf in jax.tree.leaves(sharded.llm_params):
    assert len(leaf.sharding.device_set) == 8

  greedy = GenerationOptions(max_new_tokens=MAX_NEW)
  beam = GenerationOptions(max_new_tokens=MAX_NEW, strategy="beam", num_beams=2)
  want_greedy, want_beam = _answers(single, greedy), _answers(single, beam)
  assert want_greedy[0] != want_greedy[1]
  assert _answers(sharded, greedy) == want_greedy
  assert _answers(sharded, beam) == want_beam

  # The decode loop reads the weights where they lie: no all-gather yields a weight's shape
  # (an FSDP layout would gather every layer for every token).
  rows, length = 2, 96
  emb = sharded.layout.put(np.zeros((rows, length, 128), np.float32))
  mask = sharded.layout.put(np.ones((rows, length), np.int32))
  with sharded.layout.activate():
    choice, settings, _, rng = generate_lib._options(sharded.llm, False, 1.0, 1.0, 0, None,
                                                     sharded.tokenizer.eos_id,
                                                     sharded.tokenizer.pad_id, 0)
    hlo = generate_lib._sample_loop.lower(
        sharded.llm, sharded.llm_params, emb, mask, rng, settings, max_new_tokens=MAX_NEW,
        choice=choice).compile().as_text()
  gathered = set(re.findall(r"= \w+\[([\d,]*)\]\S* all-gather(?:-start)?\(", hlo))
  # The program's shapes are per device: a gathered weight would appear whole, or as its
  # tensor-axis shard gathered over the other axes -- the shard shape each device holds here.
  weights = {",".join(map(str, shape)) for leaf in jax.tree.leaves(sharded.llm_params)
             if leaf.ndim >= 2 for shape in _addressable_shapes(leaf) | {leaf.shape}}
  assert gathered and "all-reduce" in hlo  # activations move (heads, partial sums) ...
  assert not gathered & weights, gathered & weights  # ... weights do not
