"""The forward pass of the paper's models, written once over a small ops backend.

`forward(ops, model, image, kspace, mask)` reads the conv stacks from `models.layout` and runs them
with ReLU after all but each stack's last conv:

  DC-CNN  per cascade c: x ↦ DC_c(stack_c(x)), or DC_c(x + stack_c(x)) with `residual`
  VDSR    x ↦ x + stack(x)

Three backends run it: `layers.FlaxOps` (the Flax modules' own forward pass: training, evaluation,
every variant), `inference.JaxOps` (convs that XLA:CPU runs faster, float32) and
`onnx_export._OnnxOps` (an ONNX graph). A backend provides:

  channels(image)             an image in the model's layout (B, H, W) -> activations
  image(x)                    activations -> an image in the model's layout
  conv(conv, x)               the `layout.Conv` with its own weights, bias added
  relu(x), add(x, y)
  data_consistency(kspace, mask)
                              -> dc(x, cascade): the DC step after `cascade` on an image x, the
                              measured part computed once per call
"""

from __future__ import annotations

from typing import Any, Sequence

from kdmri_jax.models import layout


def forward(ops: Any, model: Any, image: Any, kspace: Any = None, mask: Any = None):
  """(the model's output, its hidden feature maps) on backend `ops`.

  DC-CNN features are `features[cascade][layer]`, post-ReLU, absolute cascade numbers: a model with
  `first_cascade` k has `()` at cascades 0 … k−1. VDSR's are `features[layer]`.
  """
  stacks = layout.conv_stacks(model)
  if stacks[0][0].cascade is None:  # VDSR's single stack
    x = ops.channels(image)
    out, hidden = _conv_stack(ops, stacks[0], x)
    return ops.image(ops.add(x, out)), hidden
  consistency = ops.data_consistency(kspace, mask)
  features: list[tuple[Any, ...]] = [()] * model.first_cascade
  for stack in stacks:
    x = ops.channels(image)
    out, hidden = _conv_stack(ops, stack, x)
    if model.residual:
      out = ops.add(x, out)
    image = consistency(ops.image(out), stack[0].cascade)
    features.append(hidden)
  return image, tuple(features)


def _conv_stack(ops: Any, stack: Sequence[layout.Conv], x: Any) -> tuple[Any, tuple[Any, ...]]:
  """(the last conv's output, the post-ReLU output of every conv before it)."""
  hidden = []
  for conv in stack:
    x = ops.conv(conv, x)
    if conv.relu:
      x = ops.relu(x)
      hidden.append(x)
  return x, tuple(hidden)
