"""The HAWK web demo (Gradio): `python -m hawk_jax.demo --checkpoint runs/stage2`.

hawk_jax.demo.session holds what the page does (load, describe, chat; no gradio there),
hawk_jax.demo.app the page itself, and __main__ the command line. Importing this package does
not import gradio (an optional dependency: `pip install -e '.[demo]'`).
"""
