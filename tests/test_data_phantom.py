"""Tests of the seeded ellipse phantoms (kdmri_jax.data.phantom)."""

import numpy as np

from kdmri_jax.data import phantom, reference


def test_seeded_any_size_in_unit_range():
  a = phantom.phantom_volume((30, 22), 3, seed=4)
  assert a.shape == (3, 30, 22) and a.dtype == np.float32
  assert 0.0 <= a.min() and a.max() <= 1.0 and a.max() > 0.3
  np.testing.assert_array_equal(a, phantom.phantom_volume((30, 22), 3, seed=4))
  assert not np.array_equal(a, phantom.phantom_volume((30, 22), 3, seed=5))
  assert not np.array_equal(a[0], a[2])  # neighbouring slices differ a little
  assert (
    np.abs(a[0] - a[1]).mean() < np.abs(a[0] - phantom.ellipse_phantom((30, 22), seed=9)).mean()
  )


def test_make_dataset_in_reference_layout(tmp_path):
  root = phantom.make_dataset(
    str(tmp_path / "ph"), shape=(24, 20), accs=("4x", "8x"), num_volumes=4, num_slices=2
  )
  train = reference.list_volumes(root, "train", "8x")
  assert len(train) == 3 and len(reference.list_volumes(root, "validation", "4x")) == 1
  assert reference.read_volume(train[0], "8x").shape == (24, 20)
