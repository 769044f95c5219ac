"""Scripts that regenerate kdmri_jax's recorded results; `experiments.pytorch_reference` is importable."""
