"""Offline pre-extraction (decode, motion, TFDS/ArrayRecord) and Grain loaders."""
