"""fastMRI's 1-D undersampling masks in numpy, line for line `fastmri.data.subsample`'s (0.3.0).

Five kinds (`KINDS`, fastMRI's `create_mask_for_mask_type` names), each a fully sampled centre of
L = round(n · center_fraction) lines (Python's round) from (n − L + 1) // 2 on, plus:

  random               each other line independently with p = (n / acc − L) / (n − L)
  equispaced           every acc-th line from a random offset in [0, acc)
  equispaced_fraction  lines round(offset + j·a), a = acc·(n − L) / (n − L·acc), offset in
                       [0, round(a)): about n / acc lines in all (fastMRI's public multicoil data)
  magic                Defazio's offset sampling (arXiv:1912.01101): every acc-th line on each side
                       of the centre, the negative side offset against the positive one
  magic_fraction       magic with L capped to [1, round(n / acc)] and acc replaced by
                       round(n / (round(n / acc) − L)), so about n / acc lines in all

`center_fractions` and `accelerations` are fastMRI's paired lists: each mask uses the pair at an
index drawn from the generator (or, with `allow_any_combination`, a fraction and an acceleration
drawn separately). Seeding is fastMRI's `MaskFunc(...)(shape, seed=seed)`: a
`np.random.RandomState(seed)`, seeded by an int or a tuple of ints (fastMRI's datasets use
`tuple(map(ord, fname))`), makes every draw in fastMRI's order, so the same seed gives the same
lines. n is fastMRI's `shape[-2]` (its k-space is (..., H, W, 2): columns); lines here are *centred*
(the k-space centre at n // 2), as fastMRI's masks are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kdmri_jax.errors import require

KINDS = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction")
Seed = int | Sequence[int] | None


def mask_lines(
  kind: str,
  num_lines: int,
  center_fractions: Sequence[float],
  accelerations: Sequence[float],
  seed: Seed = None,
  offset: int | None = None,
  allow_any_combination: bool = False,
) -> tuple[np.ndarray, int]:
  """(centred boolean lines, number of centre lines L) of fastMRI mask `kind` over `num_lines`.

  `offset` fixes the equispaced / magic offset as fastMRI's `offset` argument (None: drawn). `seed`
  None draws from fresh entropy, as an unseeded fastMRI `MaskFunc`.
  """
  require(kind in KINDS, f"fastMRI mask kind {kind!r} is not one of {KINDS}.")
  require(num_lines >= 1, f"a fastMRI mask needs at least 1 line, got {num_lines}.")
  _check_choices(center_fractions, accelerations, allow_any_combination)
  rng = np.random.RandomState(_checked_seed(seed))
  fraction, acc = _choose(rng, center_fractions, accelerations, allow_any_combination)
  if kind == "magic_fraction":
    num_low, acc = _magic_fraction_budget(num_lines, fraction, acc)
  else:
    num_low = round(num_lines * fraction)
  outer = _OUTER[kind](rng, num_lines, acc, offset, num_low)
  return centre_lines(num_lines, num_low) | outer, int(num_low)


def family_lines(
  kind: str, num_lines: int, acc: float, seed: int = 0, center_fraction: float | None = None
) -> np.ndarray:
  """The `masks` family `kind`: one acceleration and centre fraction (default 0.32 / acc: fastMRI's
  8% at 4x and 4% at 8x), the mask seed as fastMRI's call seed; centred boolean lines."""
  fraction = 0.32 / acc if center_fraction is None else center_fraction
  return mask_lines(kind, num_lines, [fraction], [acc], seed)[0]


def centre_lines(num_lines: int, num_low: int) -> np.ndarray:
  """fastMRI's fully sampled centre: `num_low` lines starting at (n − num_low + 1) // 2."""
  lines = np.zeros(num_lines, dtype=bool)
  start = (num_lines - num_low + 1) // 2
  lines[start : start + num_low] = True
  return lines


def _checked_seed(seed: Seed) -> Seed:
  """`seed` when numpy's RandomState takes it: None, or ints (one or a tuple) in [0, 2**32)."""
  values = [] if seed is None else np.ravel(np.asarray(seed, dtype=object)).tolist()
  require(
    all(isinstance(v, (int, np.integer)) and 0 <= v < 2**32 for v in values),
    f"mask seed {seed!r} must be an integer (or a tuple of them) from 0 to 2**32 - 1, as "
    f"fastMRI's (numpy RandomState) seeds.",
  )
  return seed


def _check_choices(center_fractions, accelerations, allow_any_combination: bool) -> None:
  require(
    len(center_fractions) > 0 and len(accelerations) > 0,
    "fastMRI masks need at least one center fraction and one acceleration.",
  )
  require(
    allow_any_combination or len(center_fractions) == len(accelerations),
    f"{len(center_fractions)} center fractions but {len(accelerations)} accelerations: pair "
    f"them one to one, or allow any combination.",
  )
  require(
    all(0.0 <= f <= 1.0 for f in center_fractions),
    f"center fractions {list(center_fractions)} must lie in [0, 1].",
  )
  require(
    all(a >= 1 for a in accelerations), f"accelerations {list(accelerations)} must be at least 1."
  )


def _choose(
  rng: np.random.RandomState, center_fractions, accelerations, allow_any_combination: bool
) -> tuple[float, float]:
  """fastMRI's draw of (center fraction, acceleration); it draws even when there is one pair."""
  if allow_any_combination:
    return rng.choice(center_fractions), rng.choice(accelerations)
  index = rng.randint(len(center_fractions))
  return center_fractions[index], accelerations[index]


def _integral(acc: float, kind: str) -> int:
  require(
    float(acc).is_integer(),
    f"fastMRI's {kind} mask steps by whole lines: acceleration "
    f"{acc} must be an integer (e.g. 4x or 8x).",
  )
  return int(acc)


def _random(rng, num_lines: int, acc: float, offset, num_low: int) -> np.ndarray:
  require(num_low < num_lines, f"the center fraction keeps all {num_lines} lines; lower it.")
  probability = (num_lines / acc - num_low) / (num_lines - num_low)
  return rng.uniform(size=num_lines) < probability


def _equispaced(rng, num_lines: int, acc: float, offset, num_low: int) -> np.ndarray:
  step = _integral(acc, "equispaced")
  if offset is None:
    offset = rng.randint(0, high=step)
  lines = np.zeros(num_lines, dtype=bool)
  lines[offset::step] = True
  return lines


def _equispaced_fraction(rng, num_lines: int, acc: float, offset, num_low: int) -> np.ndarray:
  require(
    num_low * acc < num_lines,
    f"equispaced_fraction: {num_low} centre lines at {acc:g}x "
    f"leave none of {num_lines} to space out (centre lines × acceleration must be below the "
    f"line count); lower the center fraction.",
  )
  spacing = (acc * (num_low - num_lines)) / (num_low * acc - num_lines)
  if offset is None:
    offset = rng.randint(0, high=round(spacing))
  lines = np.zeros(num_lines, dtype=bool)
  lines[np.rint(np.arange(offset, num_lines - 1, spacing)).astype(np.intp)] = True
  return lines


def _magic(rng, num_lines: int, acc: float, offset, num_low: int) -> np.ndarray:
  """Offset sampling: ky = p, p + acc, … and ky = −(q + 1), −(q + 1 + acc), …, with
  (p, q) = (o + 1, o + 2) for an even offset o and (o + 2, o − 1) for an odd one; centred."""
  step = _integral(acc, "magic")
  if offset is None:
    offset = rng.randint(0, high=step)
  even = offset % 2 == 0
  first_positive, first_negative = (offset + 1, offset + 2) if even else (offset + 2, offset - 1)
  ky = np.fft.fftfreq(num_lines, 1.0 / num_lines).round().astype(int)  # unshifted integer ky
  positive = (ky >= first_positive) & ((ky - first_positive) % step == 0)
  distance = -ky - 1  # 0 for ky = −1
  negative = (ky < 0) & (distance >= first_negative) & ((distance - first_negative) % step == 0)
  return np.fft.fftshift(positive | negative)


def _magic_fraction_budget(num_lines: int, fraction: float, acc: float) -> tuple[int, int]:
  """(centre lines, the magic step) that bring magic_fraction to about num_lines / acc lines."""
  target = round(num_lines / acc)
  num_low = max(min(round(num_lines * fraction), target), 1)
  remaining = target - num_low
  require(
    remaining > 0,
    f"magic_fraction: the {num_low} centre lines already use all {target} "
    f"lines that {acc:g}x allows of {num_lines}; lower the center fraction.",
  )
  return num_low, round(num_lines / remaining)


_OUTER = {
  "random": _random,
  "equispaced": _equispaced,
  "equispaced_fraction": _equispaced_fraction,
  "magic": _magic,
  "magic_fraction": _magic,
}
