"""Checked reads of HDF5 datasets: the one place every h5 reader of kdmri_jax goes through.

The readers of reference volumes, plain and MATLAB v7.3 volumes, fastMRI files and predictions
state what they accept as a `Spec` (dtype kinds, numbers of axes, finiteness). `dataset` checks,
before any data is read, that a key is a dataset (not a group) of an accepted dtype and rank
without an empty axis; `read` reads it (or a part of it) and turns a read failure (a corrupt
compressed chunk or a truncated file behind a good header: h5py's OSError) into one sentence
naming the file and the dataset. Complex numbers stored as a compound of ('r', 'i') or MATLAB's
('real', 'imag') count and read as complex.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from kdmri_jax.errors import InputError, require

COMPLEX_PAIRS = ({"r", "i"}, {"real", "imag"})
KIND_NAMES = {
  "f": "floats",
  "i": "integers",
  "u": "integers",
  "c": "complex numbers",
  "b": "booleans",
  "S": "byte strings",
  "U": "strings",
  "O": "objects (e.g. variable-length strings)",
  "V": "compound records",
  "M": "dates",
  "m": "time spans",
}


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a reader accepts.

  kinds     numpy dtype kinds ('f' float, 'i'/'u' integer, 'c' complex, complex pairs included)
  ranks     accepted numbers of axes (None: any; the reader checks the rank of what it builds)
  finite    refuse NaN and Inf values
  expected  how the sentence names the accepted data
  hint      what the user should do, ending every sentence but that of a damaged file
  """

  kinds: str = "fiu"
  ranks: tuple[int, ...] | None = (2, 3)
  finite: bool = True
  expected: str = "real numbers"
  hint: str = "fix or regenerate this file"


def open_file(path: str | os.PathLike):
  """`h5py.File(path, 'r')`, or one sentence when the file is missing or not HDF5."""
  import h5py

  path = os.fspath(path)
  require(
    os.path.isfile(path),
    f"{path} does not exist." if not os.path.exists(path) else f"{path} is not a file.",
  )
  try:
    return h5py.File(path, "r")
  except OSError as error:
    raise InputError(f"{path} is not a readable HDF5 file ({_reason(error)}).") from None


def kind_of(dtype: np.dtype) -> str:
  """numpy's dtype kind, with a compound of a complex pair counted as complex ('c')."""
  if dtype.names is not None and set(dtype.names) in COMPLEX_PAIRS:
    return "c"
  return dtype.kind


def dataset(h5file, key: str, path: str, spec: Spec = Spec()):
  """`h5file[key]` after the checks that read no data: present, a dataset, kind, rank, no empty
  axis."""
  import h5py

  where = f"{path}: dataset '{key}'"
  require(
    key in h5file, f"{path} has no dataset '{key}' (keys: {sorted(h5file.keys())}); {spec.hint}."
  )
  try:
    node = h5file[key]
  except (KeyError, OSError) as error:  # a dangling link or a damaged object header
    raise InputError(f"{where} cannot be opened ({_reason(error)}); {spec.hint}.") from None
  require(isinstance(node, h5py.Dataset), f"{where} is a group, not an array; {spec.hint}.")
  kind = kind_of(node.dtype)
  require(
    kind in spec.kinds,
    f"{where} holds {KIND_NAMES.get(kind, 'values')} ({node.dtype}), "
    f"expected {spec.expected}; {spec.hint}.",
  )
  shape = node.shape
  require(shape is not None, f"{where} holds no data (an empty dataspace); {spec.hint}.")
  if spec.ranks is not None:
    ranks = " or ".join(str(r) for r in spec.ranks)
    require(
      len(shape) in spec.ranks,
      f"{where} has shape {shape} ({len(shape)} axes), expected {ranks} axes; {spec.hint}.",
    )
  require(
    0 not in shape, f"{where} has shape {shape}, an empty axis: it holds no data; {spec.hint}."
  )
  return node


def read(h5file, key: str, path: str, spec: Spec = Spec(), index: Any = ()) -> np.ndarray:
  """The checked values of `h5file[key]` (or of `h5file[key][index]`); complex pairs as complex."""
  node = dataset(h5file, key, path, spec)
  try:
    data = np.asarray(node[index])
  except OSError as error:
    raise InputError(
      f"{path}: dataset '{key}' cannot be read ({_reason(error)}): the file is "
      f"damaged (a corrupt or truncated chunk); copy or regenerate it."
    ) from None
  if kind_of(data.dtype) == "c" and data.dtype.names is not None:
    real, imag = ("r", "i") if "r" in data.dtype.names else ("real", "imag")
    data = data[real] + 1j * data[imag]
  if spec.finite:
    require(
      bool(np.all(np.isfinite(data))),
      f"{path}: dataset '{key}' contains NaN or Inf values; {spec.hint}.",
    )
  return data


def _reason(error: Exception) -> str:
  """The first line of an h5py error, without a trailing full stop."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  return text.rstrip(".")
