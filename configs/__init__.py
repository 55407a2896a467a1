"""Configs: ml_collections get_config(arg) files, stages x model sizes."""
