"""The KD-MRI reference data layout: `{root}/{split}/acc_{acc}/*.h5`, one volume per file.

Each file holds (as the authors' code reads them, slices LAST):
  `volfs`               H×W×S float, fully-sampled magnitude target (knee files: one H×W slice)
  `img_volus_{acc}`     H×W×S float, zero-filled image |IFFT2(m·FFT2(target))|
  `kspace_volus_{acc}`  H×W×S complex undersampled k-space m·FFT2(target), unshifted, orthonormal
                        FFT

In memory a `Volume` holds slices FIRST, (S, H, W), because a batch stacks slices along a leading
axis. k-space may be stored as complex (h5py's compound r/i type) or as float with a trailing
real/imag axis of size 2 (H×W×S×2, or H×W×2 for a single slice); both read the same. `write_volume`
stores complex64.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import numpy as np

from kdmri_jax.data import h5_read
from kdmri_jax.errors import InputError, require

SPLITS = ("train", "validation")
TARGET_KEY = "volfs"


def input_key(acc: str) -> str:
  return f"img_volus_{acc}"


def kspace_key(acc: str) -> str:
  return f"kspace_volus_{acc}"


@dataclasses.dataclass
class Volume:
  """One reference volume, slices first: target/input (S,H,W) float32, kspace (S,H,W) complex64."""

  path: str
  name: str
  acc: str
  target: np.ndarray | None
  input: np.ndarray
  kspace: np.ndarray

  @property
  def num_slices(self) -> int:
    return int(self.input.shape[0])

  @property
  def shape(self) -> tuple[int, int]:
    return tuple(self.input.shape[1:])


def _slices_first(array: np.ndarray) -> np.ndarray:
  """H×W×S (or H×W) -> S×H×W."""
  return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def _slices_last(array: np.ndarray) -> np.ndarray:
  """S×H×W -> H×W×S."""
  return np.moveaxis(np.asarray(array), 0, -1)


def accelerations_in(h5file) -> list[str]:
  """Acceleration names ('4x', ...) with an image key in an open h5 file."""
  found = []
  for key in h5file.keys():
    match = re.fullmatch(r"img_volus_(.+)", key)
    if match:
      found.append(match.group(1))
  return sorted(found)


# What the readers of the reference layout accept (`h5_read.Spec`): real images, k-space complex
# or real with a trailing real/imag axis of size 2.
IMAGE_SPEC = h5_read.Spec(
  kinds="fiu", ranks=(2, 3), expected="real numbers (an H×W×S image)", hint="fix or drop this file"
)
KSPACE_SPEC = h5_read.Spec(
  kinds="fiuc", ranks=(2, 3, 4), expected="complex k-space", hint="fix or drop this file"
)


def _read_float(h5file, path: str, key: str) -> np.ndarray:
  return np.asarray(h5_read.read(h5file, key, path, IMAGE_SPEC), dtype=np.float32)


def _read_kspace(h5file, path: str, key: str, image_shape: tuple[int, ...]) -> np.ndarray:
  raw = h5_read.read(h5file, key, path, KSPACE_SPEC)
  if np.iscomplexobj(raw):
    kspace = raw.astype(np.complex64)
  else:
    require(
      raw.shape == tuple(image_shape) + (2,),
      f"{path}: key '{key}' is real with shape {raw.shape}; expected complex data of the image "
      f"shape {tuple(image_shape)} or a trailing real/imag axis of size 2.",
    )
    kspace = (raw[..., 0] + 1j * raw[..., 1]).astype(np.complex64)
  require(
    kspace.shape == tuple(image_shape),
    f"{path}: key '{key}' has shape {kspace.shape} but the image is "
    f"{tuple(image_shape)}; target, image and k-space must match.",
  )
  return kspace


def read_volume(
  path: str | os.PathLike, acc: str | None = None, require_target: bool = False
) -> Volume:
  """Reads one reference h5 file into a slices-first `Volume`.

  `acc=None` picks the only acceleration stored in the file; a file with several asks for one. A
  missing key, a group, dtype or rank not of an image, an empty axis, an unreadable chunk
  (`h5_read`), mismatched shapes or NaN/Inf values raise `InputError` naming the file and key.
  """
  path = os.fspath(path)
  with h5_read.open_file(path) as h5file:
    present = accelerations_in(h5file)
    if acc is None:
      require(
        len(present) > 0,
        f"{path} has no 'img_volus_<acc>' key (keys: {sorted(h5file.keys())}); it is "
        f"not in the KD-MRI reference layout.",
      )
      require(
        len(present) == 1, f"{path} holds several accelerations {present}; choose one with --acc."
      )
      acc = present[0]
    for key in (input_key(acc), kspace_key(acc)):
      require(
        key in h5file,
        f"{path} has no key '{key}' (keys: {sorted(h5file.keys())}); "
        f"accelerations in this file: {present or 'none'}.",
      )
    image = _read_float(h5file, path, input_key(acc))
    kspace = _read_kspace(h5file, path, kspace_key(acc), image.shape)
    target = None
    if TARGET_KEY in h5file:
      target = _read_float(h5file, path, TARGET_KEY)
      require(
        target.shape == image.shape,
        f"{path}: key '{TARGET_KEY}' has shape {target.shape} but "
        f"'{input_key(acc)}' has {image.shape}; target and image must match.",
      )
    else:
      require(
        not require_target,
        f"{path} has no target key '{TARGET_KEY}', needed for training and evaluation.",
      )
  name = os.path.splitext(os.path.basename(path))[0]
  return Volume(
    path=path,
    name=name,
    acc=acc,
    target=None if target is None else _slices_first(target),
    input=_slices_first(image),
    kspace=_slices_first(kspace),
  )


def write_volume(
  path: str | os.PathLike,
  target: np.ndarray | None,
  input: np.ndarray,  # noqa: A002
  kspace: np.ndarray,
  acc: str,
  squeeze: bool = False,
) -> None:
  """Writes slices-first (S,H,W) arrays as one reference h5 file (H×W×S, k-space complex64).

  `squeeze=True` with S=1 stores 2-D H×W arrays, as the reference knee files.
  """
  import h5py

  image = np.asarray(input, dtype=np.float32)
  require(image.ndim == 3, f"write_volume: input must be S×H×W, got shape {image.shape}.")
  kspace = np.asarray(kspace).astype(np.complex64)
  require(
    kspace.shape == image.shape,
    f"write_volume: kspace shape {kspace.shape} != input {image.shape}.",
  )
  layout = _slices_last
  if squeeze:
    require(image.shape[0] == 1, f"write_volume: squeeze needs one slice, got {image.shape[0]}.")
    layout = lambda array: np.asarray(array)[0]  # noqa: E731
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with h5py.File(path, "w") as h5file:
    if target is not None:
      target = np.asarray(target, dtype=np.float32)
      require(
        target.shape == image.shape,
        f"write_volume: target shape {target.shape} != input {image.shape}.",
      )
      h5file.create_dataset(TARGET_KEY, data=layout(target))
    h5file.create_dataset(input_key(acc), data=layout(image))
    h5file.create_dataset(kspace_key(acc), data=layout(kspace))


def split_dir(root: str, split: str, acc: str) -> str:
  return os.path.join(root, split, f"acc_{acc}")


def list_accelerations(root: str, split: str) -> list[str]:
  """Accelerations with an `acc_*` folder holding at least one h5 file under `{root}/{split}`."""
  found = []
  for folder in sorted(glob.glob(os.path.join(root, split, "acc_*"))):
    if glob.glob(os.path.join(folder, "*.h5")):
      found.append(os.path.basename(folder)[len("acc_") :])
  return found


def list_volumes(root: str | os.PathLike, split: str, acc: str) -> list[str]:
  """Sorted h5 files of `{root}/{split}/acc_{acc}`; `InputError` when there are none."""
  root = os.fspath(root)
  require(
    os.path.isdir(root),
    f"data root {root} does not exist; prepare one with "
    f"`python -m kdmri_jax.prepare --input ... --out {root}`.",
  )
  require(
    os.path.isdir(os.path.join(root, split)),
    f"data root {root} has no '{split}' folder; expected "
    f"{root}/{split}/acc_<acc>/*.h5 (the KD-MRI reference layout).",
  )
  folder = split_dir(root, split, acc)
  files = sorted(glob.glob(os.path.join(folder, "*.h5")))
  if not files:
    existing = list_accelerations(root, split)
    where = "does not exist" if not os.path.isdir(folder) else "holds no .h5 files"
    raise InputError(
      f"{folder} {where}: acceleration {acc} has no {split} "
      f"data (accelerations with data: {existing or 'none'})."
    )
  return files


def require_kspace_within_mask(
  kspace: np.ndarray, mask: np.ndarray, data_file: str, mask_file: str, tolerance: float = 1e-6
) -> None:
  """Refuses k-space (…, H, W) with samples where `mask` is 0 (above `tolerance` × its largest
  magnitude, for float noise): such data was undersampled with another mask, and data consistency
  with this one would be wrong."""
  magnitude = np.abs(np.asarray(kspace))
  outside = magnitude[..., np.asarray(mask) == 0]
  peak = float(magnitude.max()) if magnitude.size else 0.0
  require(
    outside.size == 0 or float(outside.max()) <= tolerance * peak,
    f"{data_file} has k-space samples where the mask {mask_file} is 0, so it was undersampled "
    f"with another mask; pass the mask the data was made with (prepare and the embedded brain "
    f"write it as ROOT/masks/mask_<acc>.npy) or prepare the data again with this mask.",
  )
