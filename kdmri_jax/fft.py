"""Orthonormal 2-D FFTs and the DC-CNN data-consistency (DC) step.

Conventions (as in the KD-MRI reference code): images are (..., H, W); k-space is unshifted (the DC
term at index 0); the FFT is orthonormal (`norm="ortho"`), so `ifft2(fft2(x)) == x` and energy is
preserved. Masks are (H, W) or broadcastable to the k-space, 1 at sampled locations and 0 elsewhere.
"""

from __future__ import annotations

import jax.numpy as jnp


def fft2(image: jnp.ndarray) -> jnp.ndarray:
  """Orthonormal, unshifted 2-D FFT over the last two axes."""
  return jnp.fft.fft2(image, norm="ortho")


def ifft2(kspace: jnp.ndarray) -> jnp.ndarray:
  """Orthonormal, unshifted inverse 2-D FFT over the last two axes."""
  return jnp.fft.ifft2(kspace, norm="ortho")


def to_complex(channels: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, 2) real/imaginary channels -> (..., H, W) complex."""
  return channels[..., 0] + 1j * channels[..., 1]


def to_channels(image: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W) complex -> (..., H, W, 2) real/imaginary channels."""
  return jnp.stack([image.real, image.imag], axis=-1)


def consistent_kspace(
  predicted: jnp.ndarray,
  measured: jnp.ndarray,
  mask: jnp.ndarray,
  noise_lambda: jnp.ndarray | float | None = None,
) -> jnp.ndarray:
  """Replaces predicted k-space by the measurement where the mask is set.

  Noise-free (`noise_lambda=None`): k = m·k0 + (1−m)·k_pred, exact at sampled points.
  Noisy (Schlemper et al. 2018): k = (k_pred + λ·k0) / (1 + λ) at sampled points, k_pred elsewhere.
  """
  if noise_lambda is None:
    sampled_value = measured
  else:
    sampled_value = (predicted + noise_lambda * measured) / (1.0 + noise_lambda)
  return jnp.where(mask > 0, sampled_value.astype(predicted.dtype), predicted)


def data_consistency(
  image: jnp.ndarray,
  measured: jnp.ndarray,
  mask: jnp.ndarray,
  noise_lambda: jnp.ndarray | float | None = None,
  keep_complex: bool = False,
) -> jnp.ndarray:
  """The DC layer: x_dc = IFFT2(consistent_kspace(FFT2(x), k0, m)).

  `image` is real (magnitude images, as in the reference code) or complex. The result is the real
  part of the inverse FFT — the reference behaviour — unless `keep_complex`, which returns the
  complex image.
  """
  kspace = consistent_kspace(fft2(image), measured, mask, noise_lambda)
  result = ifft2(kspace)
  return result if keep_complex else result.real.astype(image.real.dtype)
