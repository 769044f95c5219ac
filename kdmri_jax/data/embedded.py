"""The embedded default dataset: real brain anatomy from the MNI ICBM152 2009a template inside
nilearn.

No download: the nilearn wheel ships `nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_
converted.nii.gz` (197×233×189, 1 mm, RAS). We read them with nibabel (nilearn itself is not
imported) and turn them into a brain set in the KD-MRI reference layout:

- axial slices whose grey+white-matter area is at least `min_brain_fraction` of the largest, shown
  radiologically (anterior up, patient right on the left), padded to a square and resampled to
  size×size (240 as the paper's brain data; super-resolution uses 256);
- split by slab: the slices are cut into slabs of `slab` mm, every 4th slab (starting with the 2nd)
  is validation, and training drops the `gap` slices next to a validation slab, so no validation
  slice has a near-duplicate (adjacent 1 mm) neighbour in training;
- training holds the original slices plus `copies` seeded augmented copies: left-right flip (p=1/2),
  anterior-posterior flip (p=1/4), rotation ±10°, scale 0.92–1.08, shift ±4%, and a contrast change
  from the tissue maps, image·(1 + a·GM + b·WM) with a, b ~ U(−0.25, 0.25), then a gamma in
  [0.8, 1.25];
- each volume is normalised by its maximum (targets in [0, 1]); masks are 1-D Cartesian rows masks
  (`masks.cartesian_mask` of the spec's `mask_family`, by default `masks.DEFAULT_FAMILY`, the
  authors' kind, seeded with the spec's `mask_seed`, by default `masks.DEFAULT_MASK_SEED`: the draw
  that has the authors' statistics at 240×240); zero-filled images are |IFFT2(m·FFT2(target))|.

It is built once per (size, parameters) into
`{cache_dir}/mni_icbm152_2009a_{size}_{family}_seed{mask_seed}[...]/` with `masks/mask_{acc}.npy`
and `manifest.json`, under a file lock, acceleration by acceleration as they are first asked for;
later calls reuse it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile

import numpy as np

from kdmri_jax import masks
from kdmri_jax.atomic import write_text_atomic
from kdmri_jax.errors import InputError, require

FORMAT_VERSION = 2
TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


@dataclasses.dataclass(frozen=True)
class BrainSpec:
  """Everything that decides the embedded dataset's content; part of the cache folder name."""

  size: int = 240
  copies: int = 3
  seed: int = 0
  slab: int = 10
  gap: int = 3
  min_brain_fraction: float = 0.2
  slice_step: int = 1  # >1 keeps every n-th slice: small sets for tests
  mask_family: str = masks.DEFAULT_FAMILY  # one of masks.MASK_FAMILIES
  mask_seed: int = masks.DEFAULT_MASK_SEED

  def folder_name(self) -> str:
    # The mask family and seed are always named: a cache made with other masks (another family, or a
    # default seed since changed) is never reused.
    name = f"mni_icbm152_2009a_{self.size}_{self.mask_family}_seed{self.mask_seed}"
    default = BrainSpec(size=self.size)
    named = ("size", "mask_family", "mask_seed")
    extras = [
      f"{f.name}{getattr(self, f.name)}"
      for f in dataclasses.fields(self)
      if f.name not in named and getattr(self, f.name) != getattr(default, f.name)
    ]
    return "_".join([name] + extras) + f"_v{FORMAT_VERSION}"


def template_paths() -> dict[str, str]:
  """Paths of the T1, GM and WM templates inside the installed nilearn package."""
  spec = importlib.util.find_spec("nilearn")
  require(
    spec is not None and spec.origin is not None,
    "the embedded brain needs the nilearn package (pip install nilearn); or set config.data.root.",
  )
  folder = os.path.join(os.path.dirname(spec.origin), "datasets", "data")
  paths = {kind: os.path.join(folder, TEMPLATE.format(kind)) for kind in ("t1", "gm", "wm")}
  for path in paths.values():
    require(
      os.path.isfile(path),
      f"{path} is missing from the installed nilearn; reinstall nilearn or set config.data.root.",
    )
  return paths


def load_template() -> dict[str, np.ndarray]:
  """T1, GM, WM as float32 (x, y, z) arrays in [0, 1]."""
  import nibabel as nib

  return {
    kind: np.asarray(nib.load(path).dataobj, dtype=np.float32) / 255.0
    for kind, path in template_paths().items()
  }


def to_axial_images(volume: np.ndarray, size: int) -> np.ndarray:
  """(x, y, z) RAS volume -> (z, size, size) axial images, anterior up, patient right on the
  left."""
  from scipy import ndimage

  images = np.transpose(volume, (2, 1, 0))[:, ::-1, ::-1]  # (z, y: A at top, x: R on the left)
  _, height, width = images.shape
  side = max(height, width)
  padded = np.zeros((len(images), side, side), np.float32)
  top, left = (side - height) // 2, (side - width) // 2
  padded[:, top : top + height, left : left + width] = images
  resized = ndimage.zoom(
    padded, (1, size / side, size / side), order=1, grid_mode=True, mode="grid-constant"
  )
  return np.clip(resized, 0.0, None).astype(np.float32)


def select_and_split(
  brain_area: np.ndarray, spec: BrainSpec
) -> tuple[np.ndarray, list[np.ndarray]]:
  """Training slice indices and the validation slabs (lists of slice indices), by the slab rule."""
  kept = np.nonzero(brain_area >= spec.min_brain_fraction * brain_area.max())[0]
  first, last = int(kept.min()), int(kept.max())
  slabs = [
    np.arange(start, min(start + spec.slab, last + 1))
    for start in range(first, last + 1, spec.slab)
  ]
  validation = [slab for number, slab in enumerate(slabs) if number % 4 == 1]
  blocked = set()
  for slab in validation:
    blocked.update(range(int(slab[0]) - spec.gap, int(slab[-1]) + spec.gap + 1))
  train = np.array([z for z in range(first, last + 1) if z not in blocked])
  step = spec.slice_step
  return train[::step], [slab[::step] for slab in validation]


def augment(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One seeded augmentation of an axial slice (see the module docstring); returns the new image."""
  from scipy import ndimage

  size = t1.shape[0]
  image = t1 * (1.0 + rng.uniform(-0.25, 0.25) * gm + rng.uniform(-0.25, 0.25) * wm)
  angle = np.deg2rad(rng.uniform(-10.0, 10.0))
  scale = rng.uniform(0.92, 1.08)
  shift = rng.uniform(-0.04, 0.04, size=2) * size
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
  centre = (np.array(t1.shape) - 1) / 2.0
  offset = centre - rotation @ (centre + shift)
  image = ndimage.affine_transform(image, rotation, offset=offset, order=1, mode="constant")
  if rng.random() < 0.5:
    image = image[:, ::-1]
  if rng.random() < 0.25:
    image = image[::-1, :]
  image = np.clip(image, 0.0, None)
  peak = image.max()
  if peak > 0:
    image = peak * (image / peak) ** rng.uniform(0.8, 1.25)
  return image.astype(np.float32)


def normalise(volume: np.ndarray) -> np.ndarray:
  """Per-volume max normalisation: the target's maximum becomes 1."""
  peak = float(volume.max())
  return (volume / peak if peak > 0 else volume).astype(np.float32)


def build_targets(spec: BrainSpec) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[int]]]:
  """({'train': {volume name: (S,H,W) target}, 'validation': {...}}, {split: template z
  indices})."""
  template = load_template()
  t1 = to_axial_images(template["t1"], spec.size)
  gm = to_axial_images(template["gm"], spec.size)
  wm = to_axial_images(template["wm"], spec.size)
  brain_area = ((template["gm"] + template["wm"]) > 0.5).sum(axis=(0, 1))
  train, validation = select_and_split(brain_area, spec)
  volumes = {"train": {"mni_train": normalise(t1[train])}, "validation": {}}
  for copy in range(1, spec.copies + 1):
    images = [
      augment(t1[z], gm[z], wm[z], np.random.default_rng([spec.seed, copy, int(z)])) for z in train
    ]
    volumes["train"][f"mni_train_aug{copy}"] = normalise(np.stack(images))
  for slab in validation:
    volumes["validation"][f"mni_val_z{int(slab[0]):03d}_{int(slab[-1]):03d}"] = normalise(t1[slab])
  z_indices = {
    "train": [int(z) for z in train],
    "validation": [int(z) for slab in validation for z in slab],
  }
  return volumes, z_indices


def write_acceleration(root: str, volumes: dict, acc: str, spec: BrainSpec) -> dict:
  """Writes mask_{acc}.npy and the {split}/acc_{acc}/*.h5 files of one acceleration into `root`."""
  from kdmri_jax.data import reference
  from kdmri_jax.data.writer import undersample

  mask = masks.cartesian_mask(
    (spec.size, spec.size), acc, seed=spec.mask_seed, direction="rows", family=spec.mask_family
  )
  os.makedirs(os.path.join(root, "masks"), exist_ok=True)
  np.save(os.path.join(root, "masks", f"mask_{acc}.npy"), mask)
  for split, named in volumes.items():
    for name, target in named.items():
      image, kspace = undersample(target, mask)
      reference.write_volume(
        os.path.join(root, split, f"acc_{acc}", f"{name}.h5"), target, image, kspace, acc
      )
  return {
    "mask": f"masks/mask_{acc}.npy",
    "mask_seed": spec.mask_seed,
    "mask_family": spec.mask_family,
    "direction": "rows",
    "achieved_acceleration": round(masks.acceleration(mask), 4),
  }


@contextlib.contextmanager
def _locked(path: str):
  import fcntl

  with open(path, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def _read_manifest(root: str) -> dict | None:
  try:
    with open(os.path.join(root, "manifest.json")) as handle:
      return json.load(handle)
  except (OSError, ValueError):
    return None


def _write_manifest(root: str, manifest: dict) -> None:
  write_text_atomic(os.path.join(root, "manifest.json"), json.dumps(manifest, indent=2))


def ensure(cache_dir: str, size: int = 240, accs=("4x", "5x", "8x"), **spec_fields) -> str:
  """The embedded dataset's root, built (or extended with missing accelerations) if needed."""
  spec = BrainSpec(size=int(size), **spec_fields)
  masks.check_family(spec.mask_family, "config.data.mask_family")
  accs = [f"{masks.parse_acceleration(a):g}x" for a in accs]
  _make_cache_dir(cache_dir)
  root = os.path.join(cache_dir, spec.folder_name())
  if not _missing(_read_manifest(root), accs):
    return root
  with _locked(os.path.join(cache_dir, ".embedded.lock")):
    manifest = _read_manifest(root)  # another process may have built it while we waited
    missing = _missing(manifest, accs)
    if missing:
      _build(cache_dir, root, spec, manifest, missing)
  return root


def _make_cache_dir(cache_dir: str) -> None:
  try:
    os.makedirs(cache_dir, exist_ok=True)
  except OSError as error:
    raise InputError(
      f"cannot create the data cache folder {cache_dir} "
      f"({error}); set config.data.cache_dir to a writable folder."
    ) from None


def _missing(manifest: dict | None, accs: list[str]) -> list[str]:
  """The accelerations of `accs` that the manifest (None: no dataset yet) does not list."""
  return [acc for acc in accs if manifest is None or acc not in manifest["accelerations"]]


def _build(
  cache_dir: str, root: str, spec: BrainSpec, manifest: dict | None, missing: list[str]
) -> None:
  """Writes the `missing` accelerations in a staging folder of `cache_dir`, then moves them into
  `root` (created when `manifest` is None) and writes the manifest last: the set counts as built
  only once it is written. Called under the cache's lock."""
  volumes, z_indices = build_targets(spec)
  staging = tempfile.mkdtemp(prefix=".building_", dir=cache_dir)
  try:
    built = {acc: write_acceleration(staging, volumes, acc, spec) for acc in missing}
    if manifest is None:
      if os.path.isdir(root):  # leftovers without a manifest are from a build that died
        shutil.rmtree(root)
      manifest = _new_manifest(spec, volumes, z_indices)
      os.makedirs(root)
    for acc in missing:
      _move_acceleration(staging, root, acc, splits=list(volumes))
      manifest["accelerations"][acc] = built[acc]
    _write_manifest(root, manifest)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _new_manifest(spec: BrainSpec, volumes: dict, z_indices: dict) -> dict:
  """The manifest of a new dataset, before any acceleration is added."""
  return {
    "format_version": FORMAT_VERSION,
    "source": "MNI ICBM152 2009a (nilearn)",
    "templates": {k: os.path.basename(p) for k, p in template_paths().items()},
    "spec": dataclasses.asdict(spec),
    "mask_family": spec.mask_family,
    "normalisation": "per-volume max",
    "zero_filled": "|IFFT2(mask * FFT2(target))|, orthonormal, unshifted",
    "slice_axis": "axial (z); h5 arrays are H x W x S",
    "counts": {
      split: {name: int(v.shape[0]) for name, v in named.items()}
      for split, named in volumes.items()
    },
    "slices": {
      split: int(sum(v.shape[0] for v in named.values())) for split, named in volumes.items()
    },
    "template_z": z_indices,
    "shape": [spec.size, spec.size],
    "accelerations": {},
  }


def _move_acceleration(staging: str, root: str, acc: str, splits: list[str]) -> None:
  """Moves one acceleration's split folders and mask from `staging` into `root`, replacing any
  older copy."""
  for split in splits:
    destination = os.path.join(root, split, f"acc_{acc}")
    if os.path.isdir(destination):
      shutil.rmtree(destination)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.replace(os.path.join(staging, split, f"acc_{acc}"), destination)
  os.makedirs(os.path.join(root, "masks"), exist_ok=True)
  os.replace(
    os.path.join(staging, "masks", f"mask_{acc}.npy"),
    os.path.join(root, "masks", f"mask_{acc}.npy"),
  )


def save_preview(root: str, path: str, acc: str = "4x", count: int = 4) -> None:
  """A PNG of a few targets (validation and augmented training) and their zero-filled images."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from kdmri_jax.data import reference

  picks = []
  for split in ("validation", "train"):
    for file in reference.list_volumes(root, split, acc):
      volume = reference.read_volume(file, acc, require_target=True)
      picks.append((volume, volume.num_slices // 2))
  picks = picks[:: max(1, len(picks) // count)][:count]
  fig, axes = plt.subplots(2, len(picks), figsize=(3 * len(picks), 6.4))
  axes = np.asarray(axes).reshape(2, -1)
  for column, (volume, index) in enumerate(picks):
    axes[0, column].imshow(volume.target[index], cmap="gray", vmin=0, vmax=1)
    axes[0, column].set_title(
      f"{volume.name}\nslice {index}, {volume.shape[0]}×{volume.shape[1]}", fontsize=8
    )
    axes[1, column].imshow(volume.input[index], cmap="gray", vmin=0, vmax=1)
    axes[1, column].set_title(f"zero-filled {acc}", fontsize=8)
  for axis in axes.ravel():
    axis.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
