"""kdmri_jax.subsample: fastMRI's five 1-D masks by their documented properties (no `fastmri`
needed; tests/test_subsample_fastmri.py compares them with the package) and as `masks` families."""

import numpy as np
import pytest

from kdmri_jax import masks, subsample
from kdmri_jax.errors import InputError, run_cli

SEEDS = range(40)


def _centre_run(lines, num_low):
  start = (len(lines) - num_low + 1) // 2
  return lines[start : start + num_low]


@pytest.mark.parametrize("kind", subsample.KINDS)
@pytest.mark.parametrize("num_lines,fraction,acc", [(368, 0.08, 4), (320, 0.04, 8), (33, 0.1, 3)])
def test_every_kind_keeps_fastmris_centre_and_is_seeded(kind, num_lines, fraction, acc):
  lines, num_low = subsample.mask_lines(kind, num_lines, [fraction], [acc], seed=7)
  assert lines.dtype == bool and lines.shape == (num_lines,)
  expected = round(num_lines * fraction)
  if kind == "magic_fraction":  # capped to [1, round(n / acc)]
    expected = max(min(expected, round(num_lines / acc)), 1)
  assert num_low == expected and _centre_run(lines, num_low).all()
  again, _ = subsample.mask_lines(kind, num_lines, [fraction], [acc], seed=7)
  np.testing.assert_array_equal(lines, again)


def test_random_samples_n_over_acc_lines_on_average():
  counts = [subsample.mask_lines("random", 368, [0.08], [4], seed=s)[0].sum() for s in SEEDS]
  assert abs(np.mean(counts) - 368 / 4) < 0.03 * 368 / 4
  assert len(set(counts)) > 1  # independent lines: the count varies between seeds


@pytest.mark.parametrize(
  "kind,acc", [("equispaced", 4), ("equispaced", 8), ("magic", 4), ("magic", 8)]
)
def test_outer_lines_step_by_the_acceleration(kind, acc):
  for seed in range(10):
    lines, num_low = subsample.mask_lines(kind, 320, [0.08], [acc], seed=seed)
    outer = subsample.mask_lines(kind, 320, [0.0], [acc], seed=seed)[0]  # same draws, no centre
    np.testing.assert_array_equal(lines, outer | subsample.centre_lines(320, num_low))
    ky = np.fft.fftshift(np.fft.fftfreq(320, 1 / 320))[outer]
    if kind == "equispaced":
      assert set(np.diff(np.flatnonzero(outer))) == {acc}
    else:  # each side steps by acc, and no ky is sampled together with -ky (offset sampling)
      assert set(np.diff(ky[ky >= 0])) == {acc} and set(np.diff(ky[ky < 0])) == {acc}
      assert not set(ky[ky > 0]) & set(-ky[ky < 0])


def test_equispaced_offset_is_honoured():
  lines, _ = subsample.mask_lines("equispaced", 64, [0.0], [4], seed=0, offset=3)
  np.testing.assert_array_equal(np.flatnonzero(lines), np.arange(3, 64, 4))


@pytest.mark.parametrize("kind", ["equispaced_fraction", "magic_fraction"])
@pytest.mark.parametrize("num_lines,acc", [(368, 4), (320, 8), (640, 5)])
def test_fraction_kinds_reach_about_n_over_acc_lines(kind, num_lines, acc):
  for seed in range(10):
    lines, _ = subsample.mask_lines(kind, num_lines, [0.32 / acc], [acc], seed=seed)
    assert abs(lines.sum() - num_lines / acc) <= 0.1 * num_lines / acc


def test_pairs_are_chosen_per_call_and_any_combination_mixes_them():
  kinds = {subsample.mask_lines("random", 320, [0.08, 0.04], [4, 8], seed=s)[1] for s in SEEDS}
  assert kinds == {26, 13}  # round(320 · 0.08), round(320 · 0.04)
  mixed = {
    subsample.mask_lines(
      "equispaced", 320, [0.08, 0.04], [4, 8], seed=s, allow_any_combination=True
    )[1]
    for s in SEEDS
  }
  assert mixed == {26, 13}


def test_seeds_are_numpy_random_state_seeds():
  name_seed = tuple(map(ord, "file1000001.h5"))  # fastMRI's per-file seed
  a = subsample.mask_lines("random", 368, [0.08], [4], seed=name_seed)[0]
  again = subsample.mask_lines("random", 368, [0.08], [4], seed=name_seed)[0]
  np.testing.assert_array_equal(a, again)
  assert not np.array_equal(a, subsample.mask_lines("random", 368, [0.08], [4], seed=1)[0])


@pytest.mark.parametrize(
  "call,message",
  [
    (lambda: subsample.mask_lines("poisson", 64, [0.08], [4], 0), "is not one of"),
    (lambda: subsample.mask_lines("random", 64, [0.08, 0.04], [4], 0), "pair them"),
    (lambda: subsample.mask_lines("equispaced", 64, [0.08], [2.5], 0), "must be an integer"),
    (lambda: subsample.mask_lines("magic", 64, [0.08], [0.5], 0), "at least 1"),
    (lambda: subsample.mask_lines("random", 64, [1.5], [4], 0), "must lie in"),
    (lambda: subsample.mask_lines("equispaced_fraction", 64, [0.3], [4], 0), "lower the center"),
    (lambda: subsample.mask_lines("magic_fraction", 64, [0.5], [4], 0), "lower the center"),
    (lambda: subsample.mask_lines("random", 64, [0.08], [4], 2**32), "from 0 to 2\\*\\*32 - 1"),
    (lambda: subsample.mask_lines("random", 64, [0.08], [4], (1, -2)), "must be an integer"),
    (lambda: masks.cartesian_mask((8, 64), 4, -1, family="magic"), "mask seed -1"),
  ],
)
def test_bad_parameters_are_one_sentence(call, message):
  with pytest.raises(InputError, match=message):
    call()


@pytest.mark.parametrize("kind", subsample.KINDS)
def test_each_kind_is_a_mask_family_of_whole_lines(kind, capsys):
  assert kind in masks.MASK_FAMILIES and masks.check_family(kind) == kind
  mask = masks.cartesian_mask((24, 368), "4x", seed=3, direction="columns", family=kind)
  lines = np.fft.ifftshift(subsample.family_lines(kind, 368, 4.0, seed=3))  # centre 0.32 / 4 = 8%
  np.testing.assert_array_equal(mask, np.broadcast_to(lines, mask.shape).astype(np.float32))
  stats = masks.mask_statistics(mask)
  assert stats["direction"] == "columns" and stats["lines"] == lines.sum()
  assert (
    run_cli(
      masks.main,
      [
        "--generate",
        "24",
        "368",
        "--acc",
        "4x",
        "--family",
        kind,
        "--direction",
        "columns",
        "--seed",
        "3",
      ],
    )
    == 0
  )
  assert capsys.readouterr().out.strip() == f"{kind} 4x seed 3: {masks.describe(mask)}"
