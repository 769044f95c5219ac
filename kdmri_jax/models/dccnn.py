"""DC-CNN (Schlemper et al. 2018): cascades of a small CNN, each followed by data consistency.

KD-MRI's teacher is D5C5 (5 cascades × 5 convs, 141,765 parameters) and its student D5C3 (5 × 3,
49,285). Each cascade maps the previous cascade's output (the first: the zero-filled image) through
conv3x3 1→F, (n−2) × conv3x3 F→F, conv3x3 F→1 with ReLU after all but the last, and applies data
consistency to the CNN's output. The KD-MRI reference code feeds the last conv straight to DC;
Schlemper's original adds the cascade's input first (`residual=True`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdmri_jax import fft
from kdmri_jax.models import layout
from kdmri_jax.models.layers import conv3x3

# features[cascade][layer]: (B, H, W, F) post-ReLU output of conv `layer` (0-based) in `cascade`.
Features = tuple[tuple[jnp.ndarray, ...], ...]


class Cascade(nn.Module):
  """One CNN block: returns (output image, post-ReLU feature maps of every hidden conv)."""

  num_convs: int
  features: int
  channels: int = 1
  residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
    hidden = []
    h = x
    in_features = self.channels
    for layer in range(self.num_convs - 1):
      h = nn.relu(conv3x3(self.features, in_features, layout.conv_name(layer), self.dtype)(h))
      hidden.append(h)
      in_features = self.features
    last = conv3x3(self.channels, in_features, layout.conv_name(self.num_convs - 1), self.dtype)
    out = last(h).astype(x.dtype)
    return (x + out if self.residual else out), tuple(hidden)


class DataConsistency(nn.Module):
  """DC step; hard replacement, or the noisy variant with a fixed or learnable λ."""

  noise_lambda: float | None = None
  learn_lambda: bool = False
  complex_images: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, kspace: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    lam = self.noise_lambda
    if self.learn_lambda:
      start = 1.0 if lam is None else lam
      lam = self.param("noise_lambda", lambda _: jnp.asarray(start, jnp.float32))
    if self.complex_images:
      out = fft.data_consistency(fft.to_complex(x), kspace, mask, lam, keep_complex=True)
      return fft.to_channels(out).astype(x.dtype)
    return fft.data_consistency(x[..., 0], kspace, mask, lam)[..., None]


class DCCNN(nn.Module):
  """Cascaded CNN with data consistency.

  Call with the zero-filled image (B, H, W) real — or (B, H, W) complex when `complex_images` — the
  measured k-space (B, H, W) complex and the mask (H, W) or (B, H, W). Returns the reconstruction in
  the input's layout and `Features`, every cascade's hidden feature maps, indexable as
  `features[cascade][layer]`; unused ones cost nothing under `jit`.
  """

  num_cascades: int = 5
  num_convs: int = 5
  features: int = 32
  residual: bool = False
  noise_lambda: float | None = None
  learn_lambda: bool = False
  complex_images: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, image: jnp.ndarray, kspace: jnp.ndarray, mask: jnp.ndarray
  ) -> tuple[jnp.ndarray, Features]:
    channels = 2 if self.complex_images else 1
    x = fft.to_channels(image) if self.complex_images else image[..., None]
    x = x.astype(jnp.float32)
    features = []
    for c in range(self.num_cascades):
      x, hidden = Cascade(
        self.num_convs,
        self.features,
        channels,
        self.residual,
        self.dtype,
        name=layout.cascade_name(c),
      )(x)
      x = DataConsistency(
        self.noise_lambda, self.learn_lambda, self.complex_images, name=f"dc_{c}"
      )(x, kspace, mask)
      features.append(hidden)
    out = fft.to_complex(x) if self.complex_images else x[..., 0]
    return out, tuple(features)
