"""Tests of the fastMRI single-coil reader (kdmri_jax.data.fastmri) on a small generated file."""

import h5py
import numpy as np
import pytest

from kdmri_jax.data import fastmri
from kdmri_jax.errors import InputError

HEADER = (
  "<ismrmrdHeader><encoding><encodedSpace><matrixSize><x>32</x><y>20</y><z>1</z></matrixSize>"
  "</encodedSpace><reconSpace><matrixSize><x>16</x><y>16</y><z>1</z></matrixSize></reconSpace>"
  "</encoding></ismrmrdHeader>"
)


def fft2c(image):
  shifted = np.fft.ifftshift(image, axes=(-2, -1))
  return np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1))


def _file(tmp_path, multicoil=False):
  image = np.random.default_rng(0).random((3, 32, 20)).astype(np.float32)
  kspace = fft2c(image).astype(np.complex64)
  path = tmp_path / "file1000.h5"
  with h5py.File(path, "w") as f:
    f["kspace"] = np.stack([kspace] * 2, axis=1) if multicoil else kspace
    f["reconstruction_esc"] = image[:, 8:24, 2:18]
    f["ismrmrd_header"] = HEADER
  return path, image


def test_kspace_target_inverts_the_centred_fft(tmp_path):
  path, image = _file(tmp_path)
  assert fastmri.is_fastmri(str(path))
  volume = fastmri.read_fastmri(str(path), target="kspace")
  np.testing.assert_allclose(volume, image, atol=1e-5)
  cropped = fastmri.read_fastmri(str(path), target="kspace", crop=(16, 16))
  np.testing.assert_allclose(cropped, image[:, 8:24, 2:18], atol=1e-5)


def test_esc_target_is_the_default(tmp_path):
  path, image = _file(tmp_path)
  volume = fastmri.read_fastmri(str(path))
  assert volume.shape == (3, 16, 16)
  np.testing.assert_allclose(volume, image[:, 8:24, 2:18])


def test_header_sizes():
  assert fastmri.header_sizes(HEADER) == {"encoded": (32, 20), "recon": (16, 16)}


def test_errors(tmp_path):
  path, _ = _file(tmp_path, multicoil=True)
  with pytest.raises(InputError, match="only single-coil"):
    fastmri.read_fastmri(str(path), target="kspace")
  with pytest.raises(InputError, match="no key 'reconstruction_rss'"):
    fastmri.read_fastmri(str(path), target="rss")
