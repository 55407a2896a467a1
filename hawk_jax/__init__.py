"""hawk-jax: HAWK video-anomaly understanding in JAX/Flax."""
__version__ = "0.1.0"
