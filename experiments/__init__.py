"""Scripts that regenerate kdmri_jax's recorded results, run from the repository root as
`python -m experiments.NAME`; what they share is experiments/common.py."""
