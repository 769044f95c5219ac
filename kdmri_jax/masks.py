"""Cartesian undersampling masks: load the reference `.npy` masks, generate new ones, shift and view
them.

A mask is an (H, W) float32 array of 0/1, **unshifted** (the k-space centre at index [0, 0]), as the
reference code stores them in `us_masks/{dataset}/mask_{acc}.npy`. "rows" masks sample whole rows
(phase encoding along H: cardiac and brain), "columns" masks whole columns (knee). Generated masks
come in families (`MASK_FAMILIES`): 1-D line families (`LINE_GENERATORS`) — "dccnn", the authors'
kind and the default, "gaussian", the one used before, and fastMRI's "random", "equispaced",
"equispaced_fraction", "magic" and "magic_fraction" (`kdmri_jax.subsample`, equal to the `fastmri`
package's) — and 2-D point families (`POINT_GENERATORS`, `kdmri_jax.masks_2d`): "gaussian_2d" and
"poisson_disc", which sample single k-space points and ignore the direction.
`python -m kdmri_jax.masks --mask PATH [...]` prints a mask's statistics.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from kdmri_jax import masks_2d, subsample
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


def check_mask(
  mask: np.ndarray, shape: tuple[int, int] | None = None, name: str = "mask"
) -> np.ndarray:
  """Validates a mask (2-D, finite, 0/1, not empty, optionally of `shape`) and returns it as
  float32."""
  mask = np.asarray(mask)
  require(mask.ndim == 2, f"{name} must be a 2-D H×W array, got shape {mask.shape}.")
  require(not np.iscomplexobj(mask), f"{name} must be real 0/1 values, got complex data.")
  require(
    bool(np.all(np.isfinite(mask))), f"{name} contains NaN or Inf; a mask holds only 0 and 1."
  )
  require(
    bool(np.all((mask == 0) | (mask == 1))),
    f"{name} is not binary: it holds values other than 0 and 1 (e.g. "
    f"{np.unique(mask)[:4].tolist()}).",
  )
  require(bool(mask.any()), f"{name} samples no k-space point (all zeros).")
  if shape is not None:
    require(
      tuple(mask.shape) == tuple(shape),
      f"{name} has shape {tuple(mask.shape)} but the images are "
      f"{tuple(shape)}; use a mask made for this image size.",
    )
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


def gaussian_line_mask(
  num_lines: int,
  acc: float,
  seed: int = 0,
  center_fraction: float | None = None,
  std_fraction: float = 0.25,
) -> np.ndarray:
  """The "gaussian" family: 1-D variable-density lines, *centred* (the k-space centre at n // 2).

  Samples exactly round(num_lines / acc) lines: a fully sampled centre of
  round(center_fraction·num_lines) lines (default 0.32/acc: 8% at 4x, 4% at 8x, as fastMRI) plus
  lines drawn without replacement with probability ∝ exp(−d²/2σ²), d the distance to the centre and
  σ = std_fraction·num_lines.
  """
  total = _lines_to_sample(num_lines, acc)
  center_fraction = 0.32 / acc if center_fraction is None else center_fraction
  num_center = min(total, max(1, int(round(center_fraction * num_lines))))
  density = np.exp(-0.5 * (_distance(num_lines) / (std_fraction * num_lines)) ** 2)
  return _draw_lines(num_lines, total, num_center, density, np.random.default_rng(seed))


# The "dccnn" family's fit to the authors' brain masks (240 rows): acceleration -> (fully sampled
# centre lines at 240, Gaussian σ / number of lines, uniform floor as a part of Schlemper's
# 1/(2·acc)).
DCCNN_FIT = {4.0: (8, 0.07, 1.0), 5.0: (8, 0.12, 0.5), 8.0: (10, 0.10, 0.5)}
DCCNN_FIT_LINES = 240


def dccnn_parameters(num_lines: int, acc: float) -> tuple[int, float, float]:
  """(fixed centre lines, σ / number of lines, floor) of the "dccnn" family: `DCCNN_FIT`,
  interpolated linearly in acc (clamped outside 4x–8x); the centre scales with the line count."""
  accs = sorted(DCCNN_FIT)
  center, std_fraction, floor_scale = (
    float(np.interp(acc, accs, [DCCNN_FIT[a][i] for a in accs])) for i in range(3)
  )
  num_center = max(1, int(round(center * num_lines / DCCNN_FIT_LINES)))
  return num_center, std_fraction, floor_scale / (2.0 * acc)


def dccnn_line_mask(
  num_lines: int, acc: float, seed: int = 0, center_fraction: float | None = None
) -> np.ndarray:
  """The "dccnn" family (the authors' masks): DC-CNN-style 1-D variable density, *centred*.

  As Schlemper et al.'s `cartesian_mask`, which made the KD-MRI repository's `us_masks/`: c fully
  sampled centre lines (ky = −c//2 … c − c//2 − 1), and the other round(n/acc) − c lines drawn
  without replacement with probability ∝ exp(−ky²/2σ²) + floor. c, σ and the floor are fitted per
  acceleration to the authors' 240×240 brain masks (`DCCNN_FIT`): Schlemper's defaults (c = 10,
  σ = n/10, floor 1/(2·acc)) give mean |ky| 34.7 / 31.8 / 23.5 on average at 4x/5x/8x, and with
  that floor no σ brings 5x and 8x below 31 and 23. At 240 lines (mean ± std over seeds 0–199, the
  authors' mask in brackets; zero-filled PSNR of the embedded validation brain over seeds 0–19):

    acc  lines  c   σ/n   floor      centre run       mean |ky|          zero-filled PSNR
    4x   60     8   0.07  1/(2·4)    11.8 ± 3.2 (12)  37.1 ± 3.8 (37.0)  25.18 ± 1.39 (25.39) dB
    5x   48     8   0.12  0.5/(2·5)  9.8 ± 1.8  (9)   28.7 ± 3.6 (28.3)  23.63 ± 0.94 (23.27) dB
    8x   30     10  0.10  0.5/(2·8)  10.9 ± 1.1 (11)  20.5 ± 3.5 (20.5)  23.39 ± 0.50 (23.34) dB

  ("centre run": contiguous centre lines.) One draw's mean |ky| varies by ±3–4 between seeds. Other
  sizes keep c/n (64 rows: 2 / 2 / 3 centre lines; 150: 5 / 5 / 6); `center_fraction` sets c = f·n.
  """
  total = _lines_to_sample(num_lines, acc)
  num_center, std_fraction, floor = dccnn_parameters(num_lines, acc)
  if center_fraction is not None:
    num_center = max(1, int(round(center_fraction * num_lines)))
  density = np.exp(-0.5 * (_distance(num_lines) / (std_fraction * num_lines)) ** 2) + floor
  return _draw_lines(num_lines, total, min(total, num_center), density, np.random.default_rng(seed))


# name -> f(num_lines, acc, seed, center_fraction) -> centred boolean lines.
LINE_GENERATORS = {
  "dccnn": dccnn_line_mask,
  "gaussian": gaussian_line_mask,
  **{kind: functools.partial(subsample.family_lines, kind) for kind in subsample.KINDS},
}
# name -> f((H, W), acc, seed, center_fraction) -> centred boolean (H, W) points.
POINT_GENERATORS = {
  "gaussian_2d": masks_2d.gaussian_mask,
  "poisson_disc": masks_2d.poisson_disc_mask,
}
# The seed of generated masks unless one is given (config.data.mask_seed, prepare --mask-seed). Of
# seeds 0-399, those whose 240×240 "dccnn" masks are within ±2 of the authors' brain masks in
# contiguous centre lines and mean |ky| at 4x, 5x and 8x, ranked by zero-filled PSNR on the embedded
# validation set (`python -m experiments.mask_seed --search 400`), put 172 first: 12/9/11 centre
# lines and mean
# |ky| 36.1/29.6/20.2 (authors' 12/9/11, 37.0/28.3/20.5), zero-filled 25.74/23.12/23.27 dB (authors'
# 25.39/23.27/23.34). Seed 0, for one, gives 9 centre lines at 4x and mean |ky| 26.3 at 8x.
DEFAULT_MASK_SEED = 172
MASK_FAMILIES = tuple(LINE_GENERATORS) + tuple(POINT_GENERATORS)
DEFAULT_FAMILY = "dccnn"


def check_family(family: str, name: str = "mask family") -> str:
  require(family in MASK_FAMILIES, f"{name} {family!r} is not one of {MASK_FAMILIES}.")
  return family


def _lines_to_sample(num_lines: int, acc: float) -> int:
  total = int(round(num_lines / acc))
  require(1 <= total <= num_lines, f"acceleration {acc} leaves no line of {num_lines} to sample.")
  return total


def _distance(num_lines: int) -> np.ndarray:
  """Signed distance of each centred line index to the k-space centre at num_lines // 2."""
  return (np.arange(num_lines) - num_lines // 2).astype(np.float64)


def _draw_lines(
  num_lines: int, total: int, num_center: int, density: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
  """Centred boolean lines: the `num_center` centre block plus lines drawn ∝ `density`."""
  lines = np.zeros(num_lines, dtype=bool)
  start = num_lines // 2 - num_center // 2
  lines[start : start + num_center] = True
  if total > num_center:
    density = np.where(lines, 0.0, density)
    extra = rng.choice(num_lines, size=total - num_center, replace=False, p=density / density.sum())
    lines[extra] = True
  return lines


def cartesian_mask(
  shape: tuple[int, int],
  acc: float | str,
  seed: int = 0,
  direction: str = "rows",
  center_fraction: float | None = None,
  family: str = DEFAULT_FAMILY,
) -> np.ndarray:
  """A Cartesian mask of `shape`, unshifted, float32 0/1, of a family in `MASK_FAMILIES`: whole
  `direction` lines for `LINE_GENERATORS` ("dccnn": the authors' kind, `dccnn_line_mask`;
  "gaussian": `gaussian_line_mask`; fastMRI's kinds: `subsample.family_lines`), single points for
  `POINT_GENERATORS` (`masks_2d`; `direction` is not used).

  "dccnn", "gaussian" and the 2-D families sample exactly round(n / acc) of n lines (round(H·W /
  acc) points): within 2% of `acc` whenever n / acc ≥ 25 (e.g. 240 rows at 8x give exactly 8.0).
  fastMRI's kinds achieve what fastMRI's do: "random" about n / acc lines, "equispaced" and "magic"
  more.
  """
  acc = parse_acceleration(acc)
  check_family(family)
  require(direction in DIRECTIONS, f"mask direction {direction!r} is not one of {DIRECTIONS}.")
  if family in POINT_GENERATORS:
    points = POINT_GENERATORS[family](tuple(shape), acc, seed, center_fraction)
    return np.fft.ifftshift(points).astype(np.float32)
  height, width = shape
  num_lines = height if direction == "rows" else width
  lines = np.fft.ifftshift(LINE_GENERATORS[family](num_lines, acc, seed, center_fraction))
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


def sampled_lines(mask: np.ndarray) -> tuple[str, np.ndarray] | None:
  """(direction, unshifted boolean lines) when `mask` samples whole rows or columns, else None."""
  mask = np.asarray(mask) > 0
  for direction, axis in (("rows", 1), ("columns", 0)):
    full, touched = mask.all(axis=axis), mask.any(axis=axis)
    if np.array_equal(full, touched):
      return direction, full
  return None


def contiguous_centre_lines(lines: np.ndarray) -> int:
  """Length of the run of sampled lines through ky = 0 (unshifted: the run wraps around index 0)."""
  lines = np.asarray(lines, dtype=bool)
  if lines.all() or not lines[0]:
    return int(lines.sum())
  after = int(np.argmin(lines))  # first unsampled line at or after 0
  before = int(np.argmin(lines[::-1]))  # unsampled lines counted backwards from the end
  return after + before


def fully_sampled_centre(mask: np.ndarray) -> int:
  """Side 2k + 1 of the largest square |ky|, |kx| <= k around the k-space centre that the
  (unshifted) `mask` samples fully, at most min(H, W); 0 when the centre itself is not sampled."""
  mask = np.asarray(mask) > 0
  ky, kx = (np.abs(np.fft.fftfreq(n, 1.0 / n)) for n in mask.shape)
  chebyshev = np.maximum(ky[:, None], kx[None, :])
  missing = chebyshev[~mask]
  limit = float(missing.min()) if missing.size else float(chebyshev.max()) + 1.0
  return int(min(max(2 * limit - 1, 0), min(mask.shape)))


def mean_distance(mask: np.ndarray) -> float:
  """Mean Euclidean distance |k| = sqrt(ky² + kx²), in k-space samples, of the sampled points to the
  k-space centre of the (unshifted) `mask`."""
  mask = np.asarray(mask) > 0
  ky, kx = (np.fft.fftfreq(n, 1.0 / n) for n in mask.shape)
  return float(np.hypot(ky[:, None], kx[None, :])[mask].mean())


def mask_statistics(mask: np.ndarray) -> dict:
  """Sampled points, achieved acceleration and, for a line mask, its direction, sampled lines,
  contiguous centre lines and the mean |ky| (distance to the k-space centre) of the sampled lines;
  for a 2-D (point) mask, its fully sampled centre square (`fully_sampled_centre`) and the mean |k|
  of the sampled points (`mean_distance`)."""
  mask = np.asarray(mask)
  stats = {
    "shape": tuple(mask.shape),
    "sampled_points": int((mask > 0).sum()),
    "acceleration": acceleration(mask > 0),
  }
  found = sampled_lines(mask)
  if found is not None:
    direction, lines = found
    ky = np.fft.fftfreq(len(lines), 1.0 / len(lines))
    stats.update(
      direction=direction,
      lines=int(lines.sum()),
      num_lines=len(lines),
      centre_lines=contiguous_centre_lines(lines),
      mean_abs_ky=float(np.abs(ky[lines]).mean()),
    )
  elif stats["sampled_points"]:
    stats.update(centre_block=fully_sampled_centre(mask), mean_abs_k=mean_distance(mask))
  return stats


def describe(mask: np.ndarray) -> str:
  """`mask_statistics` in one line: '240×240: 60/240 rows, 4.00x, 12 contiguous centre lines, ...'
  or '240×240: 14400 points (2-D), 4.00x, fully sampled centre 19×19, mean |k| 72.8'."""
  stats = mask_statistics(mask)
  size = "×".join(str(n) for n in stats["shape"])
  if "lines" not in stats:
    text = f"{size}: {stats['sampled_points']} points (2-D), {stats['acceleration']:.2f}x"
    if "centre_block" in stats:
      block = stats["centre_block"]
      text += f", fully sampled centre {block}×{block}, mean |k| {stats['mean_abs_k']:.1f}"
    return text
  return (
    f"{size}: {stats['lines']}/{stats['num_lines']} {stats['direction']}, "
    f"{stats['acceleration']:.2f}x, {stats['centre_lines']} contiguous centre lines, "
    f"mean |ky| {stats['mean_abs_ky']:.1f}"
  )


def main(argv=None) -> int:
  """`python -m kdmri_jax.masks --mask PATH [...]` or `--generate H W --acc 4x [--family F ...]`."""
  import argparse

  parser = argparse.ArgumentParser(
    prog="python -m kdmri_jax.masks", description="Print the statistics of undersampling masks."
  )
  parser.add_argument("--mask", nargs="+", default=[], help="mask .npy files (H×W, 0/1, unshifted)")
  parser.add_argument(
    "--generate", type=int, nargs=2, metavar=("H", "W"), help="generate H×W masks"
  )
  parser.add_argument(
    "--acc", nargs="+", default=["4x", "5x", "8x"], help="generated accelerations"
  )
  parser.add_argument(
    "--family",
    nargs="+",
    default=[DEFAULT_FAMILY],
    help=f"generated families, or all: {' | '.join(MASK_FAMILIES)}",
  )
  parser.add_argument(
    "--seed",
    type=int,
    default=DEFAULT_MASK_SEED,
    help=f"seed of the generated masks ({DEFAULT_MASK_SEED}, as everywhere)",
  )
  parser.add_argument("--direction", default="rows", help="generated lines: rows | columns")
  parser.add_argument(
    "--center-fraction",
    type=float,
    default=None,
    help="fully sampled centre fraction (default: each family's own)",
  )
  args = parser.parse_args(argv)
  require(
    bool(args.mask) or args.generate is not None,
    "nothing to inspect: pass --mask PATH or --generate H W.",
  )
  families = (
    MASK_FAMILIES if args.family == ["all"] else [check_family(f, "--family") for f in args.family]
  )
  for path in args.mask:
    print(f"{path}: {describe(load_mask(path))}")
  if args.generate is not None:
    for family in families:
      for acc in args.acc:
        mask = cartesian_mask(
          tuple(args.generate), acc, args.seed, args.direction, args.center_fraction, family
        )
        print(f"{family} {acc} seed {args.seed}: {describe(mask)}")
  return 0


if __name__ == "__main__":
  import sys

  from kdmri_jax.errors import run_cli

  sys.exit(run_cli(main))
