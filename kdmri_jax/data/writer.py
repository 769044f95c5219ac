"""Writes fully-sampled volumes as a dataset in the KD-MRI reference layout (the core of `prepare`).

For each acceleration and volume (targets normalised by the per-volume maximum):
  kspace      = m · FFT2(target)     (orthonormal, unshifted: kdmri_jax.fft's convention)
  zero-filled = |IFFT2(kspace)|       (magnitude; the DC layer keeps the real part instead)
stored as `{out}/{train,validation}/acc_{acc}/{name}.h5` (H×W×S), the masks as
`{out}/masks/mask_{acc}.npy` and everything needed to redo it in `{out}/manifest.json`. Volumes (not
slices) are split, by a seeded permutation, so neighbouring slices never straddle train and
validation. The dataset is written into a hidden folder beside `out` and renamed at the end: a
failure leaves nothing half-written, and an existing dataset is only replaced with `overwrite=True`.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from typing import Mapping

import numpy as np

from kdmri_jax import masks as masks_lib
from kdmri_jax.data import reference, volumes as volumes_lib
from kdmri_jax.errors import InputError, require

FORMAT_VERSION = 1


def undersample(target: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(zero-filled |IFFT2(m·FFT2(x))|, k-space m·FFT2(x)) of (S,H,W) targets; float32 / complex64."""
  kspace = np.fft.fft2(np.asarray(target, np.float64), norm="ortho") * mask
  image = np.abs(np.fft.ifft2(kspace, norm="ortho"))
  return image.astype(np.float32), kspace.astype(np.complex64)


def split_names(names: list[str], split: float, seed: int) -> tuple[list[str], list[str]]:
  """Seeded volume-level split: (train names, validation names), both sorted."""
  require(
    0.0 < split <= 1.0, f"--split {split} must be in (0, 1]: the fraction of volumes for training."
  )
  names = sorted(names)
  if split >= 1.0:
    return names, []
  require(
    len(names) >= 2,
    f"only {len(names)} volume was found; a train/validation split needs at least 2 "
    f"volumes (or use --split 1 for training data only).",
  )
  order = np.random.default_rng(seed).permutation(len(names))
  count = min(max(int(round(split * len(names))), 1), len(names) - 1)
  return sorted(names[i] for i in order[:count]), sorted(names[i] for i in order[count:])


def masks_for(
  shape: tuple[int, int],
  accs,
  seed: int,
  direction: str,
  mask_dir: str | None = None,
  family: str = masks_lib.DEFAULT_FAMILY,
) -> dict[str, np.ndarray]:
  """{acc: mask}: `mask_dir/mask_{acc}.npy` when given, else a seeded `masks.cartesian_mask`."""
  found = {}
  for acc in accs:
    if mask_dir is not None:
      found[acc] = masks_lib.load_mask(os.path.join(mask_dir, f"mask_{acc}.npy"), shape)
    else:
      found[acc] = masks_lib.cartesian_mask(shape, acc, seed, direction, family=family)
  return found


def normalise_acc(acc: str) -> str:
  return f"{masks_lib.parse_acceleration(acc):g}x"


def write_dataset(
  out: str,
  volumes: Mapping[str, np.ndarray],
  accs,
  split: float = 0.8,
  seed: int = 0,
  direction: str = "rows",
  mask_dir: str | None = None,
  overwrite: bool = False,
  one_slice_per_file: bool = False,
  sources: Mapping[str, str] | None = None,
  extra: Mapping | None = None,
  mask_family: str = masks_lib.DEFAULT_FAMILY,
  mask_seed: int | None = None,
) -> str:
  """Writes `volumes` ({name: (S,H,W) magnitude}) as a reference-layout dataset at `out`; returns
  `out`.

  Masks come from `mask_dir` or are generated of `mask_family` (`masks.MASK_FAMILIES`), seeded with
  `mask_seed` (None: `seed`, which also splits the volumes).
  """
  mask_seed = seed if mask_seed is None else mask_seed
  out = os.path.abspath(os.fspath(out))
  masks_lib.check_family(mask_family, "--mask-family")
  accs = [normalise_acc(a) for a in accs]
  shape = _check_inputs(out, volumes, accs, overwrite)
  masks = masks_for(shape, accs, mask_seed, direction, mask_dir, mask_family)
  splits = dict(zip(("train", "validation"), split_names(list(volumes), split, seed)))

  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
  try:
    counts = {
      name: _write_split(staging, name, names, volumes, masks, one_slice_per_file)
      for name, names in splits.items()
    }
    _write_masks(staging, masks)
    mask_fields = _mask_fields(masks, direction, mask_dir, mask_family, mask_seed)
    manifest = _manifest(seed, split, shape, one_slice_per_file, mask_fields, counts, sources)
    manifest.update(extra or {})
    with open(os.path.join(staging, "manifest.json"), "w") as handle:
      json.dump(manifest, handle, indent=2)
    _publish(staging, out, overwrite)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return out


def _check_inputs(
  out: str, volumes: Mapping[str, np.ndarray], accs: list[str], overwrite: bool
) -> tuple[int, int]:
  """The volumes' common (H, W) slice shape, after the checks that need no writing."""
  require(len(accs) > 0, "no acceleration given; pass e.g. --acc 4x 5x 8x.")
  require(len(volumes) > 0, "no volumes to prepare.")
  require(
    overwrite or not os.path.exists(out),
    f"{out} already exists; choose another --out or pass --overwrite to replace it.",
  )
  shapes = {tuple(v.shape[1:]) for v in volumes.values()}
  require(
    len(shapes) == 1,
    f"the volumes have different slice sizes {sorted(shapes)}; crop or pad "
    f"them to one size with --size H W.",
  )
  return shapes.pop()


def _write_split(
  staging: str,
  split_name: str,
  names: list[str],
  volumes: Mapping[str, np.ndarray],
  masks: dict[str, np.ndarray],
  one_slice_per_file: bool,
) -> dict[str, int]:
  """Writes the normalised targets of `names` at every acceleration; returns {name: slices}."""
  counts = {}
  for name in names:
    target = volumes_lib.normalise(np.asarray(volumes[name], np.float32))
    counts[name] = int(target.shape[0])
    for acc, mask in masks.items():
      image, kspace = undersample(target, mask)
      folder = os.path.join(staging, split_name, f"acc_{acc}")
      if one_slice_per_file:  # the reference knee layout: one H×W slice per file
        for index in range(target.shape[0]):
          one = slice(index, index + 1)
          reference.write_volume(
            os.path.join(folder, f"{name}_s{index:03d}.h5"),
            target[one],
            image[one],
            kspace[one],
            acc,
            squeeze=True,
          )
      else:
        reference.write_volume(os.path.join(folder, f"{name}.h5"), target, image, kspace, acc)
  return counts


def _write_masks(staging: str, masks: dict[str, np.ndarray]) -> None:
  os.makedirs(os.path.join(staging, "masks"))
  for acc, mask in masks.items():
    np.save(os.path.join(staging, "masks", f"mask_{acc}.npy"), mask)


def _manifest(
  seed: int,
  split: float,
  shape: tuple[int, int],
  one_slice_per_file: bool,
  mask_fields: dict,
  counts: dict[str, dict[str, int]],
  sources: Mapping[str, str] | None,
) -> dict:
  """Everything needed to redo the dataset (`mask_fields`: `_mask_fields`)."""
  return {
    "format_version": FORMAT_VERSION,
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "seed": seed,
    "split": split,
    "shape": list(shape),
    "normalisation": "per-volume max (target max = 1)",
    "zero_filled": "|IFFT2(mask * FFT2(target))|, orthonormal, unshifted",
    "kspace": "mask * FFT2(target), orthonormal, unshifted, complex64",
    "layout": (
      "one H x W slice per file" if one_slice_per_file else "H x W x S per file (slices last)"
    ),
    **mask_fields,
    "counts": {s: {"volumes": len(c), "slices": int(sum(c.values()))} for s, c in counts.items()},
    "volumes": counts,
    "sources": dict(sources or {}),
  }


def _mask_fields(
  masks: dict[str, np.ndarray], direction: str, mask_dir: str | None, family: str, seed: int
) -> dict:
  """The manifest's mask entries: the family and seed of generated masks (None for masks read from
  `mask_dir`) and, per acceleration, the file, its origin and its statistics."""
  generated = mask_dir is None
  family, seed = (family, seed) if generated else (None, None)
  source = None if generated else os.path.abspath(mask_dir)
  return {
    "mask_family": family,
    "mask_seed": seed,
    "masks": {
      acc: {
        "file": f"masks/mask_{acc}.npy",
        "generated": generated,
        "family": family,
        "source": source,
        "direction": direction,
        **_mask_summary(m),
      }
      for acc, m in masks.items()
    },
  }


def _mask_summary(mask: np.ndarray) -> dict:
  """The manifest's statistics of one mask (`masks.mask_statistics`)."""
  stats = masks_lib.mask_statistics(mask)
  summary = {"achieved_acceleration": round(stats["acceleration"], 4)}
  if "lines" in stats:
    summary.update(
      sampled_lines=stats["lines"],
      centre_lines=stats["centre_lines"],
      mean_abs_ky=round(stats["mean_abs_ky"], 2),
    )
  elif "centre_block" in stats:  # a 2-D (point) mask
    summary.update(centre_block=stats["centre_block"], mean_abs_k=round(stats["mean_abs_k"], 2))
  return summary


def _publish(staging: str, out: str, overwrite: bool) -> None:
  """Renames the finished staging folder to `out` (replacing an old dataset only when asked)."""
  if os.path.exists(out):
    require(overwrite, f"{out} already exists; pass --overwrite to replace it.")
    old = f"{staging}.old"
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)
  else:
    try:
      os.rename(staging, out)
    except OSError as error:
      raise InputError(f"cannot create {out} ({error}).") from None
