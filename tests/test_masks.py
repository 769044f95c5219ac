"""Mask generation meets its acceleration and the authors' statistics; loading checks shape and
values; the statistics and the `python -m kdmri_jax.masks` inspection."""

import numpy as np
import pytest
from hypothesis import given

from helpers import line_mask_shape, line_mask_strategies, phantom_argv
from kdmri_jax import masks, masks_2d
from kdmri_jax.errors import InputError, run_cli


@pytest.mark.parametrize(
  "shape,acc,direction",
  [
    ((240, 240), 4, "rows"),
    ((240, 240), 5, "rows"),
    ((240, 240), 8, "rows"),
    ((150, 150), 4, "rows"),
    ((150, 150), 5, "rows"),
    ((640, 368), 8, "columns"),
  ],
)
def test_paper_shapes_hit_the_requested_acceleration(shape, acc, direction):
  mask = masks.cartesian_mask(shape, f"{acc}x", seed=42, direction=direction)
  assert mask.shape == shape and mask.dtype == np.float32
  assert abs(masks.acceleration(mask) - acc) / acc <= 0.02
  assert mask[0, 0] == 1  # unshifted: the k-space centre is sampled and sits at [0, 0]
  lines = mask[:, 0] if direction == "rows" else mask[0, :]
  full = mask.all(axis=1) if direction == "rows" else mask.all(axis=0)
  np.testing.assert_array_equal(lines > 0, full)  # whole lines only


def test_gaussian_family_centre_is_fully_sampled_and_density_falls_off():
  mask = masks.shift(masks.cartesian_mask((240, 240), 4, seed=0, family="gaussian"))
  rows = mask[:, 0]
  assert rows[120 - 9 : 120 + 9].all()  # 8% of 240 = 19 central lines
  assert rows[60:180].mean() > rows[:60].mean()


def test_seeded_and_reproducible():
  a = masks.cartesian_mask((64, 64), 4, seed=1)
  np.testing.assert_array_equal(a, masks.cartesian_mask((64, 64), 4, seed=1))
  assert not np.array_equal(a, masks.cartesian_mask((64, 64), 4, seed=2))


@given(*line_mask_strategies((50, 400), (8, 64), (2.0, 10.0)))
def test_generator_meets_acceleration_for_random_shapes_and_seeds(
  lines, other, acc, seed, direction
):
  lines = max(lines, int(25 * acc))  # the documented regime: n / acc >= 25
  shape = line_mask_shape(lines, other, direction)
  mask = masks.cartesian_mask(shape, acc, seed=seed, direction=direction)
  assert abs(masks.acceleration(mask) - acc) / acc <= 0.02


def test_shift_unshift_roundtrip():
  mask = masks.cartesian_mask((31, 30), 3, seed=0)
  np.testing.assert_array_equal(masks.unshift(masks.shift(mask)), mask)


def test_load_mask_checks(tmp_path):
  good = masks.cartesian_mask((16, 16), 4, seed=0)
  np.save(tmp_path / "good.npy", good)
  np.testing.assert_array_equal(masks.load_mask(tmp_path / "good.npy", (16, 16)), good)
  with pytest.raises(InputError, match="does not exist"):
    masks.load_mask(tmp_path / "missing.npy")
  with pytest.raises(InputError, match=r"shape \(16, 16\) but the images are \(20, 16\)"):
    masks.load_mask(tmp_path / "good.npy", (20, 16))
  np.save(tmp_path / "half.npy", good * 0.5)
  with pytest.raises(InputError, match="not binary"):
    masks.load_mask(tmp_path / "half.npy")
  np.save(tmp_path / "empty.npy", np.zeros((16, 16)))
  with pytest.raises(InputError, match="samples no k-space point"):
    masks.load_mask(tmp_path / "empty.npy")
  np.save(tmp_path / "flat.npy", np.ones(16))
  with pytest.raises(InputError, match="2-D"):
    masks.load_mask(tmp_path / "flat.npy")
  (tmp_path / "text.npy").write_text("not an array")
  with pytest.raises(InputError, match="not a readable .npy"):
    masks.load_mask(tmp_path / "text.npy")


def test_parse_acceleration():
  assert masks.parse_acceleration("8x") == 8.0 and masks.parse_acceleration(5) == 5.0
  with pytest.raises(InputError):
    masks.parse_acceleration("fast")


def test_save_mask_png(tmp_path):
  masks.save_mask_png(masks.cartesian_mask((32, 32), 4), tmp_path / "m.png")
  assert (tmp_path / "m.png").stat().st_size > 0


# --- the "dccnn" family against the authors' brain masks (Bala93/KD-MRI us_masks/mrbrain, 240×240)
# ------

# Measured on the authors' files: sampled rows, contiguous centre rows, mean |ky| of the sampled
# rows.
AUTHORS_BRAIN = {"4x": (60, 12, 37.0), "5x": (48, 9, 28.0), "8x": (30, 11, 20.0)}


@pytest.mark.parametrize("acc", sorted(AUTHORS_BRAIN))
def test_dccnn_family_matches_the_authors_brain_masks_over_seeds(acc):
  lines, centre, mean_ky = AUTHORS_BRAIN[acc]
  stats = [
    masks.mask_statistics(masks.cartesian_mask((240, 240), acc, seed=seed)) for seed in range(20)
  ]
  assert all(s["lines"] == lines and s["direction"] == "rows" for s in stats)  # exact, every seed
  assert abs(np.mean([s["centre_lines"] for s in stats]) - centre) <= 2
  assert abs(np.mean([s["mean_abs_ky"] for s in stats]) - mean_ky) <= 2


def test_dccnn_family_keeps_its_centre_block_and_favours_low_frequencies():
  ky = np.fft.fftfreq(240, 1 / 240)
  rows = np.stack([masks.cartesian_mask((240, 240), "8x", seed=s)[:, 0] for s in range(50)]) > 0
  assert rows[:, (ky >= -5) & (ky <= 4)].all()  # 10 fixed centre rows (ky = -5 … 4) in every draw
  near, far = rows[:, (np.abs(ky) > 5) & (np.abs(ky) <= 30)], rows[:, np.abs(ky) > 60]
  assert near.mean() > 3 * far.mean() > 0  # a Gaussian density over ky plus a uniform floor


def test_dccnn_family_is_seeded_and_the_default():
  a = masks.cartesian_mask((240, 240), 5, seed=4)
  np.testing.assert_array_equal(a, masks.cartesian_mask((240, 240), 5, seed=4, family="dccnn"))
  assert not np.array_equal(a, masks.cartesian_mask((240, 240), 5, seed=5))
  assert masks.DEFAULT_FAMILY == "dccnn" and set(masks.MASK_FAMILIES) == {
    "dccnn",
    "gaussian",
    "random",
    "equispaced",
    "equispaced_fraction",
    "magic",
    "magic_fraction",
    "gaussian_2d",
    "poisson_disc",
  }


def test_gaussian_family_is_still_selectable_and_differs():
  old = masks.mask_statistics(masks.cartesian_mask((240, 240), 4, seed=0, family="gaussian"))
  new = masks.mask_statistics(masks.cartesian_mask((240, 240), 4, seed=0, family="dccnn"))
  assert old["lines"] == new["lines"] == 60
  # 8% of 240 fully sampled in the old family
  assert old["centre_lines"] >= 19 > new["centre_lines"]
  with pytest.raises(InputError, match="mask family 'fastmri' is not one of"):
    masks.cartesian_mask((240, 240), 4, family="fastmri")


@pytest.mark.parametrize(
  "shape,direction", [((64, 64), "rows"), ((150, 150), "rows"), ((640, 368), "columns")]
)
def test_dccnn_family_scales_its_centre_with_the_line_count(shape, direction):
  n = shape[0] if direction == "rows" else shape[1]
  for acc in (4, 5, 8):
    stats = masks.mask_statistics(masks.cartesian_mask(shape, acc, seed=1, direction=direction))
    assert stats["direction"] == direction and stats["lines"] == round(n / acc)
    assert stats["centre_lines"] >= max(1, round(8 * n / 240))  # at least the scaled fixed block
    assert stats["mean_abs_ky"] < n / 4  # a uniform choice of lines would give about n / 4


def test_mask_statistics_of_a_hand_made_mask():
  ky = [0, 1, 2, -1, 10, -20]  # a run of 4 through ky = 0 (-1 … 2), wrapping around index 0
  mask = np.zeros((40, 7), np.float32)
  mask[[k % 40 for k in ky]] = 1
  stats = masks.mask_statistics(mask)
  assert stats["direction"] == "rows" and stats["lines"] == 6 and stats["num_lines"] == 40
  assert stats["centre_lines"] == 4 and stats["mean_abs_ky"] == pytest.approx(34 / 6)
  assert stats["acceleration"] == pytest.approx(40 / 6)
  assert masks.mask_statistics(mask.T)["direction"] == "columns"
  mask[5, 3] = 1  # a point that is not a whole line
  assert "lines" not in masks.mask_statistics(mask)


def test_inspection_cli_prints_the_statistics(tmp_path, capsys):
  mask = np.zeros((40, 40), np.float32)
  mask[[0, 1, 39, 20]] = 1
  np.save(tmp_path / "m.npy", mask)
  assert (
    run_cli(
      masks.main,
      [
        "--mask",
        str(tmp_path / "m.npy"),
        "--generate",
        "240",
        "240",
        "--acc",
        "8x",
        "--family",
        "gaussian",
        "--seed",
        "0",
      ],
    )
    == 0
  )
  out = capsys.readouterr().out.splitlines()
  assert out[0].endswith("40×40: 4/40 rows, 10.00x, 3 contiguous centre lines, mean |ky| 5.5")
  assert out[1].startswith("gaussian 8x seed 0: 240×240: 30/240 rows, 8.00x")
  assert run_cli(masks.main, []) == 2 and "nothing to inspect" in capsys.readouterr().err


def test_inspection_cli_generates_the_default_masks_by_default(capsys):
  assert run_cli(masks.main, ["--generate", "240", "240", "--acc", "4x"]) == 0
  expected = masks.describe(masks.cartesian_mask((240, 240), "4x", seed=masks.DEFAULT_MASK_SEED))
  assert capsys.readouterr().out.strip() == f"dccnn 4x seed {masks.DEFAULT_MASK_SEED}: {expected}"


def test_default_mask_seed_gives_the_authors_brain_statistics():
  """The default draw (DEFAULT_MASK_SEED) itself, not only the average over seeds, is within ±2 of
  the authors' 240×240 brain masks (measured from their us_masks/mrbrain/)."""
  authors = {"4x": (60, 12, 37.0), "5x": (48, 9, 28.3), "8x": (30, 11, 20.5)}
  for acc, (lines, centre, mean_ky) in authors.items():
    stats = masks.mask_statistics(
      masks.cartesian_mask((240, 240), acc, seed=masks.DEFAULT_MASK_SEED)
    )
    assert stats["lines"] == lines
    assert abs(stats["centre_lines"] - centre) <= 2, (acc, stats)
    assert abs(stats["mean_abs_ky"] - mean_ky) <= 2, (acc, stats)


# --- 2-D point masks (kdmri_jax.masks_2d): "gaussian_2d" and "poisson_disc" -----------------------

POINT_FAMILIES = ("gaussian_2d", "poisson_disc")


@pytest.mark.parametrize("family", POINT_FAMILIES)
@pytest.mark.parametrize("shape,acc", [((64, 64), 4), ((64, 64), 8), ((48, 80), 5), ((33, 40), 3)])
def test_point_families_sample_exactly_hw_over_acc_points_with_a_full_centre(family, shape, acc):
  mask = masks.cartesian_mask(shape, f"{acc}x", seed=2, family=family)
  assert mask.shape == shape and mask.dtype == np.float32 and mask[0, 0] == 1
  assert mask.sum() == round(shape[0] * shape[1] / acc)
  assert abs(masks.acceleration(mask) - acc) / acc <= 0.02
  centred = masks.shift(mask)
  side_h, side_w = (max(1, round(0.32 / acc * n)) for n in shape)  # the default centre: 0.32 / acc
  top, left = shape[0] // 2 - side_h // 2, shape[1] // 2 - side_w // 2
  assert centred[top : top + side_h, left : left + side_w].all()
  assert masks.sampled_lines(mask) is None  # points, not whole lines


@pytest.mark.parametrize("family", POINT_FAMILIES)
def test_point_families_are_seeded_and_denser_at_the_centre(family):
  a = masks.cartesian_mask((64, 64), "4x", seed=5, family=family)
  np.testing.assert_array_equal(a, masks.cartesian_mask((64, 64), "4x", seed=5, family=family))
  assert not np.array_equal(a, masks.cartesian_mask((64, 64), "4x", seed=6, family=family))
  np.testing.assert_array_equal(
    a, masks.cartesian_mask((64, 64), "4x", seed=5, direction="columns", family=family)
  )  # direction is not used
  rho = masks_2d.normalised_radius((64, 64))
  centred = masks.shift(a) > 0
  inner, outer = centred[(rho > 0.1) & (rho < 0.4)].mean(), centred[rho > 0.8].mean()
  assert inner > 2 * outer > 0


def _too_close_pairs(points, radius):
  """Pairs of (y, x) `points` closer than the mean of their radii."""
  points = np.asarray(points)
  distance2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
  bound2 = ((radius[:, None] + radius[None, :]) / 2) ** 2
  close = (distance2 < bound2 - 1e-9) & ~np.eye(len(points), dtype=bool)
  return int(close.sum()) // 2


@pytest.mark.parametrize("shape,acc,seed", [((64, 64), 4, 0), ((64, 64), 8, 1), ((40, 72), 5, 2)])
def test_poisson_disc_points_keep_their_minimum_distance(shape, acc, seed):
  """Any two sampled points outside the centre block are at least (R(p) + R(q)) / 2 apart, R growing
  outwards (above 1.5 samples at the edges); the draw is saturated (hardly a gap left for one more
  point: those of the few dropped to reach the count); a point added next to an outer one breaks
  the property."""
  disc = masks_2d.poisson_disc(shape, acc, seed)
  points = np.argwhere(disc.mask & ~disc.centre)
  radius = disc.radius[points[:, 0], points[:, 1]]
  assert _too_close_pairs(points, radius) == 0
  rho = masks_2d.normalised_radius(shape)
  assert disc.radius[rho > 0.9].min() > max(disc.radius[rho < 0.1].max(), 1.5)
  free = np.argwhere(~disc.mask & ~disc.centre)  # saturated: hardly a free point fits in any gap
  gap2 = ((free[:, None, :] - points[None, :, :]) ** 2).sum(-1)
  fits = gap2 >= ((disc.radius[tuple(free.T)][:, None] + radius[None, :]) / 2) ** 2
  assert fits.all(axis=1).sum() <= 0.05 * len(points)
  y, x = points[np.argmax(radius)]  # an outer point: its 4 neighbours are not sampled
  extra = next(
    (y + dy, x + dx)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))
    if 0 <= y + dy < shape[0] and 0 <= x + dx < shape[1]
  )
  assert not disc.mask[extra]
  assert (
    _too_close_pairs(np.concatenate([points, [extra]]), np.append(radius, disc.radius[extra])) >= 1
  )


def test_parallel_dart_throwing_equals_the_sequential_pass():
  """`masks_2d.dart_throwing` (parallel rounds) keeps exactly what one pass in rank order keeps, for
  arbitrary radii and candidates (a plain loop written here as the reference)."""
  rng = np.random.default_rng(0)
  shape = (20, 24)
  candidates, radius = rng.random(shape) > 0.2, 1.0 + 2.5 * rng.random(shape)
  rank = rng.permutation(20 * 24).reshape(shape)
  kept = []
  for y, x in zip(*np.unravel_index(np.argsort(rank, axis=None), shape)):
    apart = (
      4 * ((y - a) ** 2 + (x - b) ** 2) >= (radius[y, x] + radius[a, b]) ** 2 for a, b in kept
    )
    if candidates[y, x] and all(apart):
      kept.append((y, x))
  expected = np.zeros(shape, dtype=bool)
  expected[tuple(np.array(kept).T)] = True
  np.testing.assert_array_equal(masks_2d.dart_throwing(candidates, radius, rank), expected)


def test_point_mask_statistics_and_inspection(capsys):
  mask = masks.cartesian_mask((64, 64), "4x", seed=1, family="poisson_disc")
  stats = masks.mask_statistics(mask)
  assert "lines" not in stats and stats["sampled_points"] == 1024 and stats["acceleration"] == 4.0
  assert stats["centre_block"] >= 5  # the 5×5 block of 8% of 64 (ky, kx = -2 … 2)
  ky, kx = np.meshgrid(np.fft.fftfreq(64, 1 / 64), np.fft.fftfreq(64, 1 / 64), indexing="ij")
  assert stats["mean_abs_k"] == pytest.approx(np.hypot(ky, kx)[mask > 0].mean())
  hand = np.zeros((9, 9), np.float32)
  hand[np.ix_([0, 1, 8], [0, 1, 8])] = 1  # the 3×3 around ky = kx = 0, unshifted
  hand[4, 4] = 1
  assert masks.mask_statistics(hand)["centre_block"] == 3
  hand[1, 1] = 0
  assert masks.mask_statistics(hand)["centre_block"] == 1
  assert (
    run_cli(
      masks.main,
      [
        "--generate",
        "64",
        "64",
        "--acc",
        "4x",
        "--seed",
        "1",
        "--family",
        "poisson_disc",
        "gaussian_2d",
      ],
    )
    == 0
  )
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f"poisson_disc 4x seed 1: {masks.describe(mask)}"
  assert out[0].endswith(
    f"1024 points (2-D), 4.00x, fully sampled centre {stats['centre_block']}×"
    f"{stats['centre_block']}, mean |k| {stats['mean_abs_k']:.1f}"
  )
  assert out[1].startswith("gaussian_2d 4x seed 1: 64×64: 1024 points (2-D), 4.00x")
  assert run_cli(masks.main, ["--generate", "32", "32", "--acc", "4x", "--family", "all"]) == 0
  printed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
  assert printed == list(masks.MASK_FAMILIES)
  assert run_cli(masks.main, ["--generate", "32", "32", "--family", "poisson"]) == 2
  assert "--family 'poisson' is not one of" in capsys.readouterr().err


def test_point_mask_errors_are_one_sentence():
  with pytest.raises(InputError, match="fully sampled centre exceeds"):
    masks.cartesian_mask((16, 16), "8x", family="gaussian_2d", center_fraction=0.5)
  with pytest.raises(InputError, match="center fraction 1.5 must lie in"):
    masks.cartesian_mask((16, 16), "4x", family="poisson_disc", center_fraction=1.5)


@pytest.mark.parametrize("family", POINT_FAMILIES + ("equispaced_fraction",))
def test_new_families_go_through_prepare_and_training_data(tmp_path, family, capsys):
  """prepare --mask-family writes the family's mask, k-space only where it samples, and the training
  data (with its k-space check against the mask) and one data-consistency step accept it."""
  import json

  from configs import default
  from kdmri_jax import data, fft, prepare

  out = tmp_path / "root"
  argv = phantom_argv(out, "--mask-family", family, size=32, dataset="cardiac")
  assert run_cli(prepare.main, argv) == 0
  assert f"masks ({family})" in capsys.readouterr().out
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["mask_family"] == family and manifest["masks"]["4x"]["family"] == family
  mask = np.load(out / "masks" / "mask_4x.npy")
  expected = masks.cartesian_mask((32, 32), "4x", seed=masks.DEFAULT_MASK_SEED, family=family)
  np.testing.assert_array_equal(mask, expected)
  config = default.get_config()
  config.dataset, config.acc, config.data.root = "cardiac", "4x", str(out)
  example = data.load_split(config, "train")[0]
  assert np.all(example["kspace"][mask == 0] == 0)
  dc = fft.data_consistency(example["input"], example["kspace"], mask, keep_complex=True)
  np.testing.assert_allclose(
    np.fft.fft2(np.asarray(dc), norm="ortho")[mask > 0], example["kspace"][mask > 0], atol=1e-5
  )
