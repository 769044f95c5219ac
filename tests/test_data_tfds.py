"""Tests of the TFDS array_record builder (kdmri_jax.data.tfds_builder), without TensorFlow."""

import pathlib
import sys

import numpy as np
import pytest

from kdmri_jax.data import phantom, tfds_builder
from kdmri_jax.data.reference import list_volumes
from kdmri_jax.data.sources import ReferenceSource


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return phantom.make_dataset(
    str(tmp_path_factory.mktemp("d") / "root"),
    shape=(16, 12),
    accs=("4x",),
    num_volumes=3,
    num_slices=3,
    split=0.67,
  )


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


@pytest.mark.parametrize("embedded", [False, True])
def test_load_split_reads_tfds_like_h5(root, tmp_path, embedded):
  """The training entry point (`load_split`) gives the same examples from TFDS as from the h5 files,
  both for a prepared root and for the embedded brain default (built at 32×32 here to stay fast)."""
  from configs import default
  from kdmri_jax import data

  def config(source):
    c = default.get_config()
    if embedded:
      c.dataset, c.data.cache_dir, c.data.image_size = "brain", str(tmp_path / "cache"), 32
    else:
      c.dataset, c.data.root = "cardiac", root
    c.data.source = source
    return c

  for split in ("train", "validation"):
    h5, tfds_source = data.load_split(config("h5"), split), data.load_split(config("tfds"), split)
    assert isinstance(tfds_source, tfds_builder.TfdsSource) and len(tfds_source) == len(h5) > 0
    np.testing.assert_array_equal(tfds_source.mask, h5.mask)
    for index in sorted({0, len(h5) // 2, len(h5) - 1}):
      for key in ("input", "target", "kspace", "mask"):
        np.testing.assert_array_equal(tfds_source[index][key], h5[index][key])
  batches = [data.train_batches(s, 2, seed=1, epoch=0) for s in (h5, tfds_source)]
  for a, b in zip(*batches):
    np.testing.assert_array_equal(a["target"], b["target"])
  built_under = tmp_path / "cache" if embedded else pathlib.Path(root)
  # read by its TFDS name
  assert list(built_under.rglob("embedded_4x" if embedded else "cardiac_4x"))
