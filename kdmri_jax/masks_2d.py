"""2-D undersampling masks: variable-density Gaussian and Poisson-disc sets of k-space points.

For k-space undersampled in both directions (the two phase encodings of a 3-D acquisition, or 2-D
studies), any point may be sampled. Both kinds are seeded, *centred* (the k-space centre at
(H // 2, W // 2)) and sample exactly round(H·W / acc) points: a fully sampled centre block of
round(f·H) × round(f·W) points (f = center_fraction, default 0.32 / acc as the 1-D families: 8% of
each side at 4x) plus points outside it. Distances use ρ = sqrt((ky / (H/2))² + (kx / (W/2))²), 1 at
the middle of each edge.

  gaussian_2d   points drawn without replacement with probability ∝ exp(−ρ² / 2σ²), σ = std_fraction
  poisson_disc  variable-density Poisson-disc (dart throwing): any two points p, q outside the
                centre are at least (R(p) + R(q)) / 2 apart (in k-space samples), with
                R = s·(1 + slope·ρ) growing towards the edges; s is searched to reach the count
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kdmri_jax.errors import require

POISSON_SLACK = 0.02  # a Poisson-disc draw within 2% above the point count ends the search of s
POISSON_TRIES = 14


def points_to_sample(shape: tuple[int, int], acc: float) -> int:
  total = int(round(shape[0] * shape[1] / acc))
  require(
    1 <= total <= shape[0] * shape[1],
    f"acceleration {acc} leaves no k-space point of {shape[0]}×{shape[1]} to sample.",
  )
  return total


def centre_block(shape: tuple[int, int], acc: float, center_fraction: float | None) -> np.ndarray:
  """Centred boolean block of round(f·H) × round(f·W) points (at least 1×1) at the centre."""
  fraction = 0.32 / acc if center_fraction is None else center_fraction
  require(0.0 <= fraction <= 1.0, f"center fraction {fraction} must lie in [0, 1].")
  block = np.zeros(shape, dtype=bool)
  sides = [max(1, int(round(fraction * n))) for n in shape]
  starts = [n // 2 - side // 2 for n, side in zip(shape, sides)]
  block[starts[0] : starts[0] + sides[0], starts[1] : starts[1] + sides[1]] = True
  return block


def normalised_radius(shape: tuple[int, int]) -> np.ndarray:
  """ρ of every centred point: 0 at the centre, 1 at the middle of each edge."""
  ky, kx = (np.arange(n) - n // 2 for n in shape)
  half_h, half_w = (max(n / 2, 1.0) for n in shape)
  return np.hypot(ky[:, None] / half_h, kx[None, :] / half_w)


def _centre_and_budget(shape, acc, center_fraction) -> tuple[np.ndarray, int]:
  """(centre block, points still to sample outside it)."""
  total = points_to_sample(shape, acc)
  centre = centre_block(shape, acc, center_fraction)
  require(
    int(centre.sum()) <= total,
    f"the {int(centre.sum())}-point fully sampled centre exceeds "
    f"the {total} points {acc:g}x allows of {shape[0]}×{shape[1]}; lower the center "
    f"fraction.",
  )
  return centre, total - int(centre.sum())


def gaussian_mask(
  shape: tuple[int, int],
  acc: float,
  seed: int = 0,
  center_fraction: float | None = None,
  std_fraction: float = 0.5,
) -> np.ndarray:
  """The "gaussian_2d" family: centred boolean (H, W), the centre block plus points drawn
  ∝ exp(−ρ²/2σ²), σ = std_fraction.

  Drawn at once by the Gumbel top-k trick (the k largest log-density + Gumbel noise), which is the
  same as k successive draws without replacement.
  """
  centre, count = _centre_and_budget(shape, acc, center_fraction)
  keys = -0.5 * (normalised_radius(shape) / std_fraction) ** 2
  keys = keys + np.random.default_rng(seed).gumbel(size=shape)
  keys[centre] = -np.inf
  mask = centre.copy()
  if count > 0:
    mask.flat[np.argpartition(keys.ravel(), -count)[-count:]] = True
  return mask


class PoissonDisc(NamedTuple):
  mask: np.ndarray  # centred boolean (H, W): centre | points
  centre: np.ndarray  # the fully sampled centre block
  radius: np.ndarray  # R of every point: points outside the centre are >= (R(p) + R(q)) / 2 apart


def poisson_disc(
  shape: tuple[int, int],
  acc: float,
  seed: int = 0,
  center_fraction: float | None = None,
  slope: float = 2.0,
) -> PoissonDisc:
  """Variable-density Poisson-disc sampling, R = s·(1 + slope·ρ), exactly round(H·W / acc) points.

  One seeded random order of the points; dart throwing in that order keeps a point unless it is
  closer than (R(p) + R(q)) / 2 to one kept before. The scale s is searched (secant steps on
  count ∝ 1/s², then bisection) for a draw with 0–2% more points than needed; the points last in
  the order are dropped down to the exact count (dropping keeps every distance).
  """
  centre, count = _centre_and_budget(shape, acc, center_fraction)
  rank = np.random.default_rng(seed).permutation(centre.size).reshape(shape)
  profile = 1.0 + slope * normalised_radius(shape)
  if count == 0:
    return PoissonDisc(centre.copy(), centre, np.zeros(shape))
  scale, points = _search_scale(~centre, profile, rank, count)
  kept = np.flatnonzero(points)
  points.flat[kept[np.argsort(rank.flat[kept])[count:]]] = False
  return PoissonDisc(points | centre, centre, scale * profile)


def _search_scale(
  candidates: np.ndarray, profile: np.ndarray, rank: np.ndarray, count: int
) -> tuple[float, np.ndarray]:
  """(s, points) of the draw with the fewest points >= count among the scales tried."""
  # Random sequential packing keeps about 0.7 / R² points per unit area: the first guess.
  scale = float(np.sqrt(0.7 * np.sum(1.0 / profile[candidates] ** 2) / count))
  best, low, high = None, 0.0, np.inf  # scales known to give >= count (low), < count (high) points
  for _ in range(POISSON_TRIES):
    points = dart_throwing(candidates, scale * profile, rank)
    found = int(points.sum())
    if found >= count:
      low = max(low, scale)
      if best is None or found < best[1].sum():
        best = (scale, points)
      if found <= count * (1 + POISSON_SLACK):
        break
    else:
      high = min(high, scale)
    aim = scale * np.sqrt(found / (count * (1 + POISSON_SLACK / 2)))
    scale = np.sqrt(low * high) if 0 < low and high < np.inf else aim
  if best is None:  # no try reached the count: s = 0 keeps every candidate (trimmed by rank)
    return 0.0, candidates.copy()
  return best


def dart_throwing(candidates: np.ndarray, radius: np.ndarray, rank: np.ndarray) -> np.ndarray:
  """The candidates that dart throwing in increasing `rank` keeps: each is at least the mean of the
  two radii from every point kept before it. Computed in parallel rounds (the greedy maximal
  independent set of the conflict graph): a point is kept once no undecided conflicting point
  comes before it, and its conflicting points are then dropped."""
  early, late = conflicts(candidates, radius, rank)
  undecided = candidates.ravel().copy()
  kept = np.zeros_like(undecided)
  while undecided.any():
    live = undecided[early] & undecided[late]
    early, late = early[live], late[live]
    waiting = np.zeros_like(undecided)
    waiting[late] = True
    chosen = undecided & ~waiting
    kept |= chosen
    undecided &= ~chosen
    undecided[late[chosen[early]]] = False
  return kept.reshape(candidates.shape)


def conflicts(
  candidates: np.ndarray, radius: np.ndarray, rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Flat indices (earlier, later in `rank`) of the pairs of candidates closer than their mean
  radius."""
  height, width = candidates.shape
  reach = float(radius[candidates].max()) if candidates.any() else 0.0
  flat = np.arange(candidates.size).reshape(candidates.shape)
  firsts, seconds = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
  steps = int(np.ceil(reach))
  for dy in range(0, steps + 1):
    for dx in range(-steps, steps + 1):
      if (dy == 0 and dx <= 0) or dy * dy + dx * dx >= reach * reach:
        continue
      here = (slice(0, height - dy), slice(max(0, -dx), width - max(0, dx)))
      there = (slice(dy, height), slice(max(0, dx), width + min(0, dx)))
      close = candidates[here] & candidates[there]
      close &= 4 * (dy * dy + dx * dx) < (radius[here] + radius[there]) ** 2
      firsts.append(flat[here][close])
      seconds.append(flat[there][close])
  first, second = np.concatenate(firsts), np.concatenate(seconds)
  swap = rank.flat[first] > rank.flat[second]
  return np.where(swap, second, first), np.where(swap, first, second)


def poisson_disc_mask(
  shape: tuple[int, int],
  acc: float,
  seed: int = 0,
  center_fraction: float | None = None,
  slope: float = 2.0,
) -> np.ndarray:
  """The "poisson_disc" family: centred boolean (H, W) mask of `poisson_disc`."""
  return poisson_disc(shape, acc, seed, center_fraction, slope).mask
