"""A stand-in for LLaMA-2's language pretraining, for the CPU smoke run.

HAWK freezes a pretrained LLM; the tiny config's LLM would otherwise be random, and a random
frozen LLM cannot be taught captions through 16 visual tokens in a few dozen steps. This trains
the tiny LLaMA as a plain causal LM on the corpus text itself — the prompts of stages 1 and 2
with the visual placeholders removed (captions, the chat template, descriptions, QA, motion
text) — then writes a "towers" workdir: `frozen/` holds the whole frozen tree (random ViTs
and Q-Formers from the seed, this LLM) so that stage 1 starts from it with
`--config.init.from_stage=DIR`, exactly as it would from `python -m hawk_jax.convert
from-torch` output at full size.

  python -m hawk_jax.train.pretrain_llm --config configs/stage1_pretrain.py:size=tiny \
      --data_dirs DATA/captions,DATA/hawk --workdir DIR [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

import jax
import numpy as np
import optax

from data_pipelines import records
from hawk_jax import checkpoint, compile_cache, console, losses
from hawk_jax.models.hawk import split_params
from hawk_jax.models.llama import Llama
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.sharding import make_mesh, rules_as_list
from hawk_jax.stage_config import add_config_arguments, parse_args_with_config
from hawk_jax.text import motion_text, prompts
from hawk_jax.text.caption import normalize_caption
from hawk_jax.train.data import tokenizer_for
from hawk_jax.train.init import initialize

log = logging.getLogger("hawk_jax.pretrain_llm")



def _text(v) -> str:
  if isinstance(v, np.ndarray):
    v = v.item()
  return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def corpus_sequences(data_dirs, tokenizer, split: str = "train",
                     motion_text_backend: str = motion_text.DEFAULT_BACKEND) -> list[np.ndarray]:
  """Token sequences of every text the stages show the LLM, with no visual placeholders."""
  seqs = []
  backend = motion_text.check_backend(motion_text_backend)

  def add(p: prompts.Prompt):
    seqs.append(np.asarray(p.input_ids)[np.asarray(p.visual_mask) == 0].astype(np.int32))

  for d in data_dirs:
    src = records.open_split(d, split)
    for i in range(len(src)):
      ex = src[i]
      caption = _text(ex.get("caption", ""))
      description = _text(ex.get("description", ""))
      qa = json.loads(_text(ex.get("qa_json", "[]")) or "[]")
      ts = np.asarray(ex.get("timestamps", []), np.float32)
      if caption:
        add(prompts.caption_prompt(tokenizer, normalize_caption(caption), 2))
      motion = motion_text.extract_motion_text(caption or description, backend)
      if motion:
        add(prompts.motion_language_prompt(tokenizer, motion, 1))
      if description:
        q = prompts.DESCRIPTION_QUESTIONS[i % len(prompts.DESCRIPTION_QUESTIONS)]
        add(prompts.instruct_prompt(tokenizer, [{"q": q, "a": description}], 2, ts))
      if qa:
        add(prompts.instruct_prompt(tokenizer, qa, 2, ts))
  if not seqs:
    raise ValueError(f"{data_dirs}: no text found in split {split!r}")
  return seqs


def pack(seqs, length: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-pad each sequence to `length` (cut longer ones); labels -100 on padding."""
  ids = np.zeros((len(seqs), length), np.int32)
  labels = np.full((len(seqs), length), losses.IGNORE, np.int32)
  for i, s in enumerate(seqs):
    s = s[:length]
    ids[i, :len(s)] = s
    labels[i, :len(s)] = s
  return ids, labels


def train_llm(cfg, data_dirs, workdir, steps: int, batch_size: int, lr: float) -> dict:
  config = HawkConfig.from_stage_config(cfg)
  tok = tokenizer_for(cfg)
  seqs = corpus_sequences(data_dirs, tok,
                          motion_text_backend=cfg.data.get("motion_text_backend", "rules"))
  length = min(max(len(s) for s in seqs), cfg.data.max_len)
  ids, labels = pack(seqs, length)
  mesh = make_mesh((1, 1, 1))
  with jax.set_mesh(mesh):
    params = initialize(config, cfg, mesh, rules_as_list(cfg.logical_axis_rules))[0]
  llm = Llama(config.llm)
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(lr / 10, lr, steps // 10, steps, lr / 10),
                   weight_decay=0.01)
  llm_params = params["llm"]
  opt_state = tx.init(llm_params)

  @jax.jit
  def step(p, o, x, y):
    def loss_fn(p):
      return losses.lm_loss(llm.apply({"params": p}, x, attention_mask=(y != losses.IGNORE)), y)[0]
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  rng = np.random.default_rng(cfg.seed)
  history = []
  for i in range(steps):
    idx = rng.integers(0, len(ids), size=batch_size)
    llm_params, opt_state, loss = step(llm_params, opt_state, ids[idx], labels[idx])
    if i == 0 or (i + 1) % 50 == 0 or i + 1 == steps:
      history.append((i + 1, float(loss)))
      log.debug("LM step %d loss %.4f", i + 1, float(loss))
  params = dict(params, llm=llm_params)
  _, frozen = split_params(params, config)
  wd = checkpoint.as_path(workdir)  # local or gs://
  wd.mkdir(parents=True, exist_ok=True)
  checkpoint.write_config(wd, cfg)
  checkpoint.save_params(wd / "frozen", frozen)
  result = {"sequences": len(seqs), "length": length, "first_loss": history[0][1],
            "last_loss": history[-1][1], "steps": steps}
  (wd / "result.json").write_text(json.dumps(result, indent=2))
  return result


def _parser() -> argparse.ArgumentParser:
  p = console.parser("python -m hawk_jax.train.pretrain_llm", __doc__)
  add_config_arguments(p)
  p.add_argument("--data_dirs", required=True, help="comma-separated pre-extracted datasets")
  p.add_argument("--workdir", required=True, help="output towers workdir")
  p.add_argument("--steps", type=int, default=200, help="LM training steps")
  p.add_argument("--batch_size", type=int, default=16, help="sequences per step")
  p.add_argument("--learning_rate", type=float, default=3e-3, help="peak learning rate")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args, cfg = parse_args_with_config(_parser(), argv)
  console.setup_logging(args.log_level)
  if checkpoint.has_params(checkpoint.as_path(args.workdir) / "frozen"):
    print(f"{args.workdir}/frozen exists: LM pretraining already done")
    return 0
  compile_cache.enable()
  r = train_llm(cfg, args.data_dirs.split(","), args.workdir, args.steps, args.batch_size,
                args.learning_rate)
  print(f"LM pretraining: {r['sequences']} sequences, loss {r['first_loss']:.3f} -> "
        f"{r['last_loss']:.3f} in {r['steps']} steps; towers in {args.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
