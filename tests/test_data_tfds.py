"""Tests of the TFDS array_record builder (kdmri_jax.data.tfds_builder), without TensorFlow."""

import sys

import numpy as np
import pytest

from kdmri_jax.data import phantom, tfds_builder
from kdmri_jax.data.sources import ReferenceSource
from kdmri_jax.data.reference import list_volumes


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return phantom.make_dataset(str(tmp_path_factory.mktemp("d") / "root"), shape=(16, 12), accs=("4x",),
                              num_volumes=3, num_slices=3, split=0.67)


def test_build_and_read_by_name(root, tmp_path):
  import tensorflow_datasets as tfds
  builder = tfds_builder.build(root, "cardiac", "4x", data_dir=str(tmp_path))
  assert builder.info.splits["train"].num_examples == 6
  by_name = tfds.data_source("kdmri_mri/cardiac_4x", data_dir=str(tmp_path))
  assert len(by_name["validation"]) == 3
  assert list(tmp_path.rglob("*.array_record-*"))
  assert "tensorflow" not in sys.modules


def test_source_matches_the_h5_files(root, tmp_path):
  mask = np.load(f"{root}/masks/mask_4x.npy")
  source = tfds_builder.load_source(root, "train", "4x", mask=mask)
  reference = ReferenceSource(list_volumes(root, "train", "4x"), "4x", mask)
  assert len(source) == len(reference) == 6 and source.shape == (16, 12)
  for index in range(6):
    for key in ("input", "target", "kspace", "mask"):
      np.testing.assert_array_equal(source[index][key], reference[index][key])
    assert source.locate(index) == reference.locate(index)
  assert source.volume_ranges() == reference.volume_ranges()
  assert source[0]["kspace"].dtype == np.complex64
