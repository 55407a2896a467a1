"""The import graph follows the layers of docs/architecture.md: a module imports only from
lower layers (or its own package), library code never imports `configs/` (the command lines
read configs and pass them down), and the project's own modules are imported at the top of a
file -- lazily only where the imported module needs an optional heavy dependency (torch, ...).

The graph is read from the source with `ast`, so the check needs nothing installed."""
from __future__ import annotations

import ast
import pathlib

from tests.support import ROOT

# Lowest first. A package may import from any lower layer and from itself, never from a
# higher layer or from another package of its own layer.
LAYERS = (
    ("ground", ("hawk_jax.text", "hawk_jax.sharding", "hawk_jax.losses", "hawk_jax.checkpoint",
                "hawk_jax.checksums", "hawk_jax.tensor_files", "hawk_jax.flops",
                "hawk_jax.hardware", "hawk_jax.compile_cache", "hawk_jax.stage_config",
                "hawk_jax.distributed", "hawk_jax.console")),
    ("models", ("hawk_jax.models",)),
    ("data", ("data_pipelines",)),
    ("workdir", ("hawk_jax.workdir",)),
    ("train", ("hawk_jax.train",)),
    ("infer", ("hawk_jax.infer",)),
    ("convert", ("hawk_jax.convert",)),
    ("plan", ("hawk_jax.plan",)),
    ("eval", ("hawk_jax.eval", "hawk_jax.evaluate")),
    ("timeline", ("hawk_jax.timeline",)),
    ("bench", ("hawk_jax.bench",)),
    ("demo", ("hawk_jax.demo",)),
)
# Packages that share a layer: neither may import the other.
SAME_LAYER = ({"models", "data"}, {"infer", "convert"})
ROOTS = ("hawk_jax", "data_pipelines", "configs")
# Optional heavy dependencies: a module that needs one at import is imported lazily.
HEAVY = ("torch", "transformers", "apache_beam", "spacy", "gradio")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for root in ROOTS:
    for path in sorted((ROOT / root).rglob("*.py")):
      out[_module_name(path)] = path
  return out


MODULES = _modules()


def _group(module: str) -> str | None:
  for name, prefixes in LAYERS:
    if any(module == p or module.startswith(p + ".") for p in prefixes):
      return name
  if module == "configs" or module.startswith("configs."):
    return "configs"
  if module == "hawk_jax":
    return "ground"
  return None


def _rank(group: str) -> int:
  return [name for name, _ in LAYERS].index(group)


def _imports(path: pathlib.Path):
  """(imported project module, line, at top level) for every import in the file."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  top = set(id(n) for n in tree.body)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
      # `from pkg import mod` imports the module pkg.mod when there is one.
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
               else node.module for a in node.names]
    else:
      continue
    for name in names:
      if name.split(".")[0] in ROOTS:
        yield name, node.lineno, id(node) in top


def _needs_heavy(module: str) -> bool:
  path = MODULES.get(module)
  if path is None:
    return False
  for node in ast.parse(path.read_text(encoding="utf-8")).body:
    if isinstance(node, ast.Import) and any(a.name.split(".")[0] in HEAVY for a in node.names):
      return True
    if (isinstance(node, ast.ImportFrom) and node.module
        and node.module.split(".")[0] in HEAVY):
      return True
  return False


def _is_command_line(module: str) -> bool:
  """Command-line entry points, and the benchmarks, read configs."""
  last = module.rsplit(".", 1)[-1]
  return last in ("cli", "__main__") or _group(module) == "bench"


def _where(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def layer_problems(modules: dict[str, pathlib.Path]) -> list[str]:
  problems = []
  for module, path in modules.items():
    group = _group(module)
    if group == "configs":
      continue
    for name, line, _ in _imports(path):
      target = _group(name)
      where = f"{_where(path)}:{line} imports {name}"
      if target == "configs":
        if not _is_command_line(module):
          problems.append(f"{where}: only command lines read configs/")
        continue
      if target == group:
        continue
      if _rank(target) > _rank(group):
        problems.append(f"{where}: {target} is above {group}")
      elif {target, group} in SAME_LAYER:
        problems.append(f"{where}: {target} and {group} are one layer")
  return problems


def lazy_imports(modules: dict[str, pathlib.Path]) -> list[str]:
  return [f"{_where(path)}:{line} imports {name} inside a function"
          for module, path in modules.items() for name, line, top in _imports(path)
          if not top and not _needs_heavy(name)]


def test_every_module_has_a_layer():
  assert {m: _group(m) for m in MODULES if _group(m) is None} == {}


def test_imports_follow_the_layers():
  assert layer_problems(MODULES) == []


def test_configs_import_only_the_ground_and_the_model_config():
  allowed = {"hawk_jax.models.model_config", "hawk_jax.sharding"}
  bad = [f"{_where(path)} imports {name}" for module, path in MODULES.items()
         if _group(module) == "configs" for name, _, _ in _imports(path)
         if _group(name) != "configs" and name not in allowed]
  assert bad == []


def test_project_modules_are_imported_at_the_top():
  assert lazy_imports(MODULES) == []


def test_the_checks_catch_violations(tmp_path):
  """The checks fail on wrong imports (so they cannot pass vacuously)."""
  upward = tmp_path / "upward.py"
  upward.write_text("from hawk_jax.infer import engine\n", encoding="utf-8")
  lazy = tmp_path / "lazy.py"
  lazy.write_text("def f():\n  from hawk_jax import losses\n", encoding="utf-8")
  heavy = tmp_path / "heavy.py"
  heavy.write_text("def f():\n  from hawk_jax.convert import torch_hawk\n", encoding="utf-8")
  reads_configs = tmp_path / "reads_configs.py"
  reads_configs.write_text("from configs import common\n", encoding="utf-8")
  [problem] = layer_problems({"hawk_jax.train.upward": upward})
  assert problem.endswith("infer is above train")
  [problem] = layer_problems({"hawk_jax.infer.engine2": reads_configs})
  assert problem.endswith("only command lines read configs/")
  assert layer_problems({"hawk_jax.infer.cli": reads_configs}) == []
  assert layer_problems({"hawk_jax.models.upward": upward}) != []
  [problem] = lazy_imports({"hawk_jax.train.lazy": lazy})
  assert problem.endswith("imports hawk_jax.losses inside a function")
  assert lazy_imports({"hawk_jax.infer.heavy": heavy}) == []  # torch_hawk needs torch
