"""Tests of the plain volume readers (kdmri_jax.data.volumes): NIfTI, .npy, h5/.mat with a key."""

import json
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from kdmri_jax.data import reference, volumes
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


@pytest.mark.parametrize(
  "bad, message",
  [
    (np.full((2, 4, 4), np.nan, np.float32), "NaN or Inf"),
    (np.zeros((2, 2, 2, 2), np.float32), "expected a 2-D slice or a 3-D volume"),
    (np.array(["a", "b"]), "expected numbers"),
  ],
)
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


# --- MATLAB .mat: v5 through scipy, v7.3 (HDF5, column-major) through h5py ------------------------

_MATLAB_CLASSES = {
  np.dtype(np.float64): "double",
  np.dtype(np.float32): "single",
  np.dtype(np.int16): "int16",
  np.dtype(np.uint8): "uint8",
}


def _matlab_header() -> bytes:
  """The 128 bytes MATLAB writes into a v7.3 file's 512-byte userblock: text, subsystem offset,
  version 0x0200, endian indicator 'IM'."""
  text = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
    b"HDF5 schema 1.00 ."
  )
  return text.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM"


def _save_mat73(path, variables):
  """A file laid out as MATLAB's `save -v7.3`: each array written transposed (MATLAB is
  column-major), a MATLAB_class attribute, complex as a ('real', 'imag') compound, a struct as a
  group, behind the userblock header."""
  with h5py.File(path, "w", userblock_size=512) as f:
    for name, value in variables.items():
      if isinstance(value, dict):
        group = f.create_group(name)
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        for field, array in value.items():
          group[field] = np.asarray(array).T
        continue
      value = np.asarray(value)
      if np.iscomplexobj(value):
        parts = value.real.dtype
        compound = np.empty(value.shape, [("real", parts), ("imag", parts)])
        compound["real"], compound["imag"] = value.real, value.imag
        data, matlab_class = compound, _MATLAB_CLASSES[parts]
      elif value.dtype.kind == "U":  # MATLAB char arrays are uint16 codes
        data = np.array([ord(c) for c in str(value)], np.uint16)[:, None]
        matlab_class = "char"
      else:
        data, matlab_class = value, _MATLAB_CLASSES[value.dtype]
      f.create_dataset(name, data=data.T).attrs["MATLAB_class"] = np.bytes_(matlab_class)
  with open(path, "r+b") as handle:
    handle.write(_matlab_header())


def _save_mat(path, version, variables):
  """`variables` as a .mat file of `version` ('v5': scipy.io.savemat; 'v7.3': `_save_mat73`)."""
  if version == "v5":
    scipy.io.savemat(path, variables)
  else:
    _save_mat73(path, variables)
  return str(path)


def _knee_like(shape=(10, 8, 3), seed=0):
  """An H×W×S complex volume, as MATLAB users store knee data (slices last)."""
  rng = np.random.default_rng(seed)
  return rng.random(shape) * np.exp(1j * rng.random(shape)) + 0.1


def test_mat73_fixture_looks_like_matlab(tmp_path):
  volume = _knee_like()
  _save_mat73(tmp_path / "v.mat", {"img": volume})
  head = (tmp_path / "v.mat").read_bytes()[:128]
  assert head.startswith(b"MATLAB 7.3 MAT-file") and head[-2:] == b"IM"
  assert h5py.is_hdf5(tmp_path / "v.mat") and volumes.is_mat73(str(tmp_path / "v.mat"))
  with h5py.File(tmp_path / "v.mat") as f:
    assert f["img"].shape == (3, 8, 10)  # what h5py sees: MATLAB's H×W×S reversed
    assert f["img"].attrs["MATLAB_class"] == b"double"
  scipy.io.savemat(tmp_path / "v5.mat", {"img": volume})
  assert not volumes.is_mat73(str(tmp_path / "v5.mat"))


@pytest.mark.parametrize("version", ["v5", "v7.3"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128, np.int16])
def test_mat_volumes_read_equal_the_originals(tmp_path, version, dtype):
  original = _knee_like()
  if not np.issubdtype(dtype, np.complexfloating):
    original = original.real * (1000 if dtype == np.int16 else 1)
  original = original.astype(dtype)
  path = _save_mat(tmp_path / "knee.mat", version, {"img": original, "other": np.arange(4.0)})
  volume = volumes.read_any(path, key="img")
  assert volume.shape == (3, 10, 8) and volume.dtype == np.float32
  for s in range(3):  # slice s of MATLAB's img(:, :, s)
    np.testing.assert_allclose(volume[s], np.abs(original[:, :, s]), rtol=1e-6)
  np.testing.assert_allclose(
    volumes.read_any(path, key="img", slice_axis=0)[4], np.abs(original[4]), rtol=1e-6
  )


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_mat_single_variable_and_single_slice(tmp_path, version):
  image = _knee_like((6, 5, 1))[..., 0].real
  volume = volumes.read_any(_save_mat(tmp_path / "slice.mat", version, {"x": image}))  # no --key
  assert volume.shape == (1, 6, 5)
  np.testing.assert_allclose(volume[0], image, rtol=1e-6)


@pytest.mark.parametrize("version", ["v5", "v7.3"])
@pytest.mark.parametrize(
  "variables, key, message",
  [
    (
      {"img": np.ones((4, 4, 2)), "b": np.ones(2)},
      None,
      r"holds several arrays \['b', 'img'\]; choose one",
    ),
    ({"img": np.ones((4, 4, 2))}, "volume", r"has no key 'volume' \(keys: \['img'\]\)"),
    ({"s": {"data": np.ones((4, 4))}}, "s", r"\(key 's'\) is a MATLAB struct, not a numeric array"),
    ({"name": np.array("knee")}, "name", r"\(key 'name'\) is a MATLAB char, not a numeric array"),
    (
      {"img": np.ones((4, 4, 2, 3))},
      "img",
      r"\(key 'img'\): the volume has shape \(4, 4, 2, 3\); expected",
    ),
    ({"img": np.full((4, 4, 2), np.nan)}, "img", r"\(key 'img'\): the volume contains NaN or Inf"),
  ],
)
def test_bad_mat_inputs_name_file_and_key(tmp_path, version, variables, key, message):
  path = _save_mat(tmp_path / "bad.mat", version, variables)
  with pytest.raises(InputError, match=message) as error:
    volumes.read_any(path, key=key)
  assert str(error.value).startswith(path) and str(error.value).count(". ") == 0


def test_mat_cells_and_unreadable_files(tmp_path):
  cell = np.empty((1, 2), object)
  cell[0, 0], cell[0, 1] = np.ones((3, 3)), np.zeros((3, 3))
  scipy.io.savemat(tmp_path / "c.mat", {"c": cell})
  with pytest.raises(InputError, match=r"\(key 'c'\) is a MATLAB cell, not a numeric array"):
    volumes.read_any(str(tmp_path / "c.mat"), key="c")
  with h5py.File(tmp_path / "c73.mat", "w") as f:  # v7.3 cells are arrays of object references
    f.create_dataset("c", (2, 1), dtype=h5py.ref_dtype).attrs["MATLAB_class"] = np.bytes_("cell")
  with pytest.raises(InputError, match=r"\(key 'c'\) is a MATLAB cell"):
    volumes.read_any(str(tmp_path / "c73.mat"), key="c")
  with h5py.File(tmp_path / "s73.mat", "w") as f:  # v7.3 sparse: a group with MATLAB_sparse
    group = f.create_group("s")
    group.attrs["MATLAB_class"], group.attrs["MATLAB_sparse"] = np.bytes_("double"), 4
    group["data"] = np.ones(2)
  with pytest.raises(InputError, match=r"\(key 's'\) is a MATLAB sparse matrix, not a numeric"):
    volumes.read_any(str(tmp_path / "s73.mat"), key="s")
  (tmp_path / "text.mat").write_text("not a mat file")
  with pytest.raises(InputError, match=r"text\.mat is not a readable MATLAB \.mat file"):
    volumes.read_any(str(tmp_path / "text.mat"))
  assert volumes.kind_of("x/K.MAT") == "mat"
  assert [p.split("/")[-1] for p in volumes.find_files(str(tmp_path))] == [
    "c.mat",
    "c73.mat",
    "s73.mat",
    "text.mat",
  ]


def test_prepare_from_mat_volumes_end_to_end(tmp_path):
  folder = tmp_path / "knee_mat"
  folder.mkdir()
  originals = {f"knee{i}": _knee_like((12, 10, 2), seed=i) * (i + 1) for i in range(3)}
  for i, (name, volume) in enumerate(originals.items()):
    variables = {"img": volume, "header": np.arange(3.0)}
    _save_mat(folder / f"{name}.mat", ["v5", "v7.3"][i % 2], variables)
  out = tmp_path / "knee"
  command = [
    sys.executable,
    "-m",
    "kdmri_jax.prepare",
    "--input",
    str(folder),
    "--key",
    "img",
    "--dataset",
    "knee",
    "--acc",
    "4x",
    "--out",
    str(out),
    "--split",
    "0.67",
    "--no-per-slice",
  ]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  manifest = json.loads((out / "manifest.json").read_text())
  assert sorted(manifest["sources"]) == sorted(originals)
  seen = {}
  for split in ("train", "validation"):
    for path in reference.list_volumes(str(out), split, "4x"):
      name = path.split("/")[-1].split(".")[0]
      seen[name] = reference.read_volume(path, "4x", require_target=True).target  # S×H×W
  assert sorted(seen) == sorted(originals)
  for name, volume in originals.items():
    magnitude = np.moveaxis(np.abs(volume), -1, 0)  # MATLAB's img(:, :, s) is slice s
    np.testing.assert_allclose(seen[name], magnitude / magnitude.max(), rtol=1e-5, atol=1e-6)

  missing = command[:5] + ["--key", "missing", "--dataset", "knee", "--out", str(tmp_path / "x")]
  bad = subprocess.run(missing, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "has no key 'missing'" in bad.stderr
  assert len(bad.stderr.splitlines()) == 1 and not (tmp_path / "x").exists()
