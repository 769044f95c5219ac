"""The four KD-MRI architectures in plain PyTorch, with the authors' state_dict key names.

Needs torch (`pip install ".[torch]"`), unlike the rest of the package. Used to check the
converter (`kdmri_jax.convert`) and to time PyTorch against JAX on identical weights
(`kdmri_jax.benchmark`). Written from the paper and from reading the authors' code (Bala93/KD-MRI),
not copied from it; the layers are those of `kdmri_jax.models.layout`, under the authors' names:

| name           | class   | state_dict keys                              |
|----------------|---------|----------------------------------------------|
| `teacher`      | DCCNN   | `cascade{1..5}.conv{1..5}.{weight,bias}`     |
| `student`      | DCCNN   | `cascade{1..5}.conv{1..3}.{weight,bias}`     |
| `vdsr_teacher` | VDSR    | `conv{1..11}.{weight,bias}`                  |
| `vdsr_student` | VDSR    | `conv{1..7}.{weight,bias}`                   |

Unlike the authors' code, the mask is a forward argument (not layer state) and data consistency uses
`torch.fft` (orthonormal, unshifted) instead of the removed `torch.rfft`/`torch.ifft`; the
arithmetic is the same: k = m·k0 + (1−m)·FFT2(x), x_dc = Re(IFFT2(k)). Everything is
float32/complex64 (the authors' DC casts to float64; outputs differ by ~1e-7) and runs under
`torch.inference_mode()` and `torch.compile` (inductor fuses the convolutions' epilogues and the
real-valued DC select; the FFTs stay library calls, hence its "no code generation for complex
operators" warning).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kdmri_jax import models
from kdmri_jax.models import layout


def data_consistency(image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """DC step: image (B, 1, H, W) real, kspace (B, H, W) complex, mask (H, W) or (B, H, W) 0/1.

  Returns Re(IFFT2(m·k0 + (1−m)·FFT2(x))) as (B, 1, H, W), orthonormal unshifted FFTs.
  """
  # In float32 whatever the CNN computed in (cuFFT has no bfloat16 transform; JAX's DC is float32
  # too).
  predicted = torch.fft.fft2(image[:, 0].float(), norm="ortho")
  # A select on the real/imag view rather than m·k0 + (1−m)·k: exact at sampled points, and
  # real-valued, which torch.compile's inductor can fuse (it has no code generation for complex
  # operators).
  sampled = (mask > 0)[..., None]
  merged = torch.where(sampled, torch.view_as_real(kspace), torch.view_as_real(predicted))
  return torch.fft.ifft2(torch.view_as_complex(merged), norm="ortho").real.unsqueeze(1)


class ConvStack(nn.Module):
  """The convs of one `layout` stack as children `conv1`..`conv{n}`; ReLU after all but the last."""

  def __init__(self, convs: Sequence[layout.Conv]):
    super().__init__()
    for conv in convs:
      self.add_module(
        layout.torch_conv_name(conv.index),
        nn.Conv2d(conv.in_features, conv.out_features, kernel_size=3, padding=1),
      )

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Returns (last conv output, post-ReLU maps of the hidden convs)."""
    hidden = []
    convs = list(self.children())
    for conv in convs[:-1]:
      x = F.relu(conv(x))
      hidden.append(x)
    return convs[-1](x), hidden


class DCCNN(nn.Module):
  """DC-CNN as in KD-MRI: `cascade{c}` stacks, the last conv fed straight to data consistency."""

  def __init__(self, stacks: Sequence[Sequence[layout.Conv]]):
    super().__init__()
    for c, stack in enumerate(stacks):
      self.add_module(layout.torch_cascade_name(c), ConvStack(stack))

  def forward(
    self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor
  ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """image (B, 1, H, W) zero-filled, kspace (B, H, W) complex64, mask (H, W).

    Returns (reconstruction (B, 1, H, W), features[cascade][layer] (B, F, H, W) post-ReLU).
    """
    features = []
    x = image
    for cascade in self.children():
      x, hidden = cascade(x)
      x = data_consistency(x, kspace, mask)
      features.append(hidden)
    return x, features


class VDSR(ConvStack):
  """VDSR: x + net(x) with `conv1`..`conv{n}` (1→F, (n−2) × F→F, F→1), ReLU after all but the
  last."""

  def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """image (B, 1, H, W) low-resolution; returns (image (B, 1, H, W), post-ReLU hidden maps)."""
    residual, hidden = super().forward(image)
    return image + residual, hidden


def _flax_model(model_name: str) -> Any:
  if model_name not in models.PRESETS:
    raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(models.PRESETS)}.")
  return models.build_model(model_name)


def build(model_name: str) -> nn.Module:
  """A fresh PyTorch model for a `kdmri_jax.models.PRESETS` name, in eval mode."""
  flax_model = _flax_model(model_name)
  stacks = layout.conv_stacks(flax_model)
  model = DCCNN(stacks) if models.is_reconstruction(flax_model) else VDSR(stacks[0])
  return model.eval()


def is_reconstruction(model_name: str) -> bool:
  return models.is_reconstruction(_flax_model(model_name))


def jax_to_torch_state_dict(model_name: str, params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
  """kdmri_jax Flax params -> the authors' state_dict (HWIO kernels -> OIHW weights), float32 CPU.

  The inverse of `kdmri_jax.convert.torch_state_dict_to_params`; load with
  `build(name).load_state_dict`.
  """
  from kdmri_jax.convert import expected_shapes

  _flax_model(model_name)
  state = {}
  for key, (names, _) in expected_shapes(model_name).items():
    value = params
    for name in names:
      value = value[name]
    array = np.array(value, dtype=np.float32)  # a writable copy: torch shares its memory
    if names[-1] == "kernel":
      array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    state[key] = torch.from_numpy(np.ascontiguousarray(array))
  return state
