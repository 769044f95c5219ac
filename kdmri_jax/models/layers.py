"""Convolution with PyTorch's default initialisation, so fresh models start where the reference code does."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_uniform(fan_in: int):
  """U(−1/√fan_in, 1/√fan_in): PyTorch's default for conv weights (kaiming_uniform, a=√5) and biases."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv3x3(features: int, in_features: int, name: str, dtype: Any = jnp.float32) -> nn.Conv:
  """3×3 convolution, zero padding 1, with bias; NHWC activations, HWIO kernel."""
  fan_in = 9 * in_features
  return nn.Conv(features, (3, 3), padding=1, use_bias=True, dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=torch_uniform(fan_in), bias_init=torch_uniform(fan_in), name=name)
