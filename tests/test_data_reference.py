"""Tests of the reference h5 layout reader/writer (kdmri_jax.data.reference)."""

import h5py
import numpy as np
import pytest

from kdmri_jax.data import reference
from kdmri_jax.errors import InputError


def _volume(slices=3, shape=(16, 12), seed=0):
  rng = np.random.default_rng(seed)
  target = rng.random((slices,) + shape).astype(np.float32)
  kspace = np.fft.fft2(target, norm="ortho").astype(np.complex64)
  return target, np.abs(target[::-1]).astype(np.float32), kspace


def test_write_read_round_trip_slices_first(tmp_path):
  target, image, kspace = _volume()
  path = tmp_path / "v.h5"
  reference.write_volume(path, target, image, kspace, "4x")
  with h5py.File(path) as f:  # the file holds H×W×S, slices last
    assert f["volfs"].shape == (16, 12, 3)
    assert f["kspace_volus_4x"].dtype == np.complex64
  volume = reference.read_volume(path)
  assert (
    volume.acc == "4x"
    and volume.name == "v"
    and volume.num_slices == 3
    and volume.shape == (16, 12)
  )
  np.testing.assert_array_equal(volume.target, target)
  np.testing.assert_array_equal(volume.input, image)
  np.testing.assert_array_equal(volume.kspace, kspace)


def test_knee_single_slice_and_channel_kspace(tmp_path):
  target, image, kspace = _volume(slices=1)
  path = tmp_path / "knee.h5"
  with h5py.File(path, "w") as f:  # a 2-D knee file with k-space as a trailing real/imag axis
    f["volfs"] = target[0]
    f["img_volus_8x"] = image[0]
    f["kspace_volus_8x"] = np.stack([kspace[0].real, kspace[0].imag], axis=-1)
  volume = reference.read_volume(path, "8x", require_target=True)
  assert volume.input.shape == (1, 16, 12)
  np.testing.assert_allclose(volume.kspace, kspace, atol=1e-6)


def test_squeeze_writes_two_dimensional_arrays(tmp_path):
  target, image, kspace = _volume(slices=1)
  reference.write_volume(tmp_path / "k.h5", target, image, kspace, "4x", squeeze=True)
  with h5py.File(tmp_path / "k.h5") as f:
    assert f["img_volus_4x"].shape == (16, 12)
  assert reference.read_volume(tmp_path / "k.h5").num_slices == 1


def test_missing_target_is_allowed_unless_required(tmp_path):
  _, image, kspace = _volume()
  reference.write_volume(tmp_path / "t.h5", None, image, kspace, "5x")
  assert reference.read_volume(tmp_path / "t.h5").target is None
  with pytest.raises(InputError, match="volfs"):
    reference.read_volume(tmp_path / "t.h5", require_target=True)


def test_several_accelerations_need_a_choice(tmp_path):
  target, image, kspace = _volume()
  path = tmp_path / "v.h5"
  reference.write_volume(path, target, image, kspace, "4x")
  with h5py.File(path, "a") as f:
    f["img_volus_8x"] = f["img_volus_4x"][()]
    f["kspace_volus_8x"] = f["kspace_volus_4x"][()]
  with pytest.raises(InputError, match=r"several accelerations \['4x', '8x'\].*--acc"):
    reference.read_volume(path)
  assert reference.read_volume(path, "8x").acc == "8x"


@pytest.mark.parametrize(
  "mutate, message",
  [
    (lambda f: f.__delitem__("kspace_volus_4x"), "no key 'kspace_volus_4x'"),
    (
      lambda f: (
        f.__delitem__("kspace_volus_4x"),
        f.create_dataset("kspace_volus_4x", data=np.zeros((16, 10, 3), np.complex64)),
      ),
      "must match",
    ),
    (
      lambda f: (f.__delitem__("volfs"), f.create_dataset("volfs", data=np.zeros((8, 12, 3)))),
      "must match",
    ),
    (lambda f: f["img_volus_4x"].__setitem__((0, 0, 0), np.nan), "NaN or Inf"),
    (lambda f: f["kspace_volus_4x"].__setitem__((0, 0, 1), np.inf), "NaN or Inf"),
  ],
)
def test_bad_files_raise_one_clear_error(tmp_path, mutate, message):
  target, image, kspace = _volume()
  path = tmp_path / "bad.h5"
  reference.write_volume(path, target, image, kspace, "4x")
  with h5py.File(path, "a") as f:
    mutate(f)
  with pytest.raises(InputError, match=message) as error:
    reference.read_volume(path, "4x")
  assert str(path) in str(error.value)


def test_not_hdf5_and_no_reference_keys(tmp_path):
  (tmp_path / "x.h5").write_text("not hdf5")
  with pytest.raises(InputError, match="not a readable HDF5"):
    reference.read_volume(tmp_path / "x.h5")
  with h5py.File(tmp_path / "y.h5", "w") as f:
    f["data"] = np.zeros((4, 4))
  with pytest.raises(InputError, match="not in the KD-MRI reference layout"):
    reference.read_volume(tmp_path / "y.h5")


def test_list_volumes_and_its_errors(tmp_path):
  target, image, kspace = _volume()
  for name in ("b", "a"):
    reference.write_volume(
      tmp_path / "train" / "acc_4x" / f"{name}.h5", target, image, kspace, "4x"
    )
  assert [p.split("/")[-1] for p in reference.list_volumes(tmp_path, "train", "4x")] == [
    "a.h5",
    "b.h5",
  ]
  with pytest.raises(InputError, match=r"acceleration 8x has no train data.*\['4x'\]"):
    reference.list_volumes(tmp_path, "train", "8x")
  (tmp_path / "train" / "acc_5x").mkdir()
  with pytest.raises(InputError, match="holds no .h5 files"):
    reference.list_volumes(tmp_path, "train", "5x")
  with pytest.raises(InputError, match="no 'validation' folder"):
    reference.list_volumes(tmp_path, "validation", "4x")
  with pytest.raises(InputError, match="does not exist"):
    reference.list_volumes(tmp_path / "nowhere", "train", "4x")
