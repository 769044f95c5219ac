"""The Flax models' layers: convolution with PyTorch's default initialisation and a CPU-friendly
weight gradient, and `FlaxOps`, the backend on which the Flax modules run `structure.forward`.

XLA:CPU (jaxlib 0.10) runs a 2-D convolution through YNNPACK only when the larger of its input and
output feature sizes exceeds 16 (`IsConvolutionOpSupportedByYnn`); otherwise it falls back to a slow
generic kernel. XLA writes a layer's weight gradient as a convolution whose feature sizes are the
batch and the layer's *output* channels, so the gradient of every 32→1 layer (batch ≤ 16) misses
YNNPACK and costs ~30× more than it has to (experiments/results/speed.md).
`conv_general_dilated` below is `lax.conv_general_dilated` with a custom VJP that, on CPU, computes
that gradient as the equivalent convolution with the operands' roles swapped (output feature = the
layer's input channels), which YNNPACK takes. GPUs and TPUs keep JAX's own gradient
(`lax.platform_dependent`). Values equal JAX's gradient to rounding. It is a workaround for this
XLA:CPU: once a jaxlib takes those gradients itself, tests/test_conv_layers.py skips its YNNPACK
check, and this VJP can go.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from kdmri_jax import fft
from kdmri_jax.models import layout

NHWC = ("NHWC", "HWIO", "NHWC")
# The same layout as Flax passes it (a ConvDimensionNumbers of axis indices), built once.
_NHWC_NUMBERS = lax.conv_dimension_numbers((1,) * 4, (1,) * 4, NHWC)
# Batches up to this size get one weight-gradient conv per image (the sum is unrolled in the HLO):
# YNNPACK runs the batch-folded conv ~1.5× slower at batch 4.
MAX_UNROLLED_BATCH = 16


def torch_uniform(fan_in: int):
  """U(−1/√fan_in, 1/√fan_in): PyTorch's conv weight (kaiming_uniform, a=√5) and bias init."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _conv(x, kernel, padding, precision):
  return lax.conv_general_dilated(
    x, kernel, (1, 1), padding, dimension_numbers=NHWC, precision=precision
  )


def weight_gradient_swapped(x: jnp.ndarray, g: jnp.ndarray, padding, kernel_hw, precision=None):
  """∂L/∂kernel (HWIO) of `_conv(x, kernel, padding)` given g = ∂L/∂output, as a forward-style conv.

  The convolution sums over the batch with g as the image (batch = output channels) and x as the
  filter (output feature = input channels); its spatial output is the kernel flipped, hence the
  reverse. With kernel size k and padding (lo, hi), g is padded by (k−1−lo, k−1−hi).
  """
  pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_hw, padding)]
  flipped = lax.conv_general_dilated(
    g, x, (1, 1), pads, precision=precision, dimension_numbers=("CHWN", "IHWO", "NHWC")
  )  # Cout,kh,kw,Cin
  return jnp.transpose(flipped[:, ::-1, ::-1, :], (1, 2, 3, 0))


def _use_swapped(x_shape, g_shape) -> bool:
  """Swap when the layer narrows (Cin > Cout): the gradient conv's output is the wider."""
  return x_shape[-1] > g_shape[-1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_cpu(x, kernel, padding, precision):
  return _conv(x, kernel, padding, precision)


def _conv_cpu_fwd(x, kernel, padding, precision):
  return _conv(x, kernel, padding, precision), (x, kernel)


def _conv_cpu_bwd(padding, precision, residuals, g):
  """JAX's input gradient; the weight gradient per image (small batches) in YNNPACK's form."""
  x, kernel = residuals
  input_grad = jax.linear_transpose(lambda x: _conv(x, kernel, padding, precision), x)(g)[0]
  if x.shape[0] <= MAX_UNROLLED_BATCH:
    weight = sum(
      _weight_gradient(x[i : i + 1], g[i : i + 1], kernel, padding, precision)
      for i in range(x.shape[0])
    )
  else:
    weight = _weight_gradient(x, g, kernel, padding, precision)
  return input_grad, weight.astype(kernel.dtype)


def _weight_gradient(x, g, kernel, padding, precision):
  """∂L/∂kernel: swapped for a narrowing layer, JAX's own (the conv's transpose) otherwise."""
  if _use_swapped(x.shape, g.shape):
    return weight_gradient_swapped(x, g, padding, kernel.shape[:2], precision)
  return jax.linear_transpose(lambda k: _conv(x, k, padding, precision), kernel)(g)[0]


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  **kwargs: Any,
):
  """`lax.conv_general_dilated`; stride-1 NHWC/HWIO convs get the CPU weight gradient above."""
  simple = (
    tuple(window_strides) == (1, 1)
    and not kwargs
    and feature_group_count == 1
    and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
    and _is_nhwc(dimension_numbers)
    and not isinstance(padding, str)
  )
  if not simple:
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      precision=precision,
      **kwargs,
    )
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  return lax.platform_dependent(
    lhs,
    rhs,
    cpu=lambda x, k: _conv_cpu(x, k, padding, precision),
    default=lambda x, k: _conv(x, k, padding, precision),
  )


def _is_nhwc(dimension_numbers: Any) -> bool:
  """NHWC/HWIO/NHWC as strings (`NHWC`) or as Flax's ConvDimensionNumbers."""
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == _NHWC_NUMBERS
  return dimension_numbers is not None and tuple(dimension_numbers) == NHWC


def conv3x3(features: int, in_features: int, name: str, dtype: Any = jnp.float32) -> nn.Conv:
  """3×3 convolution, zero padding 1, with bias; NHWC activations, HWIO kernel."""
  fan_in = 9 * in_features
  return nn.Conv(
    features,
    (3, 3),
    padding=1,
    use_bias=True,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=torch_uniform(fan_in),
    bias_init=torch_uniform(fan_in),
    conv_general_dilated=conv_general_dilated,
    name=name,
  )


def declare_convs(stack: Sequence[layout.Conv], dtype: Any) -> tuple[nn.Conv, ...]:
  """The `conv3x3` of every conv of a `layout` stack, named `conv_{j}`; call from a `setup`."""
  return tuple(
    conv3x3(conv.out_features, conv.in_features, layout.conv_name(conv.index), dtype)
    for conv in stack
  )


class FlaxOps:
  """`structure.forward` on the Flax modules' convs (`conv3x3`, computing in the model's dtype).

  Images between stacks are float32 (B, H, W) — complex64 with `complex_images`, whose activations
  are 2 real/imaginary channels. Data consistency is `fft.data_consistency` with cascade c's
  `noise_lambda(c)` (None: hard replacement).
  """

  def __init__(
    self,
    convs: Mapping[tuple[str, ...], nn.Conv],
    complex_images: bool = False,
    noise_lambda: Callable[[int], Any] = lambda cascade: None,
  ):
    self.convs, self.complex_images, self.noise_lambda = convs, complex_images, noise_lambda

  def channels(self, image: jnp.ndarray) -> jnp.ndarray:
    x = fft.to_channels(image) if self.complex_images else image[..., None]
    return x.astype(jnp.float32)

  def image(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.astype(jnp.float32)
    return fft.to_complex(x) if self.complex_images else x[..., 0]

  def conv(self, conv: layout.Conv, x: jnp.ndarray) -> jnp.ndarray:
    return self.convs[conv.path](x)

  relu = staticmethod(nn.relu)

  @staticmethod
  def add(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """x + y in x's dtype (the float32 input plus the stack's output)."""
    return x + y.astype(x.dtype)

  def data_consistency(self, kspace: jnp.ndarray, mask: jnp.ndarray):
    def consistency(image: jnp.ndarray, cascade: int) -> jnp.ndarray:
      return fft.data_consistency(
        image, kspace, mask, self.noise_lambda(cascade), keep_complex=self.complex_images
      )

    return consistency
