"""The pipeline's stages, in their order: one list, read by configs/default.py and
kdmri_jax.pipeline.

A light module (no JAX), so a config file can name the stages without starting JAX.
"""

STAGES = ("teacher", "student", "feature", "kd", "evaluate", "report")
TRAINED_STAGES = ("teacher", "student", "feature", "kd")
