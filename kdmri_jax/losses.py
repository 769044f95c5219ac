"""Reconstruction and imitation losses (pure functions of arrays; means over every element).

The feature-distillation losses (attention transfer and the methods the paper compares) are in
`kdmri_jax.feature_losses`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l1(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """L1 = mean |prediction − target| (the paper's reconstruction loss)."""
  return jnp.mean(jnp.abs(prediction - target))


def l2(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """L2 = mean (prediction − target)² (the MSE used to pick the best checkpoint)."""
  return jnp.mean(jnp.square(prediction - target))


RECONSTRUCTION_LOSSES = {"l1": l1, "l2": l2}


def imitation(student: jnp.ndarray, teacher: jnp.ndarray, target: jnp.ndarray, alpha: float = 0.5,
              loss: str = "l1") -> jnp.ndarray:
  """KD-MRI's KD stage: L = α·L(x_S, target) + (1 − α)·L(x_S, x_T), with L = L1 by default.

  α = 1 is the student alone; α = 0 imitates the teacher only. The teacher output is treated as a
  constant (no gradient flows into the teacher).
  """
  fn = RECONSTRUCTION_LOSSES[loss]
  return alpha * fn(student, target) + (1.0 - alpha) * fn(student, jax.lax.stop_gradient(teacher))
