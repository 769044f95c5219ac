"""Data for kdmri_jax: the reference h5 layout, readers, preparation, the embedded brain and the
pipeline.

`load_split(config, 'train' | 'validation')` is the one entry point training and evaluation use: it
finds the data (a prepared root, or the embedded MNI brain when `config.data.root` is None and the
dataset is brain), the mask, and returns a random-access source of single examples. `train_batches`
/ `eval_batches` (data/pipeline.py) turn a source into batches.
"""

from __future__ import annotations

import os

from kdmri_jax import masks
from kdmri_jax.data import reference
from kdmri_jax.data.pipeline import eval_batches, num_train_batches, train_batches
from kdmri_jax.data.reference import Volume, list_volumes, read_volume, write_volume
from kdmri_jax.errors import InputError, require

__all__ = [
  "Volume",
  "read_volume",
  "write_volume",
  "list_volumes",
  "load_split",
  "train_batches",
  "eval_batches",
  "num_train_batches",
  "embedded_brain_root",
  "mask_path_for",
  "DATASETS",
]

# Image shapes and mask directions of the paper's datasets (reference code).
DATASETS = {
  "brain": ((240, 240), "rows"),
  "cardiac": ((150, 150), "rows"),
  "knee": ((640, 368), "columns"),
}
SPLIT_NAMES = {
  "train": "train",
  "validation": "validation",
  "val": "validation",
  "valid": "validation",
}
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "kdmri_jax")


def embedded_brain_root(
  cache_dir: str | None = None, size: int = 240, accs: tuple[str, ...] = ("4x", "5x", "8x"), **spec
) -> str:
  """The embedded MNI brain dataset in the reference layout (built into `cache_dir` on first use).

  `spec` overrides `kdmri_jax.data.embedded.BrainSpec` fields (seed, copies, slice_step, ...).
  """
  from kdmri_jax.data import embedded

  return embedded.ensure(cache_dir or DEFAULT_CACHE, size=size, accs=accs, **spec)


def mask_path_for(root: str, acc: str) -> str:
  return os.path.join(root, "masks", f"mask_{acc}.npy")


def data_root(config, acc: str | None = None) -> str:
  """`config.data.root`, or the embedded brain for dataset 'brain'; an InputError otherwise."""
  if config.data.root is not None:
    return os.fspath(config.data.root)
  if config.dataset == "brain":
    data = config.data
    return embedded_brain_root(
      data.cache_dir,
      size=int(data.image_size),
      accs=(acc or config.acc,),
      seed=int(data.seed),
      mask_family=data.mask_family,
      mask_seed=int(data.mask_seed),
    )
  raise InputError(
    f"dataset '{config.dataset}' needs a data root: set config.data.root "
    f"(e.g. --config.data.root=ROOT) to a folder in the reference layout "
    f"ROOT/{{train,validation}}/acc_<acc>/*.h5, or prepare one from "
    f"fully-sampled volumes with `python -m kdmri_jax.prepare --input "
    f"VOLUMES --dataset {config.dataset} --acc 4x 5x 8x --out ROOT`."
  )


def mask_file_for(config, root: str, acc: str) -> str:
  """`config.data.mask_path`, or the data's own `ROOT/masks/mask_{acc}.npy`."""
  return os.fspath(config.data.mask_path or mask_path_for(root, acc))


def load_mask_for(config, root: str, acc: str, shape: tuple[int, int]):
  path = mask_file_for(config, root, acc)
  require(
    os.path.isfile(path),
    f"no undersampling mask at {path}; set config.data.mask_path to the "
    f"{acc} mask (.npy, H×W, 0/1, unshifted) or prepare the data with "
    f"`python -m kdmri_jax.prepare`, which writes ROOT/masks/mask_{acc}.npy.",
  )
  return masks.load_mask(path, shape)


def load_split(config, split: str):
  """A random-access source of one split: `len`, `[i] -> dict`, `.mask` (reconstruction).

  Reconstruction examples are {'input','target','kspace','mask'}; for `config.task ==
  'super_resolution'` the targets are wrapped by `kdmri_jax.data.sr.SuperResolutionSource` into
  {'input','target'}. `config.data.max_slices` keeps that many examples spread evenly over the
  split. Sources also offer `shape`, `locate(i) -> (volume, slice)` and `volume_ranges()` for
  per-volume metrics. Data whose k-space has samples outside the mask (a `config.data.mask_path` not
  the data's own) is refused.
  """
  require(split in SPLIT_NAMES, f"split {split!r} is not one of 'train', 'validation'.")
  split = SPLIT_NAMES[split]
  acc = str(config.acc)
  root = data_root(config, acc)
  if config.data.source == "tfds":
    from kdmri_jax.data import tfds_builder

    source = tfds_builder.load_source(root, split, acc, mask=None, config=config)
  else:
    from kdmri_jax.data.sources import ReferenceSource

    source = ReferenceSource(list_volumes(root, split, acc), acc, mask=None)
  max_slices = config.data.max_slices
  if max_slices is not None:
    require(max_slices >= 1, f"config.data.max_slices={max_slices} must be at least 1.")
    from kdmri_jax.data.sources import SubsetSource

    source = SubsetSource.evenly_spaced(source, max_slices)
  if config.task == "super_resolution":
    from kdmri_jax.data.sr import SuperResolutionSource  # written by the super-resolution module

    return SuperResolutionSource(source, config)
  source.mask = load_mask_for(config, root, acc, source.shape)
  kspace, data_file = _first_kspace(config, root, split, acc, source)
  mask_file = mask_file_for(config, root, acc)
  reference.require_kspace_within_mask(kspace, source.mask, data_file, mask_file)
  return source


def _first_kspace(config, root: str, split: str, acc: str, source):
  """(k-space, file name) of the split's first volume, for the mask check: one volume is enough, as
  every file of a split is undersampled with the same mask."""
  if config.data.source == "tfds":
    return source[0]["kspace"], f"{root} ({split} {acc}, TFDS)"
  path = list_volumes(root, split, acc)[0]
  return read_volume(path, acc).kspace, path
