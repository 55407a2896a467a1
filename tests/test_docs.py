"""The project documents itself: docs/config.md names exactly the config fields there are, every
`python -m` command in the README, docs and launch scripts exists, and nothing cites a file
outside the repository."""
from __future__ import annotations

import dataclasses
import importlib.util
import re

import pytest

from configs import stage1_pretrain, stage2_finetune, stage3_test
from hawk_jax.models.model_config import HawkConfig
from tests.support import ROOT

TEXT_FILES = ("*.md", "*.py", "*.sh", "*.toml", "*.ini", "*.cfg")


def _config_fields() -> set[str]:
  fields = set()

  def walk(d, prefix):
    for k, v in d.items():
      if k == "model":
        continue
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      else:
        fields.add(prefix + k)
  for stage in (stage1_pretrain, stage2_finetune, stage3_test):
    for arg in ("size=tiny", "size=hawk7b,variant=released"):
      walk(stage.get_config(arg).to_dict(), "")

  def walk_model(dc, prefix):
    for f in dataclasses.fields(dc):
      value = getattr(dc, f.name)
      if dataclasses.is_dataclass(value):
        walk_model(value, f"{prefix}{f.name}.")
      else:
        fields.add(prefix + f.name)
  walk_model(HawkConfig(), "model.")
  return fields


def test_config_reference_names_every_field():
  text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
  documented = re.findall(r"^\| `([\w.]+)` \|", text, flags=re.M)
  assert len(documented) == len(set(documented)), "a field is documented twice"
  fields = _config_fields()
  assert {"missing": sorted(fields - set(documented)),
          "not a field": sorted(set(documented) - fields)} == {"missing": [], "not a field": []}


def _text_files():
  for pattern in TEXT_FILES:
    for path in ROOT.rglob(pattern):
      rel = path.relative_to(ROOT)
      if rel.parts[0].startswith(".") or rel.parts[0] in ("build", "dist") or any(
          p.endswith(".egg-info") or p == "__pycache__" for p in rel.parts):
        continue
      yield path


def test_nothing_cites_a_file_outside_the_repository():
  # Spelled apart so that this file does not cite them itself.
  outside = ("DESIGN" + ".md", "../" + "shared/")
  citing = [str(p.relative_to(ROOT)) for p in _text_files()
            if any(s in p.read_text(encoding="utf-8", errors="replace") for s in outside)]
  assert citing == []


def _commands() -> dict[str, set[str]]:
  """{module: files} of every `python -m module` in the README, docs and launch scripts."""
  found: dict[str, set[str]] = {}
  paths = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md")),
           *sorted((ROOT / "launch").glob("*.sh"))]
  for path in paths:
    for module in re.findall(r"(?:python3?|\$PY|\"\$PY\"|\$\{PY\}) -m ([\w.]+)",
                             path.read_text(encoding="utf-8")):
      if module.split(".")[0] in ("hawk_jax", "data_pipelines"):
        found.setdefault(module, set()).add(path.name)
  return found


def test_documented_commands_exist():
  commands = _commands()
  assert "hawk_jax.train" in commands and "hawk_jax.eval" in commands
  missing = {}
  for module, where in commands.items():
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations is not None:
      spec = importlib.util.find_spec(module + ".__main__")  # a package runs its __main__
    if spec is None:
      missing[module] = sorted(where)
  assert missing == {}


@pytest.mark.parametrize("doc", ["architecture.md", "model.md", "config.md"])
def test_docs_the_code_cites_exist(doc):
  assert (ROOT / "docs" / doc).is_file()
