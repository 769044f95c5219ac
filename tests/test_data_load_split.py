"""Tests of `kdmri_jax.data.load_split`: finding the data root, the mask, the embedded default,
SR."""

import numpy as np
import pytest

from configs import default
from kdmri_jax import data
from kdmri_jax.data import phantom
from kdmri_jax.errors import InputError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return phantom.make_dataset(
    str(tmp_path_factory.mktemp("d") / "root"),
    shape=(20, 16),
    accs=("4x", "8x"),
    num_volumes=4,
    num_slices=2,
  )


def _config(**data_fields):
  config = default.get_config()
  config.dataset = "cardiac"
  for key, value in data_fields.items():
    config.data[key] = value
  return config


def test_reconstruction_split_from_a_root(root):
  source = data.load_split(_config(root=root), "train")
  assert len(source) == 6 and source.mask.shape == (20, 16)
  example = source[0]
  assert set(example) == {"input", "target", "kspace", "mask"}
  np.testing.assert_array_equal(source.mask, np.load(f"{root}/masks/mask_4x.npy"))
  assert len(data.load_split(_config(root=root), "validation")) == 2
  batch = next(iter(data.train_batches(source, 2, seed=0, epoch=0)))
  assert batch["kspace"].shape == (2, 20, 16) and batch["kspace"].dtype == np.complex64


def test_mask_path_override_and_missing_mask(root, tmp_path):
  mask = np.load(f"{root}/masks/mask_4x.npy")
  mask[::2] = 1  # a superset of the data's own mask: an override the k-space check accepts
  np.save(tmp_path / "m.npy", mask)
  source = data.load_split(_config(root=root, mask_path=str(tmp_path / "m.npy")), "train")
  np.testing.assert_array_equal(source[1]["mask"], mask)
  with pytest.raises(InputError, match="no undersampling mask"):
    data.load_split(_config(root=root, mask_path=str(tmp_path / "none.npy")), "train")


def test_missing_root_asks_for_prepare():
  with pytest.raises(InputError, match="python -m kdmri_jax.prepare"):
    data.load_split(_config(), "train")


def test_acceleration_without_data(root):
  config = _config(root=root)
  config.acc = "5x"
  with pytest.raises(InputError, match=r"acceleration 5x has no train data.*\['4x', '8x'\]"):
    data.load_split(config, "train")


def test_max_slices_and_super_resolution(root):
  config = _config(root=root, max_slices=3)
  assert len(data.load_split(config, "train")) == 3
  config.task = "super_resolution"
  if "sr" not in config:
    import ml_collections

    config.sr = ml_collections.ConfigDict()
  config.sr.keep = 8
  config.data.max_slices = None
  source = data.load_split(config, "train")
  example = source[0]
  assert set(example) == {"input", "target"} and example["input"].shape == (20, 16)


def test_embedded_brain_default(tmp_path):
  config = default.get_config()
  config.data.cache_dir = str(tmp_path)
  config.data.image_size = 24  # a reduced build; the real one is 240
  config.data.max_slices = 5
  source = data.load_split(config, "validation")
  assert (
    len(source) == 5 and source[0]["target"].shape == (24, 24) and source.mask.shape == (24, 24)
  )
  assert data.embedded_brain_root(str(tmp_path), size=24, accs=("4x",)).startswith(str(tmp_path))
