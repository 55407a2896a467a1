"""Planning a pod before booking it: the train and generation steps compiled ahead of time for
a mesh (`estimate`), its command line (`cli`, `python -m hawk_jax.plan`), and the parameter
summary from shapes alone (`param_summary`)."""
