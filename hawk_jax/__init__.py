"""hawk-jax: HAWK video-anomaly understanding in JAX/Flax.

The notebook API is the inference engine (hawk_jax/infer/engine.py):

  from hawk_jax import Engine
  engine = Engine.from_workdir("runs/stage2")        # or Engine.from_pretrained("hawk-folder")
  engine.describe("clip.mp4")

`Engine` and the names beside it are imported on first use, so `import hawk_jax` (and every
submodule import, which imports this package first) stays cheap and does not start JAX.
"""
import importlib

__version__ = "0.1.0"

# The public names the package root re-exports lazily: name -> the module defining it.
_LAZY = {
    "Engine": "hawk_jax.infer.engine",
    "GenerationOptions": "hawk_jax.infer.engine",
    "Video": "hawk_jax.infer.engine",
    "Chat": "hawk_jax.infer.engine",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
  module = _LAZY.get(name)
  if module is None:
    # AttributeError (not ImportError): `from hawk_jax import checkpoint` asks for the
    # attribute first and imports the submodule when it is missing.
    raise AttributeError(f"module 'hawk_jax' has no attribute {name!r}")
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
