"""kdmri_jax.subsample against the `fastmri` package itself (0.3.0): the same lines and centre for
the same seed, shape, center_fractions and accelerations, for each of the five 1-D mask
functions."""

import numpy as np
import pytest

from kdmri_jax import masks, subsample
from kdmri_jax.errors import InputError

fastmri_subsample = pytest.importorskip(
  "fastmri.data.subsample",
  reason="the optional test dependency fastmri (0.3.0, in requirements-test.txt) is not "
  "installed, so the masks cannot be compared with fastMRI's own",
)

# fastMRI k-space shapes (..., H, W, 2): the mask is over W = shape[-2]; odd and even line counts.
SHAPES = [(1, 640, 368, 2), (1, 320, 320, 2), (15, 33, 2), (1, 240, 241, 2), (4, 17, 2)]
CHOICES = [([0.08], [4]), ([0.04], [8]), ([0.08, 0.04], [4, 8]), ([0.1, 0.06, 0.04], [3, 5, 8])]
SEEDS = [0, 1, 1234, 2**31 + 5, tuple(map(ord, "file1000001.h5"))]


def _mask_class(kind):
  return type(fastmri_subsample.create_mask_for_mask_type(kind, [0.08], [4]))


def _theirs(mask_func, shape, **call):
  """fastMRI's (lines, centre lines), or "refused" where it raises (as ours must then)."""
  try:
    mask, num_low = mask_func(shape, **call)
  except ValueError:  # e.g. magic_fraction with no line left beyond the centre
    return "refused"
  return mask.numpy().reshape(-1) > 0, int(num_low)


def _ours(kind, num_lines, fractions, accs, seed, offset=None, allow_any_combination=False):
  try:
    return subsample.mask_lines(
      kind, num_lines, fractions, accs, seed, offset, allow_any_combination
    )
  except InputError:
    return "refused"


def _same(theirs, ours):
  if isinstance(theirs, str) or isinstance(ours, str):
    return theirs == ours
  return theirs[1] == ours[1] and np.array_equal(theirs[0], ours[0])


def _mismatches(kind, allow_any_combination=False, offset=None):
  """The (shape, choices, seed) cases where ours and fastMRI's differ in lines or centre size."""
  found, compared = [], 0
  for shape in SHAPES:
    for fractions, accs in CHOICES:
      func = _mask_class(kind)(fractions, accs, allow_any_combination=allow_any_combination)
      for seed in SEEDS:
        theirs = _theirs(func, shape, seed=seed, offset=offset)
        ours = _ours(kind, shape[-2], fractions, accs, seed, offset, allow_any_combination)
        compared += not isinstance(theirs, str)
        if not _same(theirs, ours):
          found.append((shape, fractions, accs, seed))
  assert compared >= 0.9 * len(SHAPES) * len(CHOICES) * len(SEEDS)  # refusals are the exception
  return found


@pytest.mark.parametrize("kind", subsample.KINDS)
def test_same_lines_as_fastmri_for_the_same_seed(kind):
  assert _mismatches(kind) == []


@pytest.mark.parametrize("kind", subsample.KINDS)
def test_same_lines_as_fastmri_with_any_combination(kind):
  assert _mismatches(kind, allow_any_combination=True) == []


@pytest.mark.parametrize("kind", ["equispaced", "magic"])
def test_same_lines_as_fastmri_with_a_given_offset(kind):
  assert _mismatches(kind, offset=1) == []


@pytest.mark.parametrize("kind", subsample.KINDS)
def test_a_seeded_mask_function_draws_as_the_call_seed(kind):
  """fastMRI's `MaskFunc(..., seed=s)`, on its first call, gives the lines of seed s here."""
  theirs = _theirs(_mask_class(kind)([0.08], [4], seed=99), (1, 320, 368, 2))
  assert _same(theirs, subsample.mask_lines(kind, 368, [0.08], [4], 99))


@pytest.mark.parametrize("kind", subsample.KINDS)
def test_mask_family_is_fastmris_mask_unshifted_over_the_lines(kind):
  """`masks.cartesian_mask(family=kind)` is fastMRI's mask for center fraction 0.32 / acc and the
  mask seed, ifftshifted (this project's masks are unshifted) and repeated over the other axis."""
  for seed, acc in ((0, 4), (172, 8)):
    func = fastmri_subsample.create_mask_for_mask_type(kind, [0.32 / acc], [acc])
    theirs = _theirs(func, (1, 640, 368, 2), seed=seed)[0]
    mask = masks.cartesian_mask((640, 368), f"{acc}x", seed, "columns", family=kind)
    np.testing.assert_array_equal(mask > 0, np.broadcast_to(np.fft.ifftshift(theirs), mask.shape))
