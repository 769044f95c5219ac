"""A tensorflow-datasets builder for reference-layout data, stored as `array_record` (no TensorFlow
needed).

`build(root, name, acc, data_dir)` turns `{root}/{train,validation}/acc_{acc}/*.h5` into the TFDS
dataset `kdmri_mri/{name}_{acc}` under `data_dir` (default `{root}/tfds`); it is then read by name
with random access, e.g. `tfds.data_source('kdmri_mri/brain_4x', data_dir=...)`, and by
`load_source` as a source for the grain pipeline (config.data.source = 'tfds'). Each record is one
slice: input, target (H,W float32), kspace (H,W,2 float32 real/imag: TFDS has no complex tensors
without TensorFlow), the volume name and slice number. Records keep file/slice order
(`disable_shuffling`), so volumes stay contiguous for per-volume metrics; the pipeline shuffles.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from kdmri_jax.data import reference
from kdmri_jax.errors import require

NAME = "kdmri_mri"
CONFIG_NAMES = ("brain", "cardiac", "knee", "embedded", "custom")
ACCS = ("4x", "5x", "8x")


def _builder_class():
  import tensorflow_datasets as tfds

  class KdmriMri(tfds.core.GeneratorBasedBuilder):
    """KD-MRI reference-layout slices; config `{dataset}_{acc}`."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=f"{name}_{acc}") for name in CONFIG_NAMES for acc in ACCS
    ]

    def __init__(self, *, root: str | None = None, **kwargs):
      self._root = root
      super().__init__(**kwargs)

    @property
    def acc(self) -> str:
      return self.builder_config.name.rsplit("_", 1)[1]

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        description="KD-MRI reference-layout slices (kdmri_jax.data.tfds_builder).",
        features=_features(tfds),
      )

    def _split_generators(self, dl_manager):
      require(
        self._root is not None,
        f"building {self.name}/{self.builder_config.name} needs the data root.",
      )
      paths = _split_paths(self._root, self.acc)
      require(len(paths) > 0, f"{self._root} has no data for acceleration {self.acc}.")
      self.info.metadata["root"] = os.path.abspath(self._root)
      self.info.metadata["volumes"] = {
        split: _volume_index(split_paths, self.acc) for split, split_paths in paths.items()
      }
      return {split: self._generate_examples(split_paths) for split, split_paths in paths.items()}

    def _generate_examples(self, paths):
      return _slice_examples(paths, self.acc)

  return KdmriMri


def _features(tfds):
  """One record: input and target (H,W), k-space as (H,W,2) real/imag, volume name, slice."""
  image = tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes")
  return tfds.features.FeaturesDict(
    {
      "input": image,
      "target": image,
      "kspace": tfds.features.Tensor(shape=(None, None, 2), dtype=np.float32, encoding="bytes"),
      "volume": tfds.features.Text(),
      "slice": tfds.features.Scalar(dtype=np.int32),
    }
  )


def _split_paths(root: str, acc: str) -> dict[str, list[str]]:
  """{split: its volume files} for the splits of `root` that have acceleration `acc`."""
  return {
    split: reference.list_volumes(root, split, acc)
    for split in reference.SPLITS
    if os.path.isdir(reference.split_dir(root, split, acc))
  }


def _volume_index(paths: list[str], acc: str) -> list[list]:
  """[[volume name, slice count], ...] of `paths`, in record order (the dataset's metadata)."""
  return [[os.path.splitext(os.path.basename(p))[0], _slice_count(p, acc)] for p in paths]


def _slice_examples(paths: list[str], acc: str) -> Iterator[tuple[str, dict[str, Any]]]:
  """(key, record) of every slice of `paths`, in file then slice order."""
  for path in paths:
    volume = reference.read_volume(path, acc, require_target=True)
    for index in range(volume.num_slices):
      yield (
        f"{volume.name}/{index:05d}",
        {
          "input": volume.input[index],
          "target": volume.target[index],
          "kspace": np.stack([volume.kspace[index].real, volume.kspace[index].imag], axis=-1),
          "volume": volume.name,
          "slice": index,
        },
      )


_CLASS = None


def builder_class():
  """The builder class, defined (and registered with TFDS) on first use."""
  global _CLASS
  if _CLASS is None:
    _CLASS = _builder_class()
  return _CLASS


def build(root: str, name: str, acc: str, data_dir: str | None = None):
  """Builds `kdmri_mri/{name}_{acc}` from a reference root if not built yet; returns the builder."""
  require(name in CONFIG_NAMES, f"TFDS config name {name!r} is not one of {CONFIG_NAMES}.")
  require(acc in ACCS, f"acceleration {acc!r} is not one of {ACCS} for the TFDS builder.")
  import tensorflow_datasets as tfds

  tfds.display_progress_bar(False)
  data_dir = data_dir or os.path.join(root, "tfds")
  builder = builder_class()(
    root=root, config=f"{name}_{acc}", data_dir=data_dir, file_format="array_record"
  )
  builder.download_and_prepare()
  return builder


class TfdsSource:
  """An array_record split as a kdmri source: `[i] -> {'input','target','kspace' complex64,
  'mask'}`."""

  def __init__(self, data_source, mask: np.ndarray | None = None, volumes=None):
    self.data_source = data_source
    self.mask = mask
    first = data_source[0]
    self.shape = tuple(first["target"].shape)
    self.names = [name for name, _ in volumes or []]
    self._volumes = volumes

  def __len__(self) -> int:
    return len(self.data_source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    record = self.data_source[int(index)]
    kspace = record["kspace"]
    example = {
      "input": record["input"],
      "target": record["target"],
      "kspace": (kspace[..., 0] + 1j * kspace[..., 1]).astype(np.complex64),
    }
    if self.mask is not None:
      example["mask"] = self.mask
    return example

  def locate(self, index: int) -> tuple[str, int]:
    record = self.data_source[int(index)]
    volume = record["volume"]
    return (volume.decode() if isinstance(volume, bytes) else str(volume)), int(record["slice"])

  def volume_ranges(self) -> list[tuple[str, range]]:
    ranges, start = [], 0
    for name, count in self._volumes:
      ranges.append((name, range(start, start + count)))
      start += count
    return ranges


def load_source(
  root: str, split: str, acc: str, mask: np.ndarray | None = None, config=None
) -> TfdsSource:
  """The TFDS dataset of a reference root (built on first use) as a source for the pipeline."""
  if config is None:
    name, data_dir = "custom", None
  else:
    name = "embedded" if config.data.root is None else config.dataset
    name, data_dir = (name if name in CONFIG_NAMES else "custom"), config.data.tfds_dir
  builder = build(root, name, acc, data_dir)
  require(
    split in builder.info.splits,
    f"the TFDS dataset {builder.name}/{builder.builder_config.name} has "
    f"no '{split}' split (splits: {list(builder.info.splits)}).",
  )
  volumes = builder.info.metadata.get("volumes", {}).get(split, [])
  return TfdsSource(builder.as_data_source()[split], mask, volumes)


def _slice_count(path: str, acc: str) -> int:
  from kdmri_jax.data.sources import _header  # pylint: disable=import-outside-toplevel

  return int(_header(path, acc, require_target=True)["slices"])
