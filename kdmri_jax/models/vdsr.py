"""VDSR (Kim et al. 2016) for MRI super-resolution: `x + net(x)` with a plain stack of 3×3 convs.

KD-MRI's teacher has 11 convs (1→64, 9 × 64→64, 64→1; 333,569 parameters), its student 7
(1→64, 5 × 64→64, 64→1; 185,857). Distillation uses teacher layer 6 and student layer 4 (1-based),
i.e. `features[5]` and `features[3]`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdmri_jax.models import layout
from kdmri_jax.models.layers import conv3x3


class VDSR(nn.Module):
  """Call with the low-resolution image (B, H, W); returns (image, post-ReLU maps of every hidden
  conv)."""

  num_layers: int = 11
  features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jnp.ndarray) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
    x = image[..., None].astype(jnp.float32)
    hidden = []
    h = x
    in_features = 1
    for layer in range(self.num_layers - 1):
      h = nn.relu(conv3x3(self.features, in_features, layout.conv_name(layer), self.dtype)(h))
      hidden.append(h)
      in_features = self.features
    residual = conv3x3(1, in_features, layout.conv_name(self.num_layers - 1), self.dtype)(h)
    return (x + residual.astype(jnp.float32))[..., 0], tuple(hidden)
