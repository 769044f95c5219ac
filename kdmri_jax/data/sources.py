"""Random-access slice sources: a flat index over the slices of many reference volumes.

`ReferenceSource(paths, acc, mask)` maps example `i` to `(volume, slice)` in file order, slices in
the order they are stored (the last axis of the h5 arrays), and returns one example dict

  {'input': (H,W) f32, 'target': (H,W) f32, 'kspace': (H,W) c64, 'mask': (H,W) f32}.

Values are used as stored: the reference data and everything `prepare` writes are already normalised
per volume (target max = 1), so no normalisation happens here. Small datasets are read into memory
once; larger ones (over `max_memory_bytes`) are read slice by slice from the h5 files, which keeps
the memory flat for fastMRI-sized sets.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from kdmri_jax.data import h5_read, reference
from kdmri_jax.errors import require

DEFAULT_MAX_MEMORY_BYTES = 2 * 1024**3


class ReferenceSource:
  """Slices of reference-layout volumes with one shared (H,W) mask; `len`, `[i]`, `.mask`."""

  def __init__(
    self,
    paths: Sequence[str],
    acc: str,
    mask: np.ndarray | None,
    require_target: bool = True,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
  ):
    require(len(paths) > 0, f"no volumes given for acceleration {acc}.")
    self.paths = [os.fspath(p) for p in paths]
    self.acc = acc
    self.require_target = require_target
    self._headers = [_header(p, acc, require_target) for p in self.paths]
    shapes = {h["shape"] for h in self._headers}
    require(
      len(shapes) == 1,
      f"volumes of acceleration {acc} have different slice sizes {sorted(shapes)} "
      f"(e.g. {self.paths[0]}); slices are batched together, so crop them to one size with "
      f"`python -m kdmri_jax.prepare`.",
    )
    self.shape: tuple[int, int] = shapes.pop()
    self.mask = None if mask is None else np.asarray(mask, np.float32)
    if self.mask is not None:
      require(
        self.mask.shape == self.shape,
        f"mask has shape {self.mask.shape} but the {acc} images are "
        f"{self.shape}; use the mask made for this data.",
      )
    counts = [h["slices"] for h in self._headers]
    self.names = [os.path.splitext(os.path.basename(p))[0] for p in self.paths]
    self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    self._volume_of = np.repeat(np.arange(len(counts)), counts)
    nbytes = int(self._starts[-1]) * self.shape[0] * self.shape[1] * 16
    self._arrays = self._load_all() if nbytes <= max_memory_bytes else None

  def _load_all(self) -> dict[str, np.ndarray]:
    volumes = [reference.read_volume(p, self.acc, self.require_target) for p in self.paths]
    arrays = {
      "input": np.concatenate([v.input for v in volumes]),
      "kspace": np.concatenate([v.kspace for v in volumes]),
    }
    if all(v.target is not None for v in volumes):
      arrays["target"] = np.concatenate([v.target for v in volumes])
    return arrays

  def __len__(self) -> int:
    return int(self._starts[-1])

  def locate(self, index: int) -> tuple[str, int]:
    """Example index -> (volume name, slice number within the volume)."""
    volume = int(self._volume_of[index])
    return self.names[volume], int(index - self._starts[volume])

  def volume_ranges(self) -> list[tuple[str, range]]:
    """(volume name, example indices) per volume, in order: for per-volume metrics."""
    return [
      (name, range(int(self._starts[i]), int(self._starts[i + 1])))
      for i, name in enumerate(self.names)
    ]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if index < 0:
      index += len(self)
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} out of range for {len(self)} slices")
    if self._arrays is not None:
      example = {key: value[index] for key, value in self._arrays.items()}
    else:
      volume = int(self._volume_of[index])
      example = _read_slice(
        self.paths[volume], self.acc, int(index - self._starts[volume]), self._headers[volume]
      )
    if self.mask is not None:
      example["mask"] = self.mask
    return example

  def __repr__(self) -> str:
    return (
      f"ReferenceSource({len(self.paths)} volumes, "
      f"{len(self)} slices of {self.shape}, acc {self.acc})"
    )


def _header(path: str, acc: str, require_target: bool) -> dict:
  """Checks keys, kinds, dtypes and shapes of one file without reading the data."""
  image_key, kspace_key = reference.input_key(acc), reference.kspace_key(acc)
  with h5_read.open_file(path) as h5file:
    present = reference.accelerations_in(h5file)
    for key in (image_key, kspace_key):
      require(
        key in h5file,
        f"{path} has no key '{key}' (accelerations in this file: {present or 'none'}).",
      )
    image_shape = h5_read.dataset(h5file, image_key, path, reference.IMAGE_SPEC).shape
    kspace = h5_read.dataset(h5file, kspace_key, path, reference.KSPACE_SPEC)
    channels = kspace.shape == tuple(image_shape) + (2,) and h5_read.kind_of(kspace.dtype) != "c"
    require(
      kspace.shape == image_shape or channels,
      f"{path}: key '{kspace_key}' has shape {kspace.shape} but the image is {image_shape}; "
      f"target, image and k-space must match.",
    )
    has_target = reference.TARGET_KEY in h5file
    if has_target:
      target_shape = h5_read.dataset(h5file, reference.TARGET_KEY, path, reference.IMAGE_SPEC).shape
      require(
        target_shape == image_shape,
        f"{path}: key '{reference.TARGET_KEY}' has shape {target_shape} "
        f"but the image is {image_shape}; target and image must match.",
      )
    require(
      has_target or not require_target,
      f"{path} has no target key '{reference.TARGET_KEY}', needed for training and evaluation.",
    )
  slices = 1 if len(image_shape) == 2 else image_shape[2]
  return {
    "shape": tuple(image_shape[:2]),
    "slices": slices,
    "channels": channels,
    "target": has_target,
    "ndim": len(image_shape),
  }


def _read_slice(path: str, acc: str, index: int, header: dict) -> dict[str, np.ndarray]:
  """Reads slice `index` of one file (used when the dataset is too large to hold in memory)."""
  pick = (slice(None), slice(None)) + ((index,) if header["ndim"] == 3 else ())
  with h5_read.open_file(path) as h5file:
    read = lambda key, spec: h5_read.read(h5file, key, path, spec, pick)  # noqa: E731
    image = read(reference.input_key(acc), reference.IMAGE_SPEC)
    example = {"input": np.asarray(image, np.float32)}
    raw = read(reference.kspace_key(acc), reference.KSPACE_SPEC)
    example["kspace"] = (raw[..., 0] + 1j * raw[..., 1] if header["channels"] else raw).astype(
      np.complex64
    )
    if header["target"]:
      example["target"] = np.asarray(read(reference.TARGET_KEY, reference.IMAGE_SPEC), np.float32)
  return example


class ArraySource:
  """In-memory examples from stacked (N,H,W) arrays; `mask` (H,W) shared by all examples."""

  def __init__(self, arrays: dict[str, np.ndarray], mask: np.ndarray | None = None):
    lengths = {len(v) for v in arrays.values()}
    require(len(lengths) == 1, f"arrays have different lengths {sorted(lengths)}.")
    self.arrays = arrays
    self.mask = None if mask is None else np.asarray(mask, np.float32)
    self.shape = tuple(next(iter(arrays.values())).shape[1:])

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = {key: value[int(index)] for key, value in self.arrays.items()}
    if self.mask is not None:
      example["mask"] = self.mask
    return example


class SubsetSource:
  """The examples `indices` of another source (e.g. config.data.max_slices for demos and tests)."""

  def __init__(self, source, indices: Sequence[int]):
    self.source = source
    self.indices = np.asarray(indices, dtype=np.int64)
    self.shape = source.shape
    self.mask = getattr(source, "mask", None)

  @classmethod
  def evenly_spaced(cls, source, count: int) -> "SubsetSource":
    """`count` examples spread evenly over the whole source (every volume is represented)."""
    count = max(1, min(int(count), len(source)))
    return cls(source, np.unique(np.linspace(0, len(source) - 1, count).round().astype(np.int64)))

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self.source[int(self.indices[int(index)])]
    if self.mask is not None:
      example["mask"] = self.mask
    return example

  def locate(self, index: int) -> tuple[str, int]:
    return self.source.locate(int(self.indices[int(index)]))

  def volume_ranges(self) -> list[tuple[str, range]]:
    ranges: list[tuple[str, range]] = []
    for position in range(len(self)):
      name, _ = self.locate(position)
      if ranges and ranges[-1][0] == name:
        ranges[-1] = (name, range(ranges[-1][1].start, position + 1))
      else:
        ranges.append((name, range(position, position + 1)))
    return ranges
