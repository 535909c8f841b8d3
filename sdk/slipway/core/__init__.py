"""Core: config schema and presets, errors, artifact metadata, datasets, the model zoo, logs, image names.

The bottom layer: imports nothing else from slipway; everything else may import it.
"""
