"""Predictions for the test split from a trained workdir: the generating half of stage 3.

One prediction per description and per QA pair of the split (data_pipelines.loaders eval
items: the stored frames and motion resized to the run's image size, the stage-2 test prompt
with the record's timestamps; descriptions answer the first description question). Items are
generated in batches of a fixed size -- the last batch is padded by repetition -- and prompts
are left-padded to a bucketed length, so a whole run uses one or two compilations. Each video
is encoded once even when several items (its description and its QA pairs) ask about it.

`predict(engine, data_dir, ...)` returns the records `hawk_jax.eval.evaluate.evaluate_predictions`
takes: {"task", "video", "question", "reference", "prediction"}.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from data_pipelines import loaders
from hawk_jax.infer import cli_flags

PREDICTIONS_FILE = "predictions.jsonl"


def _encode_new_videos(engine, batch: dict[str, Any], cache: dict, batch_size: int) -> None:
  """Encodes the batch's videos that `cache` (record -> visual tokens) lacks, in one call of
  `batch_size` rows, and drops cached videos the batch no longer uses."""
  wanted = list(dict.fromkeys(batch["record"]))
  for r in [r for r in cache if r not in wanted]:
    del cache[r]
  new = [r for r in wanted if r not in cache]
  if not new:
    return
  first = {r: batch["record"].index(r) for r in new}
  rows = [first[r] for r in new]
  rows += [rows[-1]] * (batch_size - len(rows))
  visual = engine.encode(batch["frames"][rows], batch["motion"][rows])
  for i, r in enumerate(new):
    cache[r] = visual[i]


def predict(engine, data_dir: str, *, split: str = "test", options=None,
            max_items: int | None = None, batch_size: int = 8,
            progress: Callable[[str], None] | None = None) -> list[dict[str, str]]:
  """Generates an answer for every eval item of `split` (the first `max_items`)."""
  import jax.numpy as jnp
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  options = options or engine.default_options()
  dataset = loaders.make_eval_dataset(
      data_dir, split, tokenizer=engine.tokenizer, num_frames=engine.num_frames,
      image_size=engine.image_size, num_visual_tokens=engine.num_visual_tokens)
  total = len(dataset)
  if max_items is not None:
    total = min(total, max_items)
    dataset = dataset[:total]
  records, visual_cache = [], {}
  t0 = time.perf_counter()
  for batch in loaders.eval_batches(dataset, batch_size, engine.tokenizer.pad_id):
    n = len(batch["task"])
    _encode_new_videos(engine, batch, visual_cache, batch_size)
    visual = jnp.stack([visual_cache[r] for r in batch["record"]])
    arrays = {k: batch[k] for k in ("input_ids", "attention_mask", "visual_mask")}
    if n < batch_size:  # pad the last batch so it reuses the compiled loop
      visual = jnp.concatenate([visual, jnp.repeat(visual[-1:], batch_size - n, axis=0)])
      arrays = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, axis=0)])
                for k, v in arrays.items()}
    answers = engine.generate_arrays(visual, arrays["input_ids"], arrays["attention_mask"],
                                     arrays["visual_mask"], options)[:n]
    for i, answer in enumerate(answers):
      records.append({"task": batch["task"][i], "video": batch["video"][i],
                      "question": batch["question"][i], "reference": batch["reference"][i],
                      "prediction": answer.text})
    if progress:
      progress(f"[{len(records)}/{total} items, {time.perf_counter() - t0:.1f}s]")
  return records


def write_predictions(records, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")


def add_predict_args(parser) -> None:
  """The `evaluate --checkpoint` route's flags (besides --out and the judge's)."""
  cli_flags.add_model_args(parser, checkpoint_required=False)
  parser.add_argument("--data_dir", default=None,
                      help="pre-extracted dataset (with --checkpoint): its test split is "
                           "generated, then scored")
  parser.add_argument("--split", default="test", help="split to generate for (--checkpoint)")
  parser.add_argument("--max_items", type=int, default=None,
                      help="only the first N eval items (--checkpoint)")
  parser.add_argument("--batch_size", type=int, default=8,
                      help="items generated together (--checkpoint)")
  cli_flags.add_generation_args(parser)


def predictions_from_checkpoint(args) -> list[dict[str, str]]:
  """The `evaluate --checkpoint` route: generate, write OUT/predictions.jsonl, return them."""
  if not args.data_dir:
    raise ValueError("--checkpoint needs --data_dir (the pre-extracted dataset to evaluate)")
  t0 = time.perf_counter()
  engine, options = cli_flags.load_engine(args)

  def progress(msg):
    print(msg, file=sys.stderr, flush=True)
  progress(f"[loaded {args.checkpoint} in {time.perf_counter() - t0:.1f}s; "
           f"{options.strategy}, up to {options.max_new_tokens} tokens]")
  records = predict(engine, args.data_dir, split=args.split, options=options,
                    max_items=args.max_items, batch_size=args.batch_size, progress=progress)
  path = os.path.join(args.out, PREDICTIONS_FILE)
  write_predictions(records, path)
  progress(f"[wrote {len(records)} predictions to {path} in {time.perf_counter() - t0:.1f}s]")
  return records
