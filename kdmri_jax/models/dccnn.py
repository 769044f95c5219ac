"""DC-CNN (Schlemper et al. 2018): cascades of a small CNN, each followed by data consistency.

KD-MRI's teacher is D5C5 (5 cascades × 5 convs, 141,765 parameters) and its student D5C3 (5 × 3,
49,285). Each cascade maps the previous cascade's output (the first: the zero-filled image) through
conv3x3 1→F, (n−2) × conv3x3 F→F, conv3x3 F→1 with ReLU after all but the last, and applies data
consistency to the CNN's output. The KD-MRI reference code feeds the last conv straight to DC;
Schlemper's original adds the cascade's input first (`residual=True`).

The modules here only declare parameters; the forward pass is `models.structure.forward`, the one
every backend (training, fast CPU inference, ONNX) runs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdmri_jax.models import layers, layout, structure

# features[cascade][layer]: (B, H, W, F) post-ReLU output of conv `layer` (0-based) in `cascade`.
Features = tuple[tuple[jnp.ndarray, ...], ...]


class ConvStack(nn.Module):
  """One cascade's convs, `conv_{j}` (parameters only)."""

  stack: tuple[layout.Conv, ...]
  dtype: Any = jnp.float32

  def setup(self):
    self.convs = layers.declare_convs(self.stack, self.dtype)


class NoiseLambda(nn.Module):
  """A cascade's learnable λ of noisy data consistency, `noise_lambda` (parameters only)."""

  start: float

  def setup(self):
    self.value = self.param("noise_lambda", lambda _: jnp.asarray(self.start, jnp.float32))


class DCCNN(nn.Module):
  """Cascaded CNN with data consistency.

  Call with the zero-filled image (B, H, W) real — or (B, H, W) complex when `complex_images` — the
  measured k-space (B, H, W) complex and the mask (H, W) or (B, H, W). Returns the reconstruction in
  the input's layout and `Features`, every cascade's hidden feature maps, indexable as
  `features[cascade][layer]`; unused ones cost nothing under `jit`.

  With `first_cascade` k > 0 the module runs only cascades k … num_cascades−1 (its parameters keep
  their absolute names `cascade_{c}`, `dc_{c}`; `features[c]` is `()` for c < k), and its image
  input is the output of cascade k−1, in the same layout. Cascades [0, k) then [k, N) compute
  the whole model.
  """

  num_cascades: int = 5
  num_convs: int = 5
  features: int = 32
  residual: bool = False
  noise_lambda: float | None = None
  learn_lambda: bool = False
  complex_images: bool = False
  dtype: Any = jnp.float32
  first_cascade: int = 0

  def setup(self):
    self.cascades = tuple(
      ConvStack(stack, self.dtype, name=layout.cascade_name(stack[0].cascade))
      for stack in layout.conv_stacks(self)
    )
    if self.learn_lambda:
      start = 1.0 if self.noise_lambda is None else self.noise_lambda
      self.lambdas = tuple(NoiseLambda(start, name=f"dc_{c}") for c in layout.cascades(self))

  def __call__(
    self, image: jnp.ndarray, kspace: jnp.ndarray, mask: jnp.ndarray
  ) -> tuple[jnp.ndarray, Features]:
    convs = {
      conv.path: module
      for cascade in self.cascades
      for conv, module in zip(cascade.stack, cascade.convs)
    }
    ops = layers.FlaxOps(convs, self.complex_images, self._cascade_lambda)
    return structure.forward(ops, self, image, kspace, mask)

  def _cascade_lambda(self, cascade: int) -> Any:
    """Cascade `cascade`'s λ: the learned one, the fixed `noise_lambda`, or None (hard DC)."""
    if self.learn_lambda:
      return self.lambdas[cascade - self.first_cascade].value
    return self.noise_lambda
