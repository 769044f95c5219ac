"""Where the models keep each convolution's parameters, and the order their forward pass uses them.

Both models are stacks of 3×3 convolutions with ReLU after all but the last conv of a stack:

  DC-CNN  a stack per cascade, each followed by data consistency  params['cascade_{c}']['conv_{j}']
  VDSR    one stack whose output is added to the input            params['conv_{j}']

with {'kernel' (3, 3, in, out) HWIO, 'bias' (out,)} at each path; the authors' PyTorch code names
the same modules `cascade{c+1}.conv{j+1}` and `conv{j+1}`. The Flax modules and the PyTorch
reference name their submodules with the functions below; the models' one forward pass
(`models.structure.forward`: training, fast CPU inference, ONNX), the converter and the FLOP count
read the layout from `conv_stacks`, so the naming rule is written here only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from kdmri_jax.errors import InputError

KERNEL_SIZE = (3, 3)


def cascade_name(cascade: int) -> str:
  """The Flax name of DC-CNN cascade `cascade` (0-based)."""
  return f"cascade_{cascade}"


def conv_name(index: int) -> str:
  """The Flax name of conv `index` (0-based) of a stack."""
  return f"conv_{index}"


def torch_cascade_name(cascade: int) -> str:
  """The authors' PyTorch name of cascade `cascade` (0-based): numbered from 1."""
  return f"cascade{cascade + 1}"


def torch_conv_name(index: int) -> str:
  """The authors' PyTorch name of conv `index` (0-based) of a stack: numbered from 1."""
  return f"conv{index + 1}"


@dataclasses.dataclass(frozen=True)
class Conv:
  """One 3×3 convolution of a model: where its parameters are and what it maps."""

  cascade: int | None  # the DC-CNN cascade it belongs to; None for VDSR's single stack
  index: int  # position in its stack, 0-based
  in_features: int
  out_features: int
  relu: bool  # a ReLU follows it (every conv of a stack but the last)

  @property
  def path(self) -> tuple[str, ...]:
    """Its module path in the parameter tree, e.g. ('cascade_0', 'conv_2')."""
    stack = () if self.cascade is None else (cascade_name(self.cascade),)
    return stack + (conv_name(self.index),)

  @property
  def torch_prefix(self) -> str:
    """Its module in the authors' state_dict, e.g. 'cascade1.conv3' (+ '.weight', '.bias')."""
    stack = "" if self.cascade is None else torch_cascade_name(self.cascade) + "."
    return stack + torch_conv_name(self.index)

  @property
  def kernel_shape(self) -> tuple[int, int, int, int]:
    """The Flax kernel's shape (HWIO)."""
    return (*KERNEL_SIZE, self.in_features, self.out_features)


def _stack(cascade: int | None, num_convs: int, features: int, channels: int) -> tuple[Conv, ...]:
  """channels→F, (n−2) × F→F, F→channels, ReLU after all but the last."""
  widths = [channels] + [features] * (num_convs - 1) + [channels]
  return tuple(
    Conv(cascade, j, widths[j], widths[j + 1], relu=j < num_convs - 1) for j in range(num_convs)
  )


def conv_stacks(model: Any) -> tuple[tuple[Conv, ...], ...]:
  """The model's conv stacks in forward order: one per DC-CNN cascade it runs (`first_cascade` …
  `num_cascades`−1, numbered absolutely), or VDSR's one stack."""
  from kdmri_jax.models.dccnn import DCCNN  # here: dccnn imports this module

  if isinstance(model, DCCNN):
    channels = 2 if model.complex_images else 1
    return tuple(_stack(c, model.num_convs, model.features, channels) for c in cascades(model))
  return (_stack(None, model.num_layers, model.features, 1),)


def cascades(model: Any) -> range:
  """The DC-CNN cascades `model` runs: first_cascade … num_cascades−1."""
  first, count = model.first_cascade, model.num_cascades
  if not 0 <= first < count:
    raise InputError(
      f"DCCNN first_cascade={first} must be in 0 … num_cascades−1 = {count - 1}; "
      f"set first_cascade below num_cascades."
    )
  return range(first, count)


def conv_params(params: Mapping[str, Any], conv: Conv) -> Mapping[str, Any]:
  """{'kernel', 'bias'} of `conv` in a parameter tree."""
  node = params
  for name in conv.path:
    node = node[name]
  return node
