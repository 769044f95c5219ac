"""Tests of the plain volume readers (kdmri_jax.data.volumes): NIfTI, .npy, h5 with a key."""

import h5py
import nibabel as nib
import numpy as np
import pytest

from kdmri_jax.data import volumes
from kdmri_jax.errors import InputError


def _array(shape=(12, 10, 4)):
  return np.random.default_rng(0).random(shape).astype(np.float32) + 0.1


def test_nifti_slices_along_the_last_axis(tmp_path):
  data = _array()
  nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
  volume = volumes.read_any(str(tmp_path / "v.nii.gz"))
  assert volume.shape == (4, 12, 10) and volume.dtype == np.float32
  np.testing.assert_allclose(volume[2], data[:, :, 2])
  assert volumes.read_any(str(tmp_path / "v.nii.gz"), slice_axis=0).shape == (12, 10, 4)


def test_npy_slices_first_and_complex_becomes_magnitude(tmp_path):
  data = _array((3, 8, 6)) * np.exp(1j * 0.3)
  np.save(tmp_path / "v.npy", data)
  volume = volumes.read_any(str(tmp_path / "v.npy"))
  assert volume.shape == (3, 8, 6)
  np.testing.assert_allclose(volume, np.abs(data), rtol=1e-6)
  np.save(tmp_path / "s.npy", data[0].real)  # a single 2-D slice
  assert volumes.read_any(str(tmp_path / "s.npy")).shape == (1, 8, 6)


def test_h5_named_key(tmp_path):
  with h5py.File(tmp_path / "v.h5", "w") as f:
    f["image"] = _array((2, 8, 8))
    f["other"] = np.zeros(3)
  assert volumes.read_any(str(tmp_path / "v.h5"), key="image").shape == (2, 8, 8)
  with pytest.raises(InputError, match="several arrays.*--key"):
    volumes.read_any(str(tmp_path / "v.h5"))
  with pytest.raises(InputError, match="no key 'missing'"):
    volumes.read_any(str(tmp_path / "v.h5"), key="missing")


def test_reference_volfs_is_slices_last(tmp_path):
  with h5py.File(tmp_path / "r.h5", "w") as f:
    f["volfs"] = _array((8, 6, 5))
  assert volumes.read_h5(str(tmp_path / "r.h5"), "volfs").shape == (5, 8, 6)


@pytest.mark.parametrize("bad, message", [
    (np.full((2, 4, 4), np.nan, np.float32), "NaN or Inf"),
    (np.zeros((2, 2, 2, 2), np.float32), "expected a 2-D slice or a 3-D volume"),
    (np.array(["a", "b"]), "expected numbers"),
])
def test_bad_arrays(tmp_path, bad, message):
  np.save(tmp_path / "bad.npy", bad)
  with pytest.raises(InputError, match=message):
    volumes.read_any(str(tmp_path / "bad.npy"))


def test_unreadable_and_unsupported_files(tmp_path):
  (tmp_path / "x.nii").write_text("nope")
  with pytest.raises(InputError, match="not a readable NIfTI"):
    volumes.read_any(str(tmp_path / "x.nii"))
  (tmp_path / "x.txt").write_text("nope")
  with pytest.raises(InputError, match="not a supported volume file"):
    volumes.read_any(str(tmp_path / "x.txt"))


def test_find_files_and_empty_folder(tmp_path):
  (tmp_path / "sub").mkdir()
  np.save(tmp_path / "sub" / "a.npy", _array((1, 4, 4)))
  (tmp_path / "notes.txt").write_text("")
  assert [p.split("/")[-1] for p in volumes.find_files(str(tmp_path))] == ["a.npy"]
  (tmp_path / "empty").mkdir()
  with pytest.raises(InputError, match="holds no volume files"):
    volumes.find_files(str(tmp_path / "empty"))


def test_normalise_and_crop():
  volume = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6) + 1
  assert volumes.normalise(volume).max() == 1.0
  with pytest.raises(InputError, match="all zeros"):
    volumes.normalise(np.zeros((1, 2, 2)))
  cropped = volumes.centre_crop_or_pad(volume, (2, 8))
  assert cropped.shape == (2, 2, 8)
  np.testing.assert_array_equal(cropped[:, :, 1:7], volume[:, 1:3, :])
  assert cropped[:, :, 0].sum() == 0


def test_slice_index_over_volumes(tmp_path):
  np.save(tmp_path / "a.npy", _array((3, 6, 6)) * 5)
  np.save(tmp_path / "b.npy", _array((2, 6, 6)))
  index = volumes.SliceIndex([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
  assert len(index) == 5 and index.locate(3) == ("b", 0)
  assert index[0]["target"].shape == (6, 6)
  assert max(index[i]["target"].max() for i in range(3)) == pytest.approx(1.0)  # per-volume max
