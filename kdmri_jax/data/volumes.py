"""Readers for plain fully-sampled volumes: NIfTI (nibabel), `.npy`, and HDF5 or MATLAB with a key.

Every reader returns a slices-first (S, H, W) float32 magnitude volume (complex data -> |x|, a 2-D
array -> one slice). The slice axis of the file is stated, not guessed:
  NIfTI        the last spatial axis (axial for RAS/LAS-oriented scans); 4-D files need a single
               frame
  .npy / h5    axis 0, i.e. files hold S×H×W (the fastMRI and NumPy convention), except the
               reference layout's 'volfs' key, which is H×W×S (slices last)
  .mat         the last axis of the array as MATLAB shows it (H×W×S, MATLAB's convention), for
               v4-v7 files (scipy.io.loadmat) and v7.3 files (HDF5, read with h5py; MATLAB writes
               them column-major, so h5py sees the axes reversed and the reader reverses them back)
and `slice_axis=` overrides it. `normalise` divides by the per-volume maximum (the target max
becomes 1), which is what `prepare` stores. `SliceIndex` maps example i of many volumes to (volume,
slice).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from kdmri_jax.data import h5_read
from kdmri_jax.errors import InputError, require

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUFFIXES = NIFTI_SUFFIXES + (".npy", ".h5", ".hdf5", ".mat")

# MATLAB classes that hold numbers; a key of any other class (struct, cell, char, logical, sparse,
# an object) is not an image volume.
MATLAB_NUMERIC_CLASSES = frozenset(
  {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
)

# h5 and MATLAB v7.3 arrays: numbers (complex pairs too); `to_slices` checks rank and values of
# every volume reader alike, after v7.3's axes are reversed.
VOLUME_SPEC = h5_read.Spec(
  kinds="fiuc",
  ranks=None,
  finite=False,
  expected="numbers",
  hint="pass the key of an image volume with --key, or fix the file",
)


def kind_of(path: str) -> str:
  """'nifti' | 'npy' | 'h5' | 'mat' from the file name."""
  lower = path.lower()
  if lower.endswith(NIFTI_SUFFIXES):
    return "nifti"
  if lower.endswith(".npy"):
    return "npy"
  if lower.endswith((".h5", ".hdf5")):
    return "h5"
  if lower.endswith(".mat"):
    return "mat"
  raise InputError(
    f"{path} is not a supported volume file (expected one of {', '.join(SUFFIXES)})."
  )


def to_slices(array: np.ndarray, path: str, slice_axis: int, what: str = "volume") -> np.ndarray:
  """Checks a 2-D/3-D finite array and moves `slice_axis` first; returns float32 magnitude
  (S,H,W)."""
  array = np.asarray(array)
  require(
    array.dtype.kind in "fiuc", f"{path}: the {what} holds {array.dtype} data, expected numbers."
  )
  if array.ndim == 4 and array.shape[-1] == 1:  # NIfTI with a single time frame
    array = array[..., 0]
  require(
    array.ndim in (2, 3),
    f"{path}: the {what} has shape {array.shape}; expected a 2-D slice or a 3-D volume.",
  )
  if array.ndim == 2:
    array = array[None]
  else:
    require(
      -3 <= slice_axis < 3, f"{path}: slice axis {slice_axis} is not an axis of a 3-D volume."
    )
    array = np.moveaxis(array, slice_axis, 0)
  array = np.abs(array) if np.iscomplexobj(array) else array
  array = np.ascontiguousarray(array, dtype=np.float32)
  require(
    bool(np.all(np.isfinite(array))),
    f"{path}: the {what} contains NaN or Inf values; fix or drop this file.",
  )
  require(
    array.size > 0 and min(array.shape) > 0, f"{path}: the {what} is empty (shape {array.shape})."
  )
  return array


def read_nifti(path: str, slice_axis: int = -1) -> np.ndarray:
  """A NIfTI volume as (S, H, W); slices along the last spatial axis unless `slice_axis`."""
  import nibabel as nib

  try:
    data = np.asarray(nib.load(path).dataobj)
  except Exception as error:  # nibabel raises several types for a broken file
    raise InputError(f"{path} is not a readable NIfTI file ({error}).") from None
  if data.ndim == 4 and data.shape[-1] == 1:
    data = data[..., 0]
  return to_slices(data, path, slice_axis)


def read_npy(path: str, slice_axis: int = 0) -> np.ndarray:
  """A `.npy` volume (S×H×W by default) as (S, H, W)."""
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as error:  # numpy raises several types for a file that is not .npy
    raise InputError(f"{path} is not a readable .npy array ({error}).") from None
  return to_slices(data, path, slice_axis)


def h5_keys(path: str) -> list[str]:
  with h5_read.open_file(path) as h5file:
    return sorted(h5file.keys())


def choose_key(path: str, key: str | None, keys: Sequence[str]) -> str:
  """`key` if the file has it; without one, the file's only array; otherwise one sentence."""
  if key is None:
    require(len(keys) == 1, f"{path} holds several arrays {list(keys)}; choose one with --key.")
    key = keys[0]
  require(key in keys, f"{path} has no key '{key}' (keys: {list(keys)}); choose one with --key.")
  return key


def read_h5(path: str, key: str | None, slice_axis: int | None = None) -> np.ndarray:
  """The array under `key` of an HDF5 file as (S, H, W); axis 0 is the slice axis ('volfs': the
  last)."""
  key = choose_key(path, key, h5_keys(path))
  with h5_read.open_file(path) as h5file:
    data = h5_read.read(h5file, key, path, VOLUME_SPEC)
  if slice_axis is None:
    slice_axis = -1 if key == "volfs" else 0
  return to_slices(data, f"{path} (key '{key}')", slice_axis)


def read_any(path: str, key: str | None = None, slice_axis: int | None = None) -> np.ndarray:
  """Reads a NIfTI, .npy, h5 or .mat volume (see the module docstring for the slice axis)."""
  path = os.fspath(path)
  require(os.path.isfile(path), f"{path} does not exist.")
  kind = kind_of(path)
  if kind == "nifti":
    return read_nifti(path, -1 if slice_axis is None else slice_axis)
  if kind == "npy":
    return read_npy(path, 0 if slice_axis is None else slice_axis)
  if kind == "mat":
    return read_mat(path, key, slice_axis)
  return read_h5(path, key, slice_axis)


# --- MATLAB .mat -------------------------------------------------------------------------------


def is_mat73(path: str) -> bool:
  """Whether a .mat file is v7.3, i.e. HDF5 (behind MATLAB's 512-byte header); v4-v7 are not."""
  import h5py

  return bool(h5py.is_hdf5(path))


def _not_a_volume(what: str, matlab_class: str) -> InputError:
  return InputError(
    f"{what} is a MATLAB {matlab_class}, not a numeric "
    f"array; choose the key of the image volume with --key."
  )


def mat5_keys(path: str) -> dict[str, str]:
  """{variable: MATLAB class} of a v4-v7 .mat file, read from its headers (no data loaded)."""
  import scipy.io

  try:
    return {name: matlab_class for name, _, matlab_class in scipy.io.whosmat(path)}
  except Exception as error:  # scipy raises ValueError, TypeError, ... for a file that is no .mat
    raise InputError(f"{path} is not a readable MATLAB .mat file ({error}).") from None


def read_mat5_array(path: str, key: str | None) -> tuple[str, np.ndarray]:
  """(key, array) of a v4-v7 .mat file, in MATLAB's axis order."""
  import scipy.io

  classes = mat5_keys(path)
  key = choose_key(path, key, sorted(classes))
  what = f"{path} (key '{key}')"
  if classes[key] not in MATLAB_NUMERIC_CLASSES:
    raise _not_a_volume(what, classes[key])
  return key, scipy.io.loadmat(path, variable_names=[key])[key]


def mat73_keys(path: str) -> list[str]:
  """The variables of a v7.3 .mat file ('#refs#' and '#subsystem#' are MATLAB's internals)."""
  return [k for k in h5_keys(path) if not k.startswith("#")]


def _mat73_class(node) -> str:
  """A v7.3 variable's MATLAB class ('' when unstated); sparse matrices and structs are groups."""
  import h5py

  if "MATLAB_sparse" in node.attrs:
    return "sparse matrix"
  value = node.attrs.get("MATLAB_class", b"")
  name = value.decode() if isinstance(value, bytes) else str(value)
  return name or ("struct" if isinstance(node, h5py.Group) else "")


def read_mat73_array(path: str, key: str | None) -> tuple[str, np.ndarray]:
  """(key, array) of a v7.3 .mat file, its axes reversed back into MATLAB's (column-major) order."""
  import h5py

  key = choose_key(path, key, mat73_keys(path))
  what = f"{path} (key '{key}')"
  with h5_read.open_file(path) as h5file:
    node = h5file[key]
    matlab_class = _mat73_class(node)
    if isinstance(node, h5py.Group) or matlab_class not in MATLAB_NUMERIC_CLASSES | {""}:
      raise _not_a_volume(what, matlab_class)
    # An empty MATLAB array is stored as its dimensions, flagged by MATLAB_empty.
    require(not node.attrs.get("MATLAB_empty", 0), f"{what} is an empty MATLAB array.")
    data = h5_read.read(h5file, key, path, VOLUME_SPEC)
  return key, data.T


def read_mat(path: str, key: str | None = None, slice_axis: int | None = None) -> np.ndarray:
  """The array under `key` of a MATLAB .mat file (any version) as (S, H, W); slices along MATLAB's
  last axis unless `slice_axis`. Without `key`, the file must hold a single variable."""
  reader = read_mat73_array if is_mat73(path) else read_mat5_array
  key, data = reader(path, key)
  return to_slices(data, f"{path} (key '{key}')", -1 if slice_axis is None else slice_axis)


def normalise(volume: np.ndarray) -> np.ndarray:
  """Per-volume max normalisation (max -> 1); an all-zero volume is an error."""
  peak = float(np.max(volume))
  require(peak > 0, "a volume is all zeros (or negative); it holds no image to learn from.")
  return (volume / peak).astype(np.float32)


def centre_crop_or_pad(volume: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Centre-crops (or zero-pads) the last two axes to `shape`, as fastMRI's center_crop."""
  out = np.zeros(volume.shape[:-2] + tuple(shape), volume.dtype)
  src, dst = [], []
  for have, want in zip(volume.shape[-2:], shape):
    if have >= want:
      start = (have - want) // 2
      src.append(slice(start, start + want))
      dst.append(slice(0, want))
    else:
      start = (want - have) // 2
      src.append(slice(0, have))
      dst.append(slice(start, start + have))
  out[(...,) + tuple(dst)] = volume[(...,) + tuple(src)]
  return out


def find_files(root: str, suffixes: Sequence[str] = SUFFIXES) -> list[str]:
  """Volume files under `root` (a file, or a folder searched recursively), sorted."""
  root = os.fspath(root)
  if os.path.isfile(root):
    return [root]
  require(os.path.isdir(root), f"{root} does not exist.")
  found = []
  for folder, _, names in os.walk(root):
    found += [os.path.join(folder, n) for n in names if n.lower().endswith(tuple(suffixes))]
  require(len(found) > 0, f"{root} holds no volume files ({', '.join(suffixes)}).")
  return sorted(found)


class SliceIndex:
  """Target slices of many plain volumes: example i -> {'target': (H,W) float32}, per-volume max
  normalised.

  Volumes are read once, in file order, slices along each file's stated slice axis.
  """

  def __init__(self, paths: Sequence[str], key: str | None = None, slice_axis: int | None = None):
    require(len(paths) > 0, "no volume files given.")
    self.names, volumes = [], []
    for path in paths:
      volumes.append(normalise(read_any(path, key, slice_axis)))
      self.names.append(os.path.basename(path).split(".")[0])
    shapes = {v.shape[1:] for v in volumes}
    require(
      len(shapes) == 1,
      f"volumes have different slice sizes {sorted(shapes)}; "
      f"crop them to one size (prepare --size H W).",
    )
    self.shape = shapes.pop()
    self._targets = np.concatenate(volumes)
    counts = [len(v) for v in volumes]
    self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    self.mask = None

  def __len__(self) -> int:
    return len(self._targets)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"target": self._targets[int(index)]}

  def locate(self, index: int) -> tuple[str, int]:
    volume = int(np.searchsorted(self._starts, index, side="right") - 1)
    return self.names[volume], int(index - self._starts[volume])

  def volume_ranges(self) -> list[tuple[str, range]]:
    return [(n, range(self._starts[i], self._starts[i + 1])) for i, n in enumerate(self.names)]
