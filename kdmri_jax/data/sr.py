"""MRI super-resolution data (KD-MRI's VDSR experiment): low-resolution inputs made from full-size
targets.

The paper's degradation keeps the central `keep × keep` block of the centred k-space of the target
(256 × 256 targets, keep = 64: a 4× lower resolution in each direction) and zeroes the rest; the
low-resolution input is the magnitude of the inverse FFT, zero-filled back to the target's size, so
the network maps an image to an image of the same size:

  LR = | IFFT2( ifftshift( C_keep · fftshift( FFT2(target) ) ) ) |,   orthonormal FFTs,

with C_keep the 0/1 indicator of rows and columns [N/2 − keep/2, N/2 − keep/2 + keep). Undoing the
shift before the inverse FFT only changes a phase ramp, so the magnitude is the same as the authors'
code, which skips it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdmri_jax.errors import InputError, require

DEFAULT_KEEP = 64  # the paper's: 256×256 targets, 4× lower resolution per axis (config.sr.keep)


def central_window(size: int, keep: int) -> slice:
  """Indices of the central `keep` frequencies of a centred (fftshift-ed) axis of length `size`."""
  start = size // 2 - keep // 2
  return slice(start, start + keep)


def low_resolution(target: np.ndarray, keep: int = DEFAULT_KEEP) -> np.ndarray:
  """The low-resolution image of a target (H, W) or (B, H, W): same shape, float32 (see module
  doc)."""
  target = np.asarray(target)
  require(
    target.ndim in (2, 3),
    f"super-resolution needs a target of shape (H, W) or (B, H, W), got {target.shape}.",
  )
  height, width = target.shape[-2:]
  require(
    isinstance(keep, (int, np.integer)) and 1 <= keep <= min(height, width),
    f"config.sr.keep={keep!r} must be an integer in "
    f"1..{min(height, width)} for {height}×{width} targets.",
  )
  kspace = np.fft.fftshift(np.fft.fft2(target.astype(np.float64), norm="ortho"), axes=(-2, -1))
  truncated = np.zeros_like(kspace)
  rows, cols = central_window(height, keep), central_window(width, keep)
  truncated[..., rows, cols] = kspace[..., rows, cols]
  image = np.fft.ifft2(np.fft.ifftshift(truncated, axes=(-2, -1)), norm="ortho")
  return np.abs(image).astype(np.float32)


def keep_from_config(config: Any) -> int:
  """`config.sr.keep` (configs/default.py: DEFAULT_KEEP)."""
  return int(config.sr.keep)


class SuperResolutionSource:
  """Wraps a source whose examples have 'target': example i -> {'input': LR, 'target'} (float32, (H,
  W)).

  Other attributes (`shape`, `names`, `locate`, `volume_ranges`, ...) are the wrapped source's;
  there is no mask, since super-resolution has no data consistency.
  """

  mask = None

  def __init__(self, target_source: Any, config: Any = None, keep: int | None = None):
    """`keep` if given, else `config.sr.keep`."""
    self.source = target_source
    self.keep = keep_from_config(config) if keep is None else int(keep)
    shape = getattr(target_source, "shape", None)
    if shape is not None and len(shape) == 2:
      require(
        1 <= self.keep <= min(shape),
        f"config.sr.keep={self.keep} must be in 1..{min(shape)} for {shape[0]}×{shape[1]} targets.",
      )

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self.source[index]
    if "target" not in example:
      raise InputError(
        "super-resolution needs fully-sampled targets, but the data source has none "
        "(reference files need the 'volfs' key)."
      )
    target = np.asarray(example["target"], np.float32)
    return {"input": low_resolution(target, self.keep), "target": target}

  def __getattr__(self, name: str) -> Any:
    # Only reached for attributes not defined here: forward volume bookkeeping to the wrapped
    # source.
    if name == "source":
      raise AttributeError(name)
    return getattr(self.source, name)

  def __repr__(self) -> str:
    return f"SuperResolutionSource({self.source!r}, keep={self.keep})"
