"""VDSR (Kim et al. 2016) for MRI super-resolution: `x + net(x)` with a plain stack of 3×3 convs.

KD-MRI's teacher has 11 convs (1→64, 9 × 64→64, 64→1; 333,569 parameters), its student 7
(1→64, 5 × 64→64, 64→1; 185,857). Distillation uses teacher layer 6 and student layer 4 (1-based),
i.e. `features[5]` and `features[3]`. The module only declares parameters; the forward pass is
`models.structure.forward`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdmri_jax.models import layers, layout, structure


class VDSR(nn.Module):
  """Call with the low-resolution image (B, H, W); returns (image, post-ReLU maps of every hidden
  conv)."""

  num_layers: int = 11
  features: int = 64
  dtype: Any = jnp.float32

  def setup(self):
    (self.stack,) = layout.conv_stacks(self)
    self.convs = layers.declare_convs(self.stack, self.dtype)

  def __call__(self, image: jnp.ndarray) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
    ops = layers.FlaxOps({conv.path: module for conv, module in zip(self.stack, self.convs)})
    return structure.forward(ops, self, image)
