"""Global batches for the training loop, on top of `kdmri_jax.data.pipeline`, for one or many hosts.

A source is anything with `__len__` and `__getitem__(i)` returning one example as a dict of arrays
without the batch axis (`input`, `target` and, for reconstruction, `kspace` and `mask`). Training
batches follow the data pipeline's rules: epoch `e`'s order depends on `(seed, e)` only, so a run
restarted at step `s` resumes with batch `s mod steps_per_epoch` of epoch `s div steps_per_epoch`
and sees exactly the batches of an uninterrupted run; host `h` of `n` takes every n-th example, so
the hosts' pieces of global batch `b` are exactly the examples a single process puts in its batch
`b` (in another row order, which a mean loss does not see). Evaluation pads so that every host runs
the same number of equally shaped steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax
import numpy as np

from kdmri_jax.data import pipeline


@dataclasses.dataclass
class Batches:
  """This process's part of global batches of `batch_size` examples of `source`."""

  source: Any
  batch_size: int  # global, over all processes
  seed: int = 0
  num_threads: int = 0
  shard_index: int = dataclasses.field(default_factory=jax.process_index)
  shard_count: int = dataclasses.field(default_factory=jax.process_count)

  @property
  def local_batch_size(self) -> int:
    return self.batch_size // self.shard_count

  @property
  def rows(self) -> slice:
    """The rows of a global batch this process supplies
    (`jax.make_array_from_process_local_data`)."""
    return slice(
      self.shard_index * self.local_batch_size, (self.shard_index + 1) * self.local_batch_size
    )

  @property
  def steps_per_epoch(self) -> int:
    """Full global batches per epoch (the remainder is dropped, a different one each epoch)."""
    return pipeline.num_train_batches(
      len(self.source), self.local_batch_size, True, self.shard_count
    )

  def epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches start, start+1, ... of `epoch` (shuffled by (seed, epoch))."""
    return pipeline.train_batches(
      self.source,
      self.local_batch_size,
      self.seed,
      epoch,
      shard_index=self.shard_index,
      shard_count=self.shard_count,
      skip_batches=start,
      num_threads=self.num_threads,
    )

  def evaluation(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(batch, weight) over every example once; padding rows (and whole padding batches on hosts
    with fewer examples) have weight 0."""
    n = len(self.source)
    bounds = pipeline.shard_bounds(n, self.shard_count)  # the pipeline's contiguous shards
    total = -(-int(np.max(np.diff(bounds))) // self.local_batch_size)
    done = 0
    for batch in pipeline.eval_batches(
      self.source,
      self.local_batch_size,
      self.shard_index,
      self.shard_count,
      pad=True,
      num_threads=self.num_threads,
    ):
      weight = np.asarray(batch.pop("valid"), np.float32)
      done += 1
      yield batch, weight
    if done < total:
      blank = {
        k: np.zeros((self.local_batch_size,) + np.shape(v), np.asarray(v).dtype)
        for k, v in self.source[0].items()
      }
      for _ in range(total - done):
        yield blank, np.zeros(self.local_batch_size, np.float32)

  def examples(self, indices: Any) -> dict[str, np.ndarray]:
    """A batch of the given examples (for image summaries; every process reads all of them)."""
    examples = [self.source[int(i)] for i in indices]
    return {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}


def synthetic_source(count: int, size: int = 16, acc: float = 4.0, seed: int = 0):
  """`count` smooth random (size, size) targets with their undersampled k-space and zero-filled
  images: a tiny in-memory reconstruction source for tests and smoke runs (no files)."""
  from scipy import ndimage

  from kdmri_jax import masks
  from kdmri_jax.data.sources import ArraySource

  rng = np.random.default_rng(seed)
  targets = ndimage.gaussian_filter(rng.random((count, size, size)), sigma=(0, 1.5, 1.5))
  targets = (targets / targets.max(axis=(1, 2), keepdims=True)).astype(np.float32)
  mask = masks.cartesian_mask((size, size), acc, seed=0)
  kspace = (np.fft.fft2(targets, norm="ortho") * mask).astype(np.complex64)
  zero_filled = np.abs(np.fft.ifft2(kspace, norm="ortho")).astype(np.float32)
  return ArraySource({"input": zero_filled, "target": targets, "kspace": kspace}, mask=mask)
