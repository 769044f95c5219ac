"""Seeded synthetic phantoms: random ellipses in the spirit of Shepp–Logan, at any size.

For tests and for quick runs at the cardiac (150×150) and knee (640×368) shapes when no real data is
at hand. A volume is a stack of slices whose ellipses drift slowly from slice to slice (like
neighbouring anatomy); intensities are in [0, 1]. Same seed, same phantom.
"""

from __future__ import annotations

import numpy as np


def _ellipses(rng: np.random.Generator, count: int) -> np.ndarray:
  """(count, 6): centre y, x in [-1,1], semi-axes a, b, angle, intensity; the first is the
  'body'."""
  params = np.empty((count, 6))
  params[0] = [
    0.0,
    0.0,
    rng.uniform(0.7, 0.85),
    rng.uniform(0.55, 0.75),
    rng.uniform(-0.3, 0.3),
    0.6,
  ]
  for i in range(1, count):
    params[i] = [
      rng.uniform(-0.45, 0.45),
      rng.uniform(-0.35, 0.35),
      rng.uniform(0.05, 0.3),
      rng.uniform(0.05, 0.3),
      rng.uniform(0, np.pi),
      rng.uniform(-0.3, 0.4),
    ]
  return params


def _render(params: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  height, width = shape
  y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
  image = np.zeros(shape, np.float32)
  for cy, cx, a, b, angle, value in params:
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((x - cx) * cos + (y - cy) * sin) / b
    v = (-(x - cx) * sin + (y - cy) * cos) / a
    image[u * u + v * v <= 1.0] += value
  return np.clip(image, 0.0, 1.0)


def ellipse_phantom(shape: tuple[int, int], seed: int = 0, num_ellipses: int = 8) -> np.ndarray:
  """One (H, W) float32 phantom in [0, 1]."""
  return _render(_ellipses(np.random.default_rng(seed), num_ellipses), tuple(shape))


def phantom_volume(
  shape: tuple[int, int], num_slices: int, seed: int = 0, num_ellipses: int = 8, drift: float = 0.02
) -> np.ndarray:
  """(S, H, W) float32: ellipses that move and shrink slightly from one slice to the next."""
  rng = np.random.default_rng(seed)
  params = _ellipses(rng, num_ellipses)
  velocity = rng.normal(0.0, drift, size=params.shape) * np.array([1, 1, 0.5, 0.5, 2, 0])
  slices = []
  for _ in range(num_slices):
    slices.append(_render(params, tuple(shape)))
    params = params + velocity
    params[:, 2:4] = np.clip(params[:, 2:4], 0.02, 0.9)
  return np.stack(slices)


def phantom_volumes(
  count: int, shape: tuple[int, int], num_slices: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """{'phantom_000': (S,H,W), ...}: `count` independent seeded volumes."""
  return {
    f"phantom_{i:03d}": phantom_volume(
      shape, num_slices, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
    )
    for i in range(count)
  }


def make_dataset(
  out: str,
  shape: tuple[int, int] = (150, 150),
  accs=("4x",),
  num_volumes: int = 4,
  num_slices: int = 4,
  seed: int = 0,
  split: float = 0.75,
  direction: str = "rows",
  overwrite: bool = False,
) -> str:
  """A phantom dataset in the reference layout (with masks and manifest.json) at `out`."""
  from kdmri_jax.data import writer

  volumes = phantom_volumes(num_volumes, shape, num_slices, seed)
  return writer.write_dataset(
    out,
    volumes,
    accs,
    split=split,
    seed=seed,
    direction=direction,
    overwrite=overwrite,
    extra={"source": "ellipse phantoms (kdmri_jax.data.phantom)"},
  )
