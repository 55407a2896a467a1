"""HAWK weights between hawk-jax workdirs and PyTorch.

  python -m hawk_jax.convert to-torch --checkpoint WORKDIR --out FILE.pth [--full]
      [--hf_llama DIR] [--step N]
  python -m hawk_jax.convert from-torch --hawk FILE.pth [--llama_hf DIR]
      [--vision_hf DIR | --eva_vit_lavis FILE] [--qformer_hf DIR | --blip2_lavis FILE]
      --size hawk7b --variant released [--stage 2] --out WORKDIR

to-torch writes `{"model": <the 129 trainable tensors>}` under the original HAWK names (what
the released code saves, and loads with `load_state_dict(strict=False)`; readable with
`torch.load(weights_only=True)`); `--full` also writes FILE_full.pth with every tensor (what
`HawkTorch.load_state_dict` takes); `--hf_llama DIR` writes the LLM as a HuggingFace folder.

from-torch builds the full parameter tree and writes a workdir (config.json, frozen/,
checkpoints/<step>/ with the trainable parameters, a fresh optimizer state and the sources in
`meta`) that `--config.init.from_stage=WORKDIR` and inference load. Where each part comes from:
  --hawk          released pretrained.pth / finetuned.pth: both branches' video Q-Formers, video
                  query tokens, frame position embeddings, projections, and query_tokens_motion
                  (or a full state dict: then everything it holds). It wins over the others.
  --llama_hf      the LLM (LLaMA-2-7B-chat for hawk7b).
  --vision_hf     both branches' EVA ViTs, from a Blip2VisionModel / Blip2 folder; its
                  post_layernorm is ln_vision.
  --eva_vit_lavis both ViTs from LAVIS eva_vit_g.pth (which has no ln_vision).
  --qformer_hf    the image Q-Former (and query_tokens when the folder is a full Blip2 model).
  --blip2_lavis   the image Q-Former, query_tokens and ln_vision from LAVIS BLIP-2.
  anything else   random init (seed = the stage config's seed), printed as such.
With --variant released the motion branch follows the released code: its image Q-Former is
never loaded from BLIP-2 (random and frozen there; released files lack it, so it is random here
too, and differs from the original's), its ln_vision is the identity (torch's LayerNorm init),
and its query tokens come from the HAWK file. With --variant paper the motion branch gets the
same BLIP-2 towers as the appearance branch.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
from etils import epath
from safetensors import safe_open

from configs import stage1_pretrain, stage2_finetune, stage3_test
from hawk_jax import checkpoint, console
from hawk_jax.convert.blip2_hf import qformer_from_hf, vision_from_hf
from hawk_jax.convert.hawk_names import (
  EXPORTED_TRAINABLE,
  assemble,
  hawk_groups,
  hawk_params_from_torch,
  hawk_to_torch,
)
from hawk_jax.convert.lavis import blip2_from_lavis, load_lavis_state, vision_from_lavis
from hawk_jax.convert.llama_hf import llama_from_hf, llama_to_hf
from hawk_jax.convert.table import ConversionError, check_shapes
from hawk_jax.models.hawk import split_params
from hawk_jax.models.model_config import HawkConfig
from hawk_jax.models.params import abstract_params, random_params, subtree
from hawk_jax.tensor_files import (
  UnsafeCheckpointError,
  is_remote,
  local_copy_of,
  local_path_for,
  safetensors_keys,
)
from hawk_jax.train.optim import make_optimizer
from hawk_jax.workdir import WorkdirError, load_params, read_config, select_step, write_workdir

STAGE_CONFIGS = {1: stage1_pretrain, 2: stage2_finetune, 3: stage3_test}
BRANCHES = ("appearance", "motion")


def full_path_for(out: str) -> str:
  """FILE.pth -> FILE_full.pth."""
  stem, ext = os.path.splitext(out)
  return f"{stem}_full{ext or '.pth'}"


# ----------------------------------------------------------------------------- to-torch

def read_for_export(workdir: str, include_frozen: bool = True, step: int | None = None):
  """(HawkConfig, params) of a workdir in the dtypes it was saved with: everything, or with
  include_frozen=False only what a HAWK .pth holds -- the trainable groups and
  `motion/query_tokens` (carried even where it is frozen) -- at a fraction of the memory."""
  groups = None
  if not include_frozen:
    groups = list(EXPORTED_TRAINABLE)
  loaded = load_params(workdir, step=step, groups=groups)
  return loaded.config, loaded.params


def check_output_file(out: str, flag: str = "--out") -> None:
  """Raises (naming `out`) when a local `out` cannot be a file to write: it is a folder, or a
  file stands where one of its folders would be. Called before anything is read, so a typo
  does not cost the reading of the weights."""
  if is_remote(out):
    return
  if os.path.isdir(out):
    raise IsADirectoryError(f"{out}: is a folder; {flag} takes a file name (e.g. hawk.pth)")
  parent = os.path.dirname(os.path.abspath(out))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise NotADirectoryError(f"{out}: cannot be written ({flag}): {parent} is a file, not a "
                             "folder")


def to_torch(checkpoint_dir: str, out: str, full: bool = False, hf_llama: str | None = None,
             step: int | None = None, log=print) -> list[str]:
  """Export a workdir; returns the paths written (local or gs://)."""
  check_output_file(out)
  if full:
    check_output_file(full_path_for(out))
  select_step(checkpoint_dir, step)  # a missing workdir or step, before torch is imported
  import torch

  from hawk_jax.convert.torch_hawk import to_torch_state  # needs torch
  config, params = read_for_export(checkpoint_dir, include_frozen=full or bool(hf_llama),
                                   step=step)
  trainable, full_state = hawk_to_torch(params, config)
  written = []
  if "://" not in out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with local_path_for(out) as local:  # torch.save writes local files; gs:// gets a copy
    torch.save({"model": to_torch_state(trainable)}, local)
  log(f"wrote {out}: {len(trainable)} trainable tensors "
      f"({sum(a.size for a in trainable.values()):,} parameters)")
  written.append(out)
  if full:
    path = full_path_for(out)
    with local_path_for(path) as local:
      torch.save({"model": to_torch_state(full_state)}, local)
    log(f"wrote {path}: {len(full_state)} tensors (full state dict)")
    written.append(path)
  if hf_llama:
    llama_to_hf(config.llm, params["llm"], hf_llama)
    log(f"wrote {hf_llama}: HuggingFace LLaMA (config.json + model.safetensors)")
    written.append(hf_llama)
  return written


# ----------------------------------------------------------------------------- from-torch

# Fields that change shapes or numerics; a source model must agree with the config on them.
_LLAMA_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "resolved_head_dim", "rms_norm_eps", "rope_theta",
                 "tie_word_embeddings", "attention_bias", "mlp_bias")
_VISION_FIELDS = ("image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
                  "layer_norm_eps")
_QFORMER_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                   "layer_norm_eps", "cross_attention_freq", "encoder_hidden_size")


def _check_fields(got, want, fields, source: str) -> None:
  bad = [f"{f}: file {getattr(got, f)!r}, config {getattr(want, f)!r}" for f in fields
         if getattr(got, f) != getattr(want, f)]
  if bad:
    raise ValueError(f"{source} does not match the model config: " + "; ".join(bad))


def _identity_ln(width: int) -> dict:
  return {"scale": np.ones((width,), np.float32), "bias": np.zeros((width,), np.float32)}


def _hf_query_tokens(folder: str):
  """`query_tokens` of a full Blip2 save_pretrained folder (local or gs://), or None (only the
  file holding it is read)."""
  for f in sorted(epath.Path(folder).glob("*.safetensors"), key=lambda p: p.name):
    if "query_tokens" in safetensors_keys(f):
      with local_copy_of(f) as local, safe_open(local, "pt") as fh:
        return fh.get_tensor("query_tokens").float().numpy()
  return None


def _read_ln_vision(state: dict, source: str, width: int) -> dict:
  out = {}
  for flax_name, suffix in (("scale", "weight"), ("bias", "bias")):
    key = f"ln_vision.{suffix}"
    if key not in state:
      raise ConversionError(f"{source}: missing {key}")
    if tuple(state[key].shape) != (width,):
      raise ConversionError(f"{source}: {key} has shape {tuple(state[key].shape)}, the model "
                            f"wants ({width},)")
    out[flax_name] = state[key]
  return out


def tower_groups(config, released: bool, llama_hf=None, vision_hf=None, eva_vit_lavis=None,
                 qformer_hf=None, blip2_lavis=None, log=print) -> dict:
  """{group path: (subtree, source)} from the pretrained tower files."""
  out: dict = {}
  if llama_hf:
    model, params = llama_from_hf(llama_hf, dtype=config.llm.param_dtype,
                                  scan_layers=config.llm.scan_layers)
    _check_fields(model.config, config.llm, _LLAMA_FIELDS, llama_hf)
    out[("llm",)] = (params, f"HF LLaMA {llama_hf}")

  vit_body, ln_vision, vit_source, ln_source = None, None, None, None
  if vision_hf and eva_vit_lavis:
    raise ValueError("pass one of --vision_hf and --eva_vit_lavis")
  if qformer_hf and blip2_lavis:
    raise ValueError("pass one of --qformer_hf and --blip2_lavis")
  if vision_hf:
    model, params = vision_from_hf(vision_hf, scan_layers=config.vision.scan_layers)
    _check_fields(model.config, config.vision, _VISION_FIELDS, vision_hf)
    vit_body = {k: v for k, v in params.items() if k != "ln_vision"}
    ln_vision, vit_source = params["ln_vision"], f"HF Blip2VisionModel {vision_hf}"
    ln_source = f"{vit_source} (post_layernorm)"
  if eva_vit_lavis:
    params = vision_from_lavis(eva_vit_lavis, config.vision)
    vit_body = {k: v for k, v in params.items() if k != "ln_vision"}
    vit_source = f"LAVIS EVA ViT {eva_vit_lavis}"

  qformer, query_tokens, q_source, qt_source = None, None, None, None
  if qformer_hf:
    model, qformer = qformer_from_hf(qformer_hf,
                                     num_query_tokens=config.qformer.num_query_tokens)
    _check_fields(model.config, config.qformer, _QFORMER_FIELDS, qformer_hf)
    q_source = f"HF Blip2QFormerModel {qformer_hf}"
    query_tokens = _hf_query_tokens(qformer_hf)
    qt_source = q_source if query_tokens is not None else None
  if blip2_lavis:
    state, source = load_lavis_state(blip2_lavis, "BLIP-2 checkpoint")
    b = blip2_from_lavis(state, None, config.qformer)
    qformer, query_tokens = b["qformer"], b["query_tokens"]
    q_source = qt_source = f"LAVIS BLIP-2 {blip2_lavis}"
    ln_vision = _read_ln_vision(state, blip2_lavis, config.vision.hidden_size)
    ln_source = q_source  # BLIP-2 trained ln_vision together with its Q-Former

  for branch in BRANCHES:
    twin = branch == "motion" and released
    if vit_body is not None:
      if twin:
        ln, src = _identity_ln(config.vision.hidden_size), "identity (released: never loaded)"
      elif ln_vision is not None:
        ln, src = ln_vision, ln_source
      else:
        ln, src = _identity_ln(config.vision.hidden_size), "identity (eva_vit_g.pth has none)"
        log(f"warning: {branch} ln_vision is the identity: {eva_vit_lavis} has no ln_vision; "
            f"pass --blip2_lavis for BLIP-2's")
      out[(branch, "vit")] = (dict(vit_body, ln_vision=ln), f"{vit_source}; ln_vision: {src}")
    if qformer is not None and not twin:
      out[(branch, "qformer")] = (qformer, q_source)
    if query_tokens is not None and not twin:
      out[(branch, "query_tokens")] = (query_tokens, qt_source)
  return out


def from_torch(out: str, size: str, variant: str, stage: int = 2, hawk: str | None = None,
               llama_hf: str | None = None, vision_hf: str | None = None,
               eva_vit_lavis: str | None = None, qformer_hf: str | None = None,
               blip2_lavis: str | None = None, seed: int | None = None, step: int = 0,
               log=print) -> dict[str, str]:
  """Build and write a workdir; returns {group: source}."""
  if stage not in STAGE_CONFIGS:
    raise ValueError(f"--stage {stage}: known stages {sorted(STAGE_CONFIGS)}")
  wd = epath.Path(out)  # local or gs://
  if (checkpoint.has_params(str(wd / "frozen")) or (wd / checkpoint.FROZEN_REF).exists()
      or (wd / "checkpoints").exists()):
    raise FileExistsError(f"{out} already holds a workdir; choose a new --out")
  cfg = STAGE_CONFIGS[stage].get_config(f"size={size},variant={variant}")
  if seed is not None:
    cfg.seed = seed
  config = HawkConfig.from_stage_config(cfg)
  released = variant == "released"
  abstract = abstract_params(config)

  found = tower_groups(config, released, llama_hf, vision_hf, eva_vit_lavis, qformer_hf,
                       blip2_lavis, log)
  if hawk:
    for path, tree in hawk_params_from_torch(hawk, config).items():
      if path in found:
        log(f"note: {'/'.join(path)} from {hawk} replaces {found[path][1]}")
      found[path] = (tree, f"HAWK {hawk}")

  groups, sources = {}, {}
  for path, (tree, source) in found.items():
    want = subtree(abstract, path)
    check_shapes(tree, want, what=f"{'/'.join(path)} from {source}")
    groups[path] = jax.tree.map(lambda a, w: np.asarray(a).astype(w.dtype), tree, want)
    sources["/".join(path)] = source
  absent = [g.path for g in hawk_groups(config) if g.path not in groups]
  if absent:
    for path, tree in random_params(config, cfg.seed, groups=absent).items():
      groups[path] = tree
      why = ""
      if released and path == ("motion", "qformer"):
        why = (" -- the released code never loads BLIP-2 into Qformer_motion and released "
               "files lack it, so this differs from the original's random one")
      sources["/".join(path)] = f"random init (seed {cfg.seed}){why}"
  params = assemble(groups)
  check_shapes(params, abstract, what="assembled HAWK params")
  sources = {g.name: sources[g.name] for g in hawk_groups(config)}  # in model order
  for group, source in sources.items():
    log(f"{group:34s} <- {source}")

  trainable, _ = split_params(params, config)
  tx, _ = make_optimizer(cfg.optim, cfg.train.num_steps)
  write_workdir(out, cfg, params, step=step, opt_state=tx.init(trainable),
                meta={"stage": stage, "variant": variant, "size": size, "converted": True,
                      "sources": sources})
  log(f"wrote workdir {out} (step {step})")
  return sources


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
  p = console.parser("python -m hawk_jax.convert", __doc__)
  sub = p.add_subparsers(dest="command", required=True)
  t = sub.add_parser("to-torch", help="workdir -> HAWK .pth (+ full state dict, HF LLaMA)")
  t.add_argument("--checkpoint", required=True, help="hawk-jax workdir")
  t.add_argument("--out", required=True, help="FILE.pth for {'model': trainable tensors}")
  t.add_argument("--full", action="store_true", help="also write FILE_full.pth (every tensor)")
  t.add_argument("--hf_llama", help="also write the LLM as a HuggingFace folder here")
  t.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  f = sub.add_parser("from-torch", help="PyTorch / HF files -> hawk-jax workdir")
  f.add_argument("--hawk", help="released HAWK pretrained.pth / finetuned.pth or a full state dict")
  f.add_argument("--llama_hf", help="HuggingFace LLaMA folder")
  f.add_argument("--vision_hf", help="HF Blip2VisionModel (or Blip2) folder")
  f.add_argument("--eva_vit_lavis", help="LAVIS eva_vit_g.pth")
  f.add_argument("--qformer_hf", help="HF Blip2QFormerModel (or Blip2) folder")
  f.add_argument("--blip2_lavis", help="LAVIS blip2_pretrained_*.pth")
  f.add_argument("--size", required=True, help="tiny, small, hawk7b, hawk13b")
  f.add_argument("--variant", default="released", help="released or paper")
  f.add_argument("--stage", type=int, default=2, help="stage config written (1, 2, 3)")
  f.add_argument("--seed", type=int, help="seed of the random init (default: the config's)")
  f.add_argument("--step", type=int, default=0, help="checkpoint step to write")
  f.add_argument("--out", required=True, help="new workdir")
  return p


def main(argv=None) -> int:
  """Bad input -- a --checkpoint that is not a workdir, a --step it lacks or that is damaged
  (WorkdirError), an --out that cannot be written, a weight file that is missing, refused
  (UnsafeCheckpointError) or does not fit the model (ConversionError) -- is one `error: ...`
  line on stderr and exit status 2."""
  args = _parser().parse_args(argv)
  console.setup_logging(args.log_level)
  console.require("torch", "torch", f"convert {args.command}")
  try:
    if args.command == "to-torch":
      read_config(args.checkpoint)  # not a workdir: said before anything else
      to_torch(args.checkpoint, args.out, args.full, args.hf_llama, args.step)
    else:
      from_torch(args.out, args.size, args.variant, args.stage, args.hawk, args.llama_hf,
                 args.vision_hf, args.eva_vit_lavis, args.qformer_hf, args.blip2_lavis,
                 args.seed, args.step)
  except (ConversionError, UnsafeCheckpointError, WorkdirError, ValueError, OSError) as e:
    print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
