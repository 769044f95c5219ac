"""The four KD-MRI architectures in plain PyTorch, with the authors' state_dict key names.

Used to check the converter (`kdmri_jax.convert`) and to time PyTorch against JAX on identical weights.
Written from the paper and from reading the authors' code (Bala93/KD-MRI), not copied from it:

| name           | class   | state_dict keys                              |
|----------------|---------|----------------------------------------------|
| `teacher`      | DCCNN   | `cascade{1..5}.conv{1..5}.{weight,bias}`     |
| `student`      | DCCNN   | `cascade{1..5}.conv{1..3}.{weight,bias}`     |
| `vdsr_teacher` | VDSR    | `conv{1..11}.{weight,bias}`                  |
| `vdsr_student` | VDSR    | `conv{1..7}.{weight,bias}`                   |

Unlike the authors' code, the mask is a forward argument (not layer state) and data consistency uses
`torch.fft` (orthonormal, unshifted) instead of the removed `torch.rfft`/`torch.ifft`; the arithmetic is the
same: k = m·k0 + (1−m)·FFT2(x), x_dc = Re(IFFT2(k)). Everything is float32/complex64 (the authors' DC
casts to float64; outputs differ by ~1e-7) and runs under `torch.inference_mode()` and `torch.compile`
(inductor fuses the convolutions' epilogues and the real-valued DC select; the FFTs stay library calls,
hence its "no code generation for complex operators" warning).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PRESETS: dict[str, dict[str, Any]] = {
    "teacher": dict(kind="dccnn", num_cascades=5, num_convs=5, features=32),
    "student": dict(kind="dccnn", num_cascades=5, num_convs=3, features=32),
    "vdsr_teacher": dict(kind="vdsr", num_layers=11, features=64),
    "vdsr_student": dict(kind="vdsr", num_layers=7, features=64),
}


def data_consistency(image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """DC step: image (B, 1, H, W) real, kspace (B, H, W) complex, mask (H, W) or (B, H, W) 0/1.

  Returns Re(IFFT2(m·k0 + (1−m)·FFT2(x))) as (B, 1, H, W), orthonormal unshifted FFTs.
  """
  # In float32 whatever the CNN computed in (cuFFT has no bfloat16 transform; JAX's DC is float32 too).
  predicted = torch.fft.fft2(image[:, 0].float(), norm="ortho")
  # A select on the real/imag view rather than m·k0 + (1−m)·k: exact at sampled points, and real-valued,
  # which torch.compile's inductor can fuse (it has no code generation for complex operators).
  merged = torch.where((mask > 0)[..., None], torch.view_as_real(kspace), torch.view_as_real(predicted))
  return torch.fft.ifft2(torch.view_as_complex(merged), norm="ortho").real.unsqueeze(1)


class ConvStack(nn.Module):
  """conv3x3 in→F, (n−2) × F→F, F→out; ReLU after all but the last. Children are `conv1`..`conv{n}`."""

  def __init__(self, num_convs: int, features: int, channels: int = 1):
    super().__init__()
    for layer in range(num_convs):
      in_ch = channels if layer == 0 else features
      out_ch = channels if layer == num_convs - 1 else features
      self.add_module(f"conv{layer + 1}", nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))

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

  def __init__(self, num_cascades: int = 5, num_convs: int = 5, features: int = 32):
    super().__init__()
    for c in range(num_cascades):
      self.add_module(f"cascade{c + 1}", ConvStack(num_convs, features))

  def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor
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
  """VDSR: x + net(x) with `conv1`..`conv{n}` (1→F, (n−2) × F→F, F→1), ReLU after all but the last."""

  def __init__(self, num_layers: int = 11, features: int = 64):
    super().__init__(num_layers, features)

  def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """image (B, 1, H, W) low-resolution; returns (image (B, 1, H, W), post-ReLU hidden maps)."""
    residual, hidden = super().forward(image)
    return image + residual, hidden


def build(model_name: str) -> nn.Module:
  """A fresh PyTorch model for a `kdmri_jax.models.PRESETS` name, in eval mode."""
  if model_name not in PRESETS:
    raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(PRESETS)}.")
  kwargs = dict(PRESETS[model_name])
  kind = kwargs.pop("kind")
  model = DCCNN(**kwargs) if kind == "dccnn" else VDSR(**kwargs)
  return model.eval()


def is_reconstruction(model_name: str) -> bool:
  return PRESETS[model_name]["kind"] == "dccnn"


def jax_to_torch_state_dict(model_name: str, params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
  """kdmri_jax Flax params -> the authors' state_dict (HWIO kernels -> OIHW weights), float32 CPU.

  The inverse of `kdmri_jax.convert.torch_state_dict_to_params`; load with `build(name).load_state_dict`.
  """
  from kdmri_jax.convert import expected_shapes

  if model_name not in PRESETS:
    raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(PRESETS)}.")
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
