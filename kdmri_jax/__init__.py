"""kdmri_jax: KD-MRI (Murugesan et al., MIDL 2020) in JAX/Flax."""

__version__ = "0.1.0"
