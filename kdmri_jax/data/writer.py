"""Writes fully-sampled volumes as a dataset in the KD-MRI reference layout (the core of `prepare`).

For each acceleration and volume (targets normalised by the per-volume maximum):
  kspace      = m · FFT2(target)     (orthonormal, unshifted: kdmri_jax.fft's convention)
  zero-filled = |IFFT2(kspace)|       (magnitude; the DC layer keeps the real part instead)
stored as `{out}/{train,validation}/acc_{acc}/{name}.h5` (H×W×S), the masks as
`{out}/masks/mask_{acc}.npy` and everything needed to redo it in `{out}/manifest.json`. Volumes (not
slices) are split, by a seeded permutation, so neighbouring slices never straddle train and
validation. The dataset is written into a hidden staging folder beside `out` and renamed at the end:
a failure leaves nothing half-written, and an existing dataset is only replaced with
`overwrite=True` (renamed aside, put back if the new one cannot take its place, then removed).

A staging folder `.{name}.partial-*` has a lock file beside it, locked (`fcntl.flock`) while its run
lives: the kernel drops the lock when the process dies, however it dies. `clear_leftovers` removes
what a killed run left (its lock is free), and puts back a dataset it was replacing; `damage` says
why an existing dataset cannot be used (a missing or unreadable manifest.json, mask or h5 file).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import tempfile
from typing import Callable, Mapping

import numpy as np

from kdmri_jax import masks as masks_lib
from kdmri_jax.data import reference, volumes as volumes_lib
from kdmri_jax.errors import InputError, require

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK_SUFFIX, REPLACED_SUFFIX = ".lock", ".old"
DATASET_ENTRIES = frozenset({"train", "validation", "masks", MANIFEST})


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
  before_writing: Callable[[], None] | None = None,
) -> str:
  """Writes `volumes` ({name: (S,H,W) magnitude}) as a reference-layout dataset at `out`; returns
  `out`.

  Masks come from `mask_dir` or are generated of `mask_family` (`masks.MASK_FAMILIES`), seeded with
  `mask_seed` (None: `seed`, which also splits the volumes). `before_writing` runs once every input
  is checked, before anything is written (`prepare` moves a damaged `out` aside there).
  """
  mask_seed = seed if mask_seed is None else mask_seed
  out = os.path.abspath(os.fspath(out))
  masks_lib.check_family(mask_family, "--mask-family")
  accs = [normalise_acc(a) for a in accs]
  shape = _check_inputs(out, volumes, accs, overwrite)
  masks = masks_for(shape, accs, mask_seed, direction, mask_dir, mask_family)
  splits = dict(zip(("train", "validation"), split_names(list(volumes), split, seed)))
  if before_writing is not None:
    before_writing()
  staging, lock, fd = _stage(out)
  try:
    counts = {
      name: _write_split(staging, name, names, volumes, masks, one_slice_per_file)
      for name, names in splits.items()
    }
    _write_masks(staging, masks)
    mask_fields = _mask_fields(masks, direction, mask_dir, mask_family, mask_seed)
    manifest = _manifest(seed, split, shape, one_slice_per_file, mask_fields, counts, sources)
    manifest.update(extra or {})
    with open(os.path.join(staging, MANIFEST), "w") as handle:
      json.dump(manifest, handle, indent=2)
    _publish(staging, out, overwrite)
  finally:
    shutil.rmtree(staging, ignore_errors=True)  # gone already when it was published
    with contextlib.suppress(FileNotFoundError):
      os.remove(lock)
    os.close(fd)
  return out


def _stage(out: str) -> tuple[str, str, int]:
  """(staging folder, its lock file, the lock's descriptor) beside `out`, the lock held."""
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  fd, lock = tempfile.mkstemp(prefix=_staging_prefix(out), suffix=LOCK_SUFFIX, dir=parent)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  staging = lock[: -len(LOCK_SUFFIX)]
  try:
    os.mkdir(staging)
  except BaseException:
    os.remove(lock)
    os.close(fd)
    raise
  return staging, lock, fd


def _staging_prefix(out: str) -> str:
  return f".{os.path.basename(out)}.partial-"


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
    old = staging + REPLACED_SUFFIX
    os.rename(out, old)
    try:
      os.rename(staging, out)
    except BaseException:
      os.rename(old, out)
      raise
    shutil.rmtree(old, ignore_errors=True)
  else:
    try:
      os.rename(staging, out)
    except OSError as error:
      raise InputError(f"cannot create {out} ({error}).") from None


# --- what earlier runs left ----------------------------------------------------------------------


def clear_leftovers(out: str, say: Callable[[str], None]) -> None:
  """Cleans up after prepare runs that were killed while writing `out` (their lock is free): removes
  a half-written staging folder; puts a dataset that an --overwrite run was replacing back at `out`
  when `out` is missing, and removes it when the new dataset had already taken its place."""
  out = os.path.abspath(out)
  parent, prefix = os.path.dirname(out), _staging_prefix(out)
  if not os.path.isdir(parent):
    return
  names = [n for n in os.listdir(parent) if n.startswith(prefix)]
  stagings = {n.removesuffix(LOCK_SUFFIX).removesuffix(REPLACED_SUFFIX) for n in names}
  for staging in sorted(os.path.join(parent, n) for n in stagings):
    if _in_use(staging + LOCK_SUFFIX):
      continue
    _restore_replaced(staging + REPLACED_SUFFIX, out, say)
    if os.path.isdir(staging):
      shutil.rmtree(staging)
      say(f"warning: removed {staging}, a half-written dataset of a prepare run that was killed.")
    if os.path.lexists(staging + LOCK_SUFFIX):
      os.remove(staging + LOCK_SUFFIX)


def _in_use(lock: str) -> bool:
  """Whether a living run holds `lock` (a missing lock file has no owner)."""
  try:
    fd = os.open(lock, os.O_RDWR)
  except FileNotFoundError:
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return True
  finally:
    os.close(fd)
  return False


def _restore_replaced(old: str, out: str, say: Callable[[str], None]) -> None:
  """`old`, the dataset a killed --overwrite run was replacing: back to `out`, or removed when the
  new dataset is at `out`."""
  if not os.path.isdir(old):
    return
  if os.path.lexists(out):
    shutil.rmtree(old)
    say(f"warning: removed {old}, the dataset a killed prepare --overwrite run had replaced.")
    return
  os.rename(old, out)
  say(
    f"warning: a prepare run was killed while replacing {out}; put the dataset it was replacing "
    f"back there from {old}."
  )


# --- whether an existing dataset is whole ---------------------------------------------------------


def damage(out: str) -> str | None:
  """Why folder `out`, a dataset of this writer, cannot be used (a phrase naming the file); None
  when it is whole or is not such a dataset (no manifest.json of this writer, and entries other
  than its own). Reads the manifest, each mask and each h5 file's datasets and shapes (not their
  values)."""
  if not os.path.isdir(out):
    return None
  entries = set(os.listdir(out))
  ours = bool(entries) and entries <= DATASET_ENTRIES
  try:
    with open(os.path.join(out, MANIFEST), encoding="utf-8") as handle:
      manifest = json.load(handle)
    require(isinstance(manifest, dict) and "format_version" in manifest, "not this writer's")
  except FileNotFoundError:
    return f"it has no {MANIFEST}: a half-written dataset" if ours else None
  except (OSError, ValueError, InputError) as error:
    return f"{MANIFEST} is not readable: {type(error).__name__}" if ours else None
  try:
    expected = _expected_files(manifest)
  except (KeyError, TypeError, ValueError, AttributeError) as error:
    return f"{MANIFEST} lacks a field: {type(error).__name__} {error}"
  for relative, check in expected:
    reason = check(os.path.join(out, relative))
    if reason is not None:
      return f"{relative} {reason}"
  return None


def _expected_files(manifest: dict) -> list[tuple[str, Callable[[str], str | None]]]:
  """(relative path, check(path) -> why it is damaged or None) of every file `manifest` lists."""
  height, width = (int(n) for n in manifest["shape"])
  per_slice = str(manifest["layout"]).startswith("one")
  accs = list(manifest["masks"])
  expected = [
    (entry["file"], lambda path: _mask_damage(path, (height, width)))
    for entry in manifest["masks"].values()
  ]
  for split, volumes in manifest["volumes"].items():
    for name, slices in volumes.items():
      for acc in accs:
        folder = f"{split}/acc_{acc}"
        if per_slice:
          expected += [
            (f"{folder}/{name}_s{i:03d}.h5", _h5_check(acc, (height, width)))
            for i in range(int(slices))
          ]
        else:
          expected.append((f"{folder}/{name}.h5", _h5_check(acc, (height, width, int(slices)))))
  return expected


def _mask_damage(path: str, shape: tuple[int, int]) -> str | None:
  try:
    mask = np.load(path)
  except FileNotFoundError:
    return "is missing"
  except Exception as error:  # numpy raises many types for a damaged .npy
    return f"is not readable: {type(error).__name__}"
  return None if mask.shape == shape else f"has shape {mask.shape}, not {shape}"


def _h5_check(acc: str, shape: tuple[int, ...]) -> Callable[[str], str | None]:
  keys = (reference.TARGET_KEY, reference.input_key(acc), reference.kspace_key(acc))
  return lambda path: _h5_damage(path, keys, shape)


def _h5_damage(path: str, keys: tuple[str, ...], shape: tuple[int, ...]) -> str | None:
  """Why h5 file `path` lacks a dataset of `keys` of `shape` (its header only), or None."""
  import h5py

  if not os.path.exists(path):
    return "is missing"
  try:
    with h5py.File(path, "r") as h5file:
      for key in keys:
        item = h5file.get(key)
        if not isinstance(item, h5py.Dataset) or item.shape != shape:
          found = getattr(item, "shape", "none")
          return f"has no {key!r} dataset of shape {shape} (found {found})"
  except Exception as error:  # h5py raises OSError and others for a damaged file
    return f"is not readable: {type(error).__name__}"
  return None
