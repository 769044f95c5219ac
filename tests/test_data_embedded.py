"""Tests of the embedded MNI ICBM152 brain dataset (kdmri_jax.data.embedded), on a reduced build."""

import json
import os
import time

import numpy as np
import pytest

from kdmri_jax import masks
from kdmri_jax.data import embedded, reference
from kdmri_jax.errors import InputError

SMALL = dict(size=32, copies=1, slice_step=6)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
  cache = tmp_path_factory.mktemp("cache")
  start = time.perf_counter()
  root = embedded.ensure(str(cache), accs=("4x",), **SMALL)
  return root, time.perf_counter() - start


def test_builds_quickly_in_the_reference_layout(small_root):
  root, seconds = small_root
  assert seconds < 20
  manifest = json.loads(open(os.path.join(root, "manifest.json")).read())
  assert list(manifest["accelerations"]) == ["4x"] and manifest["shape"] == [32, 32]
  train = reference.list_volumes(root, "train", "4x")
  validation = reference.list_volumes(root, "validation", "4x")
  assert len(train) == 2 and len(validation) == 3  # original + 1 augmented copy; 3 validation slabs
  volume = reference.read_volume(train[0], "4x", require_target=True)
  assert volume.shape == (32, 32) and volume.target.max() == pytest.approx(1.0)
  assert sum(manifest["slices"].values()) == sum(
    reference.read_volume(p).num_slices for p in train + validation
  )
  mask = np.load(os.path.join(root, "masks", "mask_4x.npy"))
  np.testing.assert_allclose(
    volume.kspace, np.fft.fft2(volume.target, norm="ortho") * mask, atol=1e-5
  )


def test_brain_is_in_the_middle_of_the_image(small_root):
  root, _ = small_root
  volume = reference.read_volume(
    reference.list_volumes(root, "validation", "4x")[1], require_target=True
  )
  image = volume.target.mean(axis=0)
  assert image[12:20, 12:20].mean() > 5 * image[:3].mean()


def test_validation_slabs_have_no_training_neighbour(small_root):
  root, _ = small_root
  manifest = json.loads(open(os.path.join(root, "manifest.json")).read())
  train, validation = (np.array(manifest["template_z"][s]) for s in ("train", "validation"))
  assert len(train) and len(validation)
  assert np.abs(train[:, None] - validation[None, :]).min() > embedded.BrainSpec().gap


def test_cache_is_reused_and_extended(small_root):
  root, _ = small_root
  manifest_path = os.path.join(root, "manifest.json")
  first_file = reference.list_volumes(root, "train", "4x")[0]
  stamp = os.path.getmtime(first_file)
  assert embedded.ensure(os.path.dirname(root), accs=("4x",), **SMALL) == root
  assert embedded.ensure(os.path.dirname(root), accs=("4x", "8x"), **SMALL) == root
  assert os.path.getmtime(first_file) == stamp
  assert set(json.load(open(manifest_path))["accelerations"]) == {"4x", "8x"}
  assert len(reference.list_volumes(root, "validation", "8x")) == 3


def test_slab_split_rule():
  area = np.r_[np.zeros(5), np.ones(40), np.zeros(5)]
  train, validation = embedded.select_and_split(area, embedded.BrainSpec(slab=10, gap=3))
  assert [list(s[[0, -1]]) for s in validation] == [[15, 24]]
  assert not set(train) & set(range(12, 28)) and set(train) == set(range(5, 45)) - set(
    range(12, 28)
  )


def test_augmentation_is_seeded_and_changes_the_image():
  rng = np.random.default_rng(0)
  t1, gm, wm = (rng.random((24, 24)).astype(np.float32) for _ in range(3))
  a = embedded.augment(t1, gm, wm, np.random.default_rng([0, 1, 2]))
  np.testing.assert_array_equal(a, embedded.augment(t1, gm, wm, np.random.default_rng([0, 1, 2])))
  assert a.shape == t1.shape and not np.allclose(a, t1)


def test_folder_name_records_the_mask_family_and_non_default_parameters():
  seed = masks.DEFAULT_MASK_SEED
  assert embedded.BrainSpec(size=240).folder_name() == f"mni_icbm152_2009a_240_dccnn_seed{seed}_v2"
  assert (
    embedded.BrainSpec(size=240, mask_seed=3).folder_name()
    == "mni_icbm152_2009a_240_dccnn_seed3_v2"
  )
  gaussian = embedded.BrainSpec(size=240, mask_family="gaussian")
  assert gaussian.folder_name() == f"mni_icbm152_2009a_240_gaussian_seed{seed}_v2"
  assert "copies1" in embedded.BrainSpec(size=32, copies=1).folder_name()


def test_masks_are_the_dccnn_family_by_default_and_recorded(small_root):
  root, _ = small_root
  manifest = json.loads(open(os.path.join(root, "manifest.json")).read())
  assert (
    manifest["mask_family"] == "dccnn" and manifest["accelerations"]["4x"]["mask_family"] == "dccnn"
  )
  np.testing.assert_array_equal(
    np.load(os.path.join(root, "masks", "mask_4x.npy")),
    masks.cartesian_mask((32, 32), "4x", seed=masks.DEFAULT_MASK_SEED, family="dccnn"),
  )


def test_a_cache_of_the_other_family_is_never_reused(small_root):
  root, _ = small_root
  cache = os.path.dirname(root)
  other = embedded.ensure(cache, accs=("4x",), mask_family="gaussian", **SMALL)
  assert other != root and "gaussian" in os.path.basename(other)
  assert json.load(open(os.path.join(other, "manifest.json")))["mask_family"] == "gaussian"
  np.testing.assert_array_equal(
    np.load(os.path.join(other, "masks", "mask_4x.npy")),
    masks.cartesian_mask((32, 32), "4x", seed=masks.DEFAULT_MASK_SEED, family="gaussian"),
  )
  with pytest.raises(InputError, match="config.data.mask_family 'dc' is not one of"):
    embedded.ensure(cache, accs=("4x",), mask_family="dc", **SMALL)
