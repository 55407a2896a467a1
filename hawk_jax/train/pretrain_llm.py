"""A stand-in for LLaMA-2's language pretraining (and for pretrained towers), for the CPU run.

HAWK freezes a pretrained LLM; the tiny config's LLM would otherwise be random, and a random
frozen LLM cannot be taught captions through 16 visual tokens in a few dozen steps. This trains
the tiny LLaMA as a plain causal LM on the corpus text itself -- the prompts of stages 1 and 2
(captions, the chat template, descriptions, QA, motion text) -- then writes a "towers" workdir:
`frozen/` holds the whole frozen tree (random ViTs and Q-Formers from the seed, this LLM) so
that stage 1 starts from it with `--config.init.from_stage=DIR`, exactly as it would from
`python -m hawk_jax.convert from-torch` output at full size.

The corpus prompts keep the stages' layout, visual placeholders included, and where the video
goes they hold a text stand-in: the appearance half gets the first tokens of the clip's caption
(or description), the motion half (and the motion-language prompt) the first tokens of its
motion text. A real LLaMA-2 reads whatever context it is given; a 2-layer LLM trained on text
with the region removed learned to ignore it and answered after it as if it were not there. With
the stand-in the LLM's yes/no answer follows the region's text (a region reading "walks" gave
P(no) 0.93, "collides" P(yes) 0.80), so the trainable video branch has something to write to.

The random image Q-Formers are drawn variance-preserving (normal with std 1/sqrt(fan_in),
`signal_preserving_qformers`), not with BLIP-2's training init (std 0.02). Pretrained towers
pass what they see; random ones with std 0.02 do not: the cross-attention then adds about 2% to
the learned queries, and two different synthetic clips reached the trainable video Q-Former as
tokens 1-2% apart (73% apart with this draw; the ViT's own outputs differ by 90-130%).

  python -m hawk_jax.train.pretrain_llm --config configs/stage1_pretrain.py:size=tiny \
      --data_dirs DATA/captions,DATA/hawk --workdir DIR [--steps 200]
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
                     motion_text_backend: str = motion_text.DEFAULT_BACKEND,
                     num_visual_tokens: int = 2) -> list[prompts.Prompt]:
  """The prompts of every text the stages show the LLM, laid out as the stages lay them out,
  with a text stand-in for the video where the video goes (module docstring): the appearance
  half of the `num_visual_tokens` placeholders gets the first tokens of the clip's caption
  (else its description), the motion half -- and the motion-language prompt's placeholders --
  the first tokens of its motion text; the rest is the unknown token. The stand-in is context,
  never a label."""
  seqs = []
  backend = motion_text.check_backend(motion_text_backend)
  nv = int(num_visual_tokens)

  def fill(ids, where, text):
    t = np.asarray(tokenizer.encode(text), np.int32)[:where.size] if text else []
    ids[where] = tokenizer.unk_id
    ids[where[:len(t)]] = t

  def add(p: prompts.Prompt, seen: str, moving: str, halves: bool = True):
    ids = np.array(p.input_ids, np.int32)
    where = np.flatnonzero(np.asarray(p.visual_mask))
    if halves:  # [appearance tokens; motion tokens]
      fill(ids, where[:where.size // 2], seen)
      fill(ids, where[where.size // 2:], moving)
    else:       # the motion-language pass: motion tokens only
      fill(ids, where, moving)
    seqs.append(prompts.Prompt(ids, p.visual_mask, p.labels))

  for d in data_dirs:
    src = records.open_split(d, split)
    for i in range(len(src)):
      ex = src[i]
      caption = _text(ex.get("caption", ""))
      description = _text(ex.get("description", ""))
      qa = json.loads(_text(ex.get("qa_json", "[]")) or "[]")
      ts = np.asarray(ex.get("timestamps", []), np.float32)
      seen = caption or description
      motion = motion_text.extract_motion_text(caption or description, backend)
      if caption:
        add(prompts.caption_prompt(tokenizer, normalize_caption(caption), nv), seen, motion)
      if motion:
        add(prompts.motion_language_prompt(tokenizer, motion, max(1, nv // 2)), seen, motion,
            halves=False)
      if description:
        q = prompts.DESCRIPTION_QUESTIONS[i % len(prompts.DESCRIPTION_QUESTIONS)]
        add(prompts.instruct_prompt(tokenizer, [{"q": q, "a": description}], nv, ts), seen,
            motion)
      if qa:
        add(prompts.instruct_prompt(tokenizer, qa, nv, ts), seen, motion)
  if not seqs:
    raise ValueError(f"{data_dirs}: no text found in split {split!r}")
  return seqs


# Output projections: every dimension but the last is an input (heads x head_dim -> embed).
_OUTPUT_KERNELS = ("out", "wo")


def signal_preserving_qformers(params: dict, seed: int) -> dict:
  """`params` with the kernels of both branches' frozen image Q-Formers redrawn as
  normal(0, 1/fan_in) (module docstring: random towers that pass information)."""
  rng = np.random.default_rng(seed + 7919)

  def redraw(path, x):
    names = [getattr(k, "key", "") for k in path]
    if names[-1] != "kernel":
      return x
    fan_in = int(np.prod(x.shape[:-1])) if names[-2] in _OUTPUT_KERNELS else int(x.shape[0])
    return (rng.standard_normal(x.shape, np.float32) / np.sqrt(fan_in)).astype(x.dtype)

  out = dict(params)
  for branch in ("appearance", "motion"):
    tower = dict(out[branch])
    tower["qformer"] = jax.tree_util.tree_map_with_path(redraw, jax.device_get(tower["qformer"]))
    out[branch] = tower
  return out


def pack(seqs: list[prompts.Prompt], length: int
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(ids, labels, attention mask) [N, length]: each prompt right-padded to `length` (longer
  ones cut); every text token is a label (the LLM learns all of the text, questions included),
  placeholders and padding are -100; the mask covers text and placeholders."""
  ids = np.zeros((len(seqs), length), np.int32)
  labels = np.full((len(seqs), length), losses.IGNORE, np.int32)
  mask = np.zeros((len(seqs), length), np.int32)
  for i, p in enumerate(seqs):
    s = np.asarray(p.input_ids[:length], np.int32)
    text = np.asarray(p.visual_mask[:length]) == 0
    ids[i, :len(s)] = s
    labels[i, :len(s)] = np.where(text, s, losses.IGNORE)
    mask[i, :len(s)] = 1
  return ids, labels, mask


def train_llm(cfg, data_dirs, workdir, steps: int, batch_size: int, lr: float) -> dict:
  config = HawkConfig.from_stage_config(cfg)
  tok = tokenizer_for(cfg)
  seqs = corpus_sequences(data_dirs, tok,
                          motion_text_backend=cfg.data.get("motion_text_backend", "rules"),
                          num_visual_tokens=config.num_visual_tokens)
  length = min(max(len(s) for s in seqs), cfg.data.max_len)
  ids, labels, masks = pack(seqs, length)
  mesh = make_mesh((1, 1, 1))
  with jax.set_mesh(mesh):
    params = initialize(config, cfg, mesh, rules_as_list(cfg.logical_axis_rules))[0]
  llm = Llama(config.llm)
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(lr / 10, lr, steps // 10, steps, lr / 10),
                   weight_decay=0.01)
  llm_params = params["llm"]
  opt_state = tx.init(llm_params)

  @jax.jit
  def step(p, o, x, y, m):
    def loss_fn(p):
      return losses.lm_loss(llm.apply({"params": p}, x, attention_mask=m), y)[0]
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  rng = np.random.default_rng(cfg.seed)
  history = []
  for i in range(steps):
    idx = rng.integers(0, len(ids), size=batch_size)
    llm_params, opt_state, loss = step(llm_params, opt_state, ids[idx], labels[idx], masks[idx])
    if i == 0 or (i + 1) % 50 == 0 or i + 1 == steps:
      history.append((i + 1, float(loss)))
      log.debug("LM step %d loss %.4f", i + 1, float(loss))
  params = signal_preserving_qformers(dict(params, llm=llm_params), cfg.seed)
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
