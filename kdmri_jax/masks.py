"""Cartesian undersampling masks: load the reference `.npy` masks, generate new ones, shift and view them.

A mask is an (H, W) float32 array of 0/1, **unshifted** (the k-space centre at index [0, 0]), as the
reference code stores them in `us_masks/{dataset}/mask_{acc}.npy`. "rows" masks sample whole rows
(phase encoding along H: cardiac and brain), "columns" masks whole columns (knee).
"""

from __future__ import annotations

import os

import numpy as np

from kdmri_jax.errors import InputError, require

DIRECTIONS = ("rows", "columns")


def acceleration(mask: np.ndarray) -> float:
  """Achieved acceleration: number of k-space points / number sampled."""
  mask = np.asarray(mask)
  return float(mask.size / max(float(mask.sum()), 1.0))


def parse_acceleration(acc: str | float | int) -> float:
  """'4x' / '4' / 4 -> 4.0."""
  text = str(acc).strip().lower().removesuffix("x")
  try:
    value = float(text)
  except ValueError:
    raise InputError(f"acceleration {acc!r} is not a number like '4x' or 4.") from None
  require(value >= 1.0, f"acceleration {acc!r} must be at least 1.")
  return value


def check_mask(mask: np.ndarray, shape: tuple[int, int] | None = None, name: str = "mask") -> np.ndarray:
  """Validates a mask (2-D, finite, 0/1, not empty, optionally of `shape`) and returns it as float32."""
  mask = np.asarray(mask)
  require(mask.ndim == 2, f"{name} must be a 2-D H×W array, got shape {mask.shape}.")
  require(not np.iscomplexobj(mask), f"{name} must be real 0/1 values, got complex data.")
  require(bool(np.all(np.isfinite(mask))), f"{name} contains NaN or Inf; a mask holds only 0 and 1.")
  require(bool(np.all((mask == 0) | (mask == 1))),
          f"{name} is not binary: it holds values other than 0 and 1 (e.g. {np.unique(mask)[:4].tolist()}).")
  require(bool(mask.any()), f"{name} samples no k-space point (all zeros).")
  if shape is not None:
    require(tuple(mask.shape) == tuple(shape),
            f"{name} has shape {tuple(mask.shape)} but the images are {tuple(shape)}; use a mask made for "
            f"this image size.")
  return mask.astype(np.float32)


def load_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
  """Loads a reference `.npy` mask (H×W, 0/1, unshifted) and checks it (see `check_mask`)."""
  path = os.fspath(path)
  require(os.path.isfile(path), f"mask file {path} does not exist.")
  try:
    mask = np.load(path, allow_pickle=False)
  except Exception as error:  # numpy raises several types for a file that is not .npy
    raise InputError(f"mask file {path} is not a readable .npy array ({error}).") from None
  return check_mask(mask, shape, name=f"mask file {path}")


def gaussian_line_mask(num_lines: int, acc: float, seed: int = 0, center_fraction: float | None = None,
                       std_fraction: float = 0.25) -> np.ndarray:
  """A 1-D variable-density line selection, *centred* (the k-space centre at num_lines // 2).

  Samples exactly round(num_lines / acc) lines: a fully sampled centre of round(center_fraction·num_lines)
  lines (default 0.32/acc: 8% at 4x, 4% at 8x, as fastMRI) plus lines drawn without replacement with
  probability ∝ exp(−d²/2σ²), d the distance to the centre and σ = std_fraction·num_lines.
  """
  total = int(round(num_lines / acc))
  require(1 <= total <= num_lines, f"acceleration {acc} leaves no line of {num_lines} to sample.")
  center_fraction = 0.32 / acc if center_fraction is None else center_fraction
  num_center = min(total, max(1, int(round(center_fraction * num_lines))))
  lines = np.zeros(num_lines, dtype=bool)
  start = num_lines // 2 - num_center // 2
  lines[start:start + num_center] = True
  distance = np.arange(num_lines) - num_lines // 2
  density = np.exp(-0.5 * (distance / (std_fraction * num_lines)) ** 2)
  density[lines] = 0.0
  rng = np.random.default_rng(seed)
  extra = rng.choice(num_lines, size=total - num_center, replace=False, p=density / density.sum())
  lines[extra] = True
  return lines


def cartesian_mask(shape: tuple[int, int], acc: float | str, seed: int = 0, direction: str = "rows",
                   center_fraction: float | None = None) -> np.ndarray:
  """A 1-D Cartesian variable-density mask of `shape`, unshifted, float32 0/1.

  The achieved acceleration is H·W / sampled = n / round(n / acc) for n lines: within 2% of `acc`
  whenever n / acc ≥ 25 (e.g. 240 rows at 8x give exactly 8.0).
  """
  acc = parse_acceleration(acc)
  require(direction in DIRECTIONS, f"mask direction {direction!r} is not one of {DIRECTIONS}.")
  height, width = shape
  num_lines = height if direction == "rows" else width
  lines = np.fft.ifftshift(gaussian_line_mask(num_lines, acc, seed, center_fraction))
  mask = np.zeros(shape, dtype=np.float32)
  if direction == "rows":
    mask[lines, :] = 1.0
  else:
    mask[:, lines] = 1.0
  return mask


def shift(mask: np.ndarray) -> np.ndarray:
  """Unshifted (centre at [0, 0]) -> centred, for viewing."""
  return np.fft.fftshift(mask, axes=(-2, -1))


def unshift(mask: np.ndarray) -> np.ndarray:
  """Centred -> unshifted (centre at [0, 0]), the layout the FFTs use."""
  return np.fft.ifftshift(mask, axes=(-2, -1))


def save_mask_png(mask: np.ndarray, path: str | os.PathLike, title: str | None = None) -> None:
  """Writes a centred picture of `mask` with its achieved acceleration."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(4, 4))
  ax.imshow(shift(mask), cmap="gray", interpolation="nearest")
  ax.set_title(title or f"{mask.shape[0]}×{mask.shape[1]}, {acceleration(mask):.2f}x")
  ax.axis("off")
  fig.savefig(path, bbox_inches="tight", dpi=100)
  plt.close(fig)
