"""fastMRI single-coil knee files (Zbontar et al. 2018) as fully-sampled magnitude targets.

A fastMRI h5 holds `kspace` (S×H×W complex, centred, e.g. 640×368), `reconstruction_esc` (S×320×320,
the magnitude of the centred inverse FFT cropped to 320×320; `reconstruction_rss` for multi-coil)
and the XML `ismrmrd_header`. We take magnitude targets, centre-cropped to the wanted size, and
undersample them retrospectively with our masks (kdmri_jax.data.writer), as the KD-MRI reference
data were made:

  target = 'esc' | 'rss'  the stored reconstruction, centre-cropped to `crop` (default: as stored)
  target = 'kspace'       |IFFT2c(kspace)| (fastMRI's centred, orthonormal IFFT), centre-cropped
                          to `crop` (default: the full k-space size, the paper's 640×368 knee
                          slices)

Slices are the file's first axis.
"""

from __future__ import annotations

import os
import re

import numpy as np

from kdmri_jax.data import h5_read
from kdmri_jax.data.volumes import centre_crop_or_pad, to_slices
from kdmri_jax.errors import require

TARGETS = ("auto", "esc", "rss", "kspace")


def is_fastmri(path: str) -> bool:
  """True for an h5 file with a `kspace` key (the fastMRI convention)."""
  import h5py

  try:
    with h5py.File(path, "r") as h5file:
      return "kspace" in h5file
  except OSError:
    return False


def ifft2c(kspace: np.ndarray) -> np.ndarray:
  """fastMRI's centred orthonormal inverse FFT over the last two axes."""
  shifted = np.fft.ifftshift(kspace, axes=(-2, -1))
  return np.fft.fftshift(np.fft.ifft2(shifted, norm="ortho"), axes=(-2, -1))


def header_sizes(header: bytes | str) -> dict[str, tuple[int, int]]:
  """{'encoded': (x, y), 'recon': (x, y)} matrix sizes from an ISMRMRD XML header ({} if absent)."""
  text = header.decode() if isinstance(header, bytes) else str(header)
  sizes = {}
  for name, tag in (("encoded", "encodedSpace"), ("recon", "reconSpace")):
    block = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    if block:
      x = re.search(r"<matrixSize>.*?<x>(\d+)</x>", block.group(1), re.S)
      y = re.search(r"<matrixSize>.*?<y>(\d+)</y>", block.group(1), re.S)
      if x and y:
        sizes[name] = (int(x.group(1)), int(y.group(1)))
  return sizes


# What the fastMRI reader accepts (`h5_read.Spec`): single-coil complex k-space, magnitude
# reconstructions.
KSPACE_SPEC = h5_read.Spec(
  kinds="c",
  ranks=(3,),
  expected="complex k-space",
  hint="only single-coil S×H×W complex k-space is supported (multi-coil: "
  "use the 'reconstruction_rss' target)",
)
RECONSTRUCTION_SPEC = h5_read.Spec(
  kinds="fiu", ranks=(2, 3), expected="a real magnitude image", hint="fix or drop this file"
)


def read_fastmri(
  path: str, target: str = "auto", crop: tuple[int, int] | None = None
) -> np.ndarray:
  """(S, H, W) float32 magnitude targets of one fastMRI file (see the module docstring)."""
  path = os.fspath(path)
  require(target in TARGETS, f"fastMRI target {target!r} is not one of {TARGETS}.")
  with h5_read.open_file(path) as h5file:
    keys = sorted(h5file.keys())
    if target == "auto":
      target = next((t for t in ("esc", "rss") if f"reconstruction_{t}" in h5file), "kspace")
    key = "kspace" if target == "kspace" else f"reconstruction_{target}"
    require(
      key in h5file,
      f"{path} has no key '{key}' (keys: {keys}); it is not a fastMRI file with that target.",
    )
    spec = KSPACE_SPEC if target == "kspace" else RECONSTRUCTION_SPEC
    data = h5_read.read(h5file, key, path, spec)
  if target == "kspace":
    data = np.abs(ifft2c(data))
  volume = to_slices(data, f"{path} (key '{key}')", 0)
  if crop is not None:
    volume = centre_crop_or_pad(volume, tuple(crop))
  return volume
