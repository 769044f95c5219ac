"""Inference: a model's reconstruction without its feature maps, the one path every caller uses.

  reconstruct(model, params, batch)     the image (B, H, W) float32 of a batch dict
  make_predict(model, mesh)             `reconstruct` jitted on a device mesh (training, evaluation)
  predictor(model, params, batch_size)  `reconstruct` jitted, over volumes in equal batches (valid)
  image_function(model, params, fast)   positional inputs -> the model's output, parameters baked in
                                        (export, benchmark)

`fast=True` runs the models' one forward pass, `models.structure.forward`, on `JaxOps`: convs that
XLA:CPU runs faster and a split data consistency, for the models `has_fast_path` accepts (equal to
the Flax model to float32 rounding, tests/test_export.py); other variants run the Flax model, which
is the same forward pass on the training backend.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kdmri_jax import fft, models, sharding
from kdmri_jax.models import layout, structure

# --- the model's image ------------------------------------------------------------------------


def _input_keys(model: Any) -> tuple[str, ...]:
  """The batch keys of the model's positional inputs: image (and k-space, mask for a DC-CNN)."""
  return ("input", "kspace", "mask") if models.is_reconstruction(model) else ("input",)


def model_inputs(model: Any, batch: Mapping[str, Any]) -> tuple[Any, ...]:
  """The model's positional inputs from a batch dict."""
  return tuple(batch[key] for key in _input_keys(model))


def as_batch(model: Any, inputs: Sequence[Any]) -> dict[str, Any]:
  """The batch dict of positional inputs (the inverse of `model_inputs`)."""
  return dict(zip(_input_keys(model), inputs))


def as_image(output: jax.Array) -> jax.Array:
  """A model's output as a float32 image: the magnitude of a complex reconstruction."""
  return jnp.abs(output) if jnp.iscomplexobj(output) else output.astype(jnp.float32)


def reconstruct(model: Any, params: Any, batch: Mapping[str, Any]) -> jax.Array:
  """The image (B, H, W) float32 of `model` on a batch dict; XLA drops the unused feature maps."""
  return as_image(models.apply(model, params, batch)[0])


def make_predict(model: Any, mesh: jax.sharding.Mesh) -> Callable[[Any, Mapping], jax.Array]:
  """`predict(params, batch) -> image (B, H, W)` jitted on `mesh`; the output is replicated."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(
    lambda params, batch: reconstruct(model, params, batch),
    in_shardings=(repl, data),
    out_shardings=repl,
  )


def predictor(model: Any, params: Any, batch_size: int) -> Callable[..., np.ndarray]:
  """A function (image (S,H,W)[, kspace, mask]) -> (S,H,W) float32: `reconstruct` batch by batch.

  The last batch of a volume is zero-padded to the batch size, so one compiled program serves every
  batch; a volume of fewer slices runs as one batch of its size. The mask, (H, W), serves every
  slice.
  """
  forward = jax.jit(lambda params, batch: reconstruct(model, params, batch))

  def predict(
    image: np.ndarray, kspace: np.ndarray | None = None, mask: np.ndarray | None = None
  ) -> np.ndarray:
    outputs = []
    size = min(batch_size, image.shape[0])
    for start in range(0, image.shape[0], size):
      stop = min(start + size, image.shape[0])
      batch = as_batch(
        model,
        (
          _pad(image[start:stop], size),
          None if kspace is None else _pad(kspace[start:stop], size),
          mask,
        ),
      )
      outputs.append(np.asarray(forward(params, batch), dtype=np.float32)[: stop - start])
    return np.concatenate(outputs)

  return predict


def _pad(array: np.ndarray, size: int) -> np.ndarray:
  """`array` with zero rows appended up to `size` rows."""
  if array.shape[0] == size:
    return array
  return np.concatenate([array, np.zeros((size - array.shape[0],) + array.shape[1:], array.dtype)])


def image_function(model: Any, params: Any, fast: bool = True) -> Callable[..., jax.Array]:
  """The model's output for positional inputs (feature maps dropped), `params` closed over.

  `fast` runs `structure.forward` on `JaxOps` where `has_fast_path`; otherwise the Flax model.
  """
  if fast and has_fast_path(model):
    return lambda *inputs: structure.forward(JaxOps(params), model, *inputs)[0]
  return lambda *inputs: models.apply(model, params, as_batch(model, inputs))[0]


# --- the fast CPU backend of the models' forward pass -------------------------------------------


def plain_structure(model: Any) -> bool:
  """True for the models the inference backends (`JaxOps`, ONNX) cover: VDSR, and the paper's
  DC-CNN (real images, hard data consistency, no residual)."""
  if not models.is_reconstruction(model):
    return True
  return not (
    model.complex_images or model.residual or model.noise_lambda is not None or model.learn_lambda
  )


def has_fast_path(model: Any) -> bool:
  """True when `structure.forward` on `JaxOps` computes what the model does (float32 only)."""
  return plain_structure(model) and model.dtype == jnp.float32


def _taps(x: jnp.ndarray) -> list[jnp.ndarray]:
  """The 9 zero-padded 3×3 neighbours of every pixel of x (B, H, W, ...), row-major tap order."""
  height, width = x.shape[1], x.shape[2]
  pad = [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 3)
  padded = jnp.pad(x, pad)
  return [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)]


def conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """The models' conv3x3 (zero padding 1, bias; NHWC, HWIO), faster on XLA:CPU for 1 in or 1 out
  channel.

  XLA's convolution runs the 1→F and F→1 layers of the DC-CNN at a few GFLOP/s (as slow as a 32→32
  layer for 1/32 of the work). 1→F is a fused multiply-add over the 9 shifted copies of the image;
  F→1 contracts the channels first (one (H·W, F)×(F, 9) product) and then sums the 9 shifted tap
  planes.
  Same arithmetic as the convolution up to float32 rounding order.
  """
  cin, cout = kernel.shape[2], kernel.shape[3]
  if cin == 1:
    taps = _taps(x[..., 0])
    return bias + sum(tap[..., None] * kernel[i // 3, i % 3, 0] for i, tap in enumerate(taps))
  if cout == 1:
    per_tap = jnp.dot(x, kernel[..., 0].reshape(9, cin).T)  # (B, H, W, 9)
    shifted = _taps(per_tap)
    return (bias + sum(plane[..., i] for i, plane in enumerate(shifted)))[..., None]
  out = jax.lax.conv_general_dilated(
    x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  return out + bias


class JaxOps:
  """`structure.forward`'s ops on JAX arrays with `params` (a Flax parameter tree): NHWC
  activations, `conv3x3`, and hard data consistency split as
  Re(IFFT2(m·k0 + (1−m)·FFT2(x))) = x0 + Re(IFFT2((1−m)·FFT2(x))), x0 = Re(IFFT2(m·k0)) once per
  call."""

  relu = staticmethod(jax.nn.relu)

  def __init__(self, params: Any):
    self.params = params

  def conv(self, conv: layout.Conv, x: jnp.ndarray) -> jnp.ndarray:
    weights = layout.conv_params(self.params, conv)
    return conv3x3(x, weights["kernel"], weights["bias"])

  @staticmethod
  def channels(image):
    return image[..., None].astype(jnp.float32)

  @staticmethod
  def image(x):
    return x[..., 0]

  @staticmethod
  def add(x, y):
    return x + y

  @staticmethod
  def data_consistency(kspace, mask):
    sampled = mask > 0
    measured = fft.ifft2(jnp.where(sampled, kspace, 0)).real
    return lambda x, cascade: measured + fft.ifft2(jnp.where(sampled, 0, fft.fft2(x))).real
