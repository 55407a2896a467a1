"""Predictions for the test split from a trained workdir: the generating half of stage 3.

One prediction per description and per QA pair of the split (data_pipelines.loaders eval
items: the stored frames and motion resized to the run's image size, the stage-2 test prompt
with the record's timestamps; descriptions answer the first description question). Items are
generated in global batches of a fixed number of rows -- the last batch is padded by
repetition -- and prompts are left-padded to a bucketed length, so a whole run uses one or two
compilations. Each video is encoded once per batch that asks about it, however many of its
items (its description and its QA pairs) are in the batch, and kept while the next batch asks
about it too.

Several processes (`--distributed`). The model is sharded over every device of every process
(hawk_jax/infer/serving_layout.py: replicated or tensor-parallel weights over one global mesh).
hawk7b's 18 GB of bf16 weights do not fit one 16 GiB v5e chip, so they are split over a host's
chips (the tensor axis) while the hosts split the rows (the data axis); a larger model may
need a tensor axis across hosts, which the same mesh takes. The alternative -- one model per
process, items split with no lockstep -- only works while the weights fit one host's devices,
and would be a second code path. A model sharded across processes means every process must run
the same jitted programs in the same order with the same shapes (SPMD), so the items are split
by rows of each global batch, not by independent per-process loops:

- global batch k holds items [k*R, (k+1)*R) (R = --batch_size rounded up to a multiple of the
  mesh's data slices): the batches of a one-process run with --batch_size R, so the programs,
  the prompt lengths and every row's answer are those of that run;
- each process supplies the rows its devices hold (`ServingLayout.process_rows`): it decodes
  only those items, and `jax.make_array_from_process_local_data` assembles the global batch;
  processes that share a data slice (a tensor axis across hosts) supply the same rows;
- per batch, one small all-gather agrees on the longest prompt (every process pads to it) and
  on whether any process has a video to encode (then every process takes part in one encoding
  call, padding its rows with a video it already has);
- generated tokens are gathered to every process (`multihost_utils.process_allgather`); each
  keeps the records of its own rows, and at the end the records are all-gathered as JSON, so
  process 0 alone writes predictions.jsonl (and the report).
Every process reaches the same number of batches, so none waits on a collective the others
never make.

`predict(engine, data_dir, ...)` returns the records `hawk_jax.eval.evaluate.evaluate_predictions`
takes: {"task", "video", "question", "reference", "prediction"}.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np
from etils import epath

from data_pipelines import loaders
from data_pipelines import records as records_lib
from hawk_jax import distributed
from hawk_jax.infer import cli_flags
from hawk_jax.infer.engine import round_up

PREDICTIONS_FILE = "predictions.jsonl"


def _items_at(dataset, indices: list[int]) -> Iterator[dict[str, Any]]:
  """The dataset's items at `indices`, in order, decoded by a couple of reader threads ahead."""
  if not indices:
    return iter(())
  source = grain.MapDataset.source(indices).map(lambda i: dataset[int(i)])
  return iter(source.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))


def _encode_new_videos(engine, items: list[dict], cache: dict, rows: int) -> None:
  """Encodes the videos of this process's `items` that `cache` (record -> visual tokens,
  numpy) lacks, in one call of `rows` global rows that every process joins (a process with
  nothing new repeats a row it has), and drops cached videos the batch no longer uses."""
  wanted = list(dict.fromkeys(it["record"] for it in items))
  for r in [r for r in cache if r not in wanted]:
    del cache[r]
  new = [r for r in wanted if r not in cache]
  first = {r: [it["record"] for it in items].index(r) for r in new}
  local = [first[r] for r in new] or [0]
  local += [local[-1]] * (len(items) - len(local))
  frames = np.stack([items[i]["frames"] for i in local])
  motion = np.stack([items[i]["motion"] for i in local])
  visual = engine.encode(frames, motion, rows=rows)
  mine = engine.layout.local_rows(visual, rows)
  for i, r in enumerate(new):
    cache[r] = mine[i]


def open_split(data_dir: str, split: str):
  """The records of `split` of a pre-extracted dataset (records.open_split); a missing folder,
  dataset or split is an error naming it (FileNotFoundError or ValueError)."""
  try:
    return records_lib.open_split(data_dir, split)
  except KeyError as e:  # no such split: a ValueError like every other bad input
    raise ValueError(e.args[0] if e.args else f"{data_dir}: no split {split!r}") from None


def predict(engine, data_dir: str, *, split: str = "test", options=None,
            max_items: int | None = None, batch_size: int = 8,
            progress: Callable[[str], None] | None = None,
            source=None) -> list[dict[str, str]]:
  """Generates an answer for every eval item of `split` (the first `max_items`). Under several
  processes every process calls it and gets every record (module docstring). `source`: the
  split already opened (`open_split`)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  options = options or engine.default_options()
  layout = engine.layout
  if source is None:
    source = open_split(data_dir, split)
  dataset = loaders.make_eval_dataset(
      data_dir, split, tokenizer=engine.tokenizer, num_frames=engine.num_frames,
      image_size=engine.image_size, num_visual_tokens=engine.num_visual_tokens, source=source)
  total = len(dataset)
  if max_items is not None:
    total = min(total, max_items)
  rows = layout.global_rows(batch_size)
  start, stop = layout.process_rows(rows)
  num_batches = -(-total // rows)
  # Rows past the last item repeat it (their answers are dropped), as a one-process run pads.
  positions = [[k * rows + j for j in range(start, stop)] for k in range(num_batches)]
  items_iter = _items_at(dataset, [min(g, total - 1) for batch in positions for g in batch])
  if progress:
    rounded = (f" (--batch_size {batch_size} rounded up to a multiple of the mesh's "
               f"{layout.batch_shards} data slices)" if rows != batch_size else "")
    progress(f"[{total} items in {num_batches} batch(es) of {rows} rows{rounded}]")
  mine: dict[int, dict[str, str]] = {}
  visual_cache: dict = {}
  t0 = time.perf_counter()
  for k, batch_positions in enumerate(positions):
    items = [next(items_iter) for _ in batch_positions]
    new = len({it["record"] for it in items} - set(visual_cache))
    agreed = layout.allgather_ints([max(len(it["input_ids"]) for it in items), new])
    length = round_up(int(agreed[:, 0].max()), engine.prompt_bucket)
    if agreed[:, 1].max() > 0:
      _encode_new_videos(engine, items, visual_cache, rows)
    else:
      for r in [r for r in visual_cache if r not in {it["record"] for it in items}]:
        del visual_cache[r]
    batch = loaders.collate_eval(items, engine.tokenizer.pad_id, length)
    visual = np.stack([visual_cache[it["record"]] for it in items])
    answers = engine.generate_arrays(visual, batch["input_ids"], batch["attention_mask"],
                                     batch["visual_mask"], options, rows=rows)
    for i, position in enumerate(batch_positions):
      if position < total:
        mine[position] = {"task": batch["task"][i], "video": batch["video"][i],
                          "question": batch["question"][i],
                          "reference": batch["reference"][i],
                          "prediction": answers[start + i].text}
    if progress:
      done = min((k + 1) * rows, total)
      progress(f"[{done}/{total} items, {time.perf_counter() - t0:.1f}s]")
  merged: dict[int, dict[str, str]] = {}
  for part in layout.allgather_json(sorted(mine.items())):
    merged.update((int(position), record) for position, record in part)
  missing = sorted(set(range(total)) - set(merged))
  if missing:
    raise RuntimeError(f"no process generated items {missing[:10]}: the mesh leaves rows of "
                       "a batch unowned")
  return [merged[i] for i in range(total)]


def write_predictions(records, path) -> None:
  """JSON lines at `path` (local or gs://, through etils.epath)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                  encoding="utf-8")


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
                      help="items generated together, over all processes (--checkpoint; "
                           "rounded up to a multiple of the mesh's data slices)")
  cli_flags.add_generation_args(parser)


def predictions_from_checkpoint(args) -> list[dict[str, str]]:
  """The `evaluate --checkpoint` route: generate, write OUT/predictions.jsonl (process 0),
  return the records (on every process)."""
  if not args.data_dir:
    raise ValueError("--checkpoint needs --data_dir (the pre-extracted dataset to evaluate)")
  if args.batch_size < 1:
    raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
  t0 = time.perf_counter()
  # Bad input fails in a moment, before the weights are read: the workdir and its step, the
  # generation flags, the dataset and its split.
  cfg = cli_flags.check_checkpoint(args)
  cli_flags.generation_options(cfg, args)
  source = open_split(args.data_dir, args.split)
  engine, options = cli_flags.load_engine(args)
  main = distributed.is_main_process()

  def progress(msg):
    if main:
      print(msg, file=sys.stderr, flush=True)
  progress(f"[loaded {args.checkpoint} in {time.perf_counter() - t0:.1f}s; "
           f"{engine.layout.describe()}; {options.strategy}, up to "
           f"{options.max_new_tokens} tokens]")
  if jax.process_count() > 1:  # every process says which rows it supplies
    rows = engine.layout.global_rows(args.batch_size)
    start, stop = engine.layout.process_rows(rows)
    print(f"[process {jax.process_index()} of {jax.process_count()}: rows [{start}, {stop}) "
          f"of each batch of {rows}]", file=sys.stderr, flush=True)
  records = predict(engine, args.data_dir, split=args.split, options=options,
                    max_items=args.max_items, batch_size=args.batch_size, progress=progress,
                    source=source)
  path = epath.Path(args.out) / PREDICTIONS_FILE
  if main:
    write_predictions(records, path)
  progress(f"[wrote {len(records)} predictions to {path} in {time.perf_counter() - t0:.1f}s]")
  return records
