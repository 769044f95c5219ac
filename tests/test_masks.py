"""Mask generation meets its acceleration; loading checks shape and values."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from kdmri_jax import masks
from kdmri_jax.errors import InputError


@pytest.mark.parametrize("shape,acc,direction", [((240, 240), 4, "rows"), ((240, 240), 5, "rows"),
                                                 ((240, 240), 8, "rows"), ((150, 150), 4, "rows"),
                                                 ((150, 150), 5, "rows"), ((640, 368), 8, "columns")])
def test_paper_shapes_hit_the_requested_acceleration(shape, acc, direction):
  mask = masks.cartesian_mask(shape, f"{acc}x", seed=42, direction=direction)
  assert mask.shape == shape and mask.dtype == np.float32
  assert abs(masks.acceleration(mask) - acc) / acc <= 0.02
  assert mask[0, 0] == 1  # unshifted: the k-space centre is sampled and sits at [0, 0]
  lines = mask[:, 0] if direction == "rows" else mask[0, :]
  full = mask.all(axis=1) if direction == "rows" else mask.all(axis=0)
  np.testing.assert_array_equal(lines > 0, full)  # whole lines only


def test_centre_is_fully_sampled_and_density_falls_off():
  mask = masks.shift(masks.cartesian_mask((240, 240), 4, seed=0))
  rows = mask[:, 0]
  assert rows[120 - 9:120 + 9].all()  # 8% of 240 = 19 central lines
  assert rows[60:180].mean() > rows[:60].mean()


def test_seeded_and_reproducible():
  a = masks.cartesian_mask((64, 64), 4, seed=1)
  np.testing.assert_array_equal(a, masks.cartesian_mask((64, 64), 4, seed=1))
  assert not np.array_equal(a, masks.cartesian_mask((64, 64), 4, seed=2))


@given(st.integers(50, 400), st.integers(8, 64), st.floats(2.0, 10.0), st.integers(0, 2**31 - 1),
       st.sampled_from(masks.DIRECTIONS))
def test_generator_meets_acceleration_for_random_shapes_and_seeds(lines, other, acc, seed, direction):
  lines = max(lines, int(25 * acc))  # the documented regime: n / acc >= 25
  shape = (lines, other) if direction == "rows" else (other, lines)
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
