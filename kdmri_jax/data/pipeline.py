"""The input pipeline on grain: seeded per-epoch shuffle, per-host sharding, batching, prefetch.

Rules (the same on every host, so a multi-host run stays in step):
- Shuffle: grain's global shuffle, `MapDataset.seed(seed).shuffle().repeat()`. Epoch e is elements
  e*N to (e+1)*N - 1 of that repeated dataset, a permutation grain draws from the pipeline seed and
  e without state, so epoch e has the same order on every host and after a restart, however many
  epochs ran before.
- Sharding: host `shard_index` of `shard_count` takes every `shard_count`-th example of the shuffled
  order (grain's `ds[shard_index::shard_count]`; training first trims the tail so every host has the
  same number of examples and steps). The hosts' pieces of global batch b are then exactly the
  examples of one process's batch b.
- Resume: `skip_batches=k` sets the grain iterator's next index to k, so epoch e starts at its
  (k+1)-th batch; the iterator's checkpoint state (`get_state()`) is then an uninterrupted one's.
- Training batches (`drop_remainder=True`): the last partial batch of an epoch is dropped; since the
  order changes each epoch, a different handful of slices is left out each time. Without it the
  last batch is smaller.
- Evaluation batches: no shuffle, contiguous shards, every example once; the last batch is smaller
  unless `pad=True`, which pads it with zero examples to the full batch size
  (`grain.experimental.batch_and_pad`) and adds a boolean 'valid' (B,) to every batch so metrics can
  ignore the padding (needed when a batch must divide a device mesh).
- Batches are dicts of NumPy arrays with a leading batch axis, produced by `num_threads` background
  threads that keep `prefetch` batches ready ahead of the consumer (`grain.ReadOptions`; 0 threads
  reads in the caller). An array every example of a full batch shares (the mask) is a read-only
  broadcast view, (B,H,W) without B copies.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from kdmri_jax.errors import require

DEFAULT_THREADS = 2
DEFAULT_PREFETCH = 8


def epoch_dataset(dataset: Any, seed: int, epoch: int, shuffle: bool = True) -> Any:
  """Epoch `epoch` of a grain MapDataset: grain's shuffle of that epoch of the repeated dataset, or
  the dataset in order."""
  n = len(dataset)
  if not shuffle or not n:
    return dataset
  return dataset.seed(int(seed)).shuffle().repeat(int(epoch) + 1)[int(epoch) * n:]


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """The example order of one epoch (all hosts), a permutation of range(num_examples)."""
  import grain

  dataset = epoch_dataset(grain.MapDataset.range(num_examples), seed, epoch, shuffle)
  return np.asarray([dataset[i] for i in range(len(dataset))], dtype=np.int64)


def require_shard(shard_index: int, shard_count: int) -> None:
  """One sentence unless `shard_index` names one of `shard_count` hosts."""
  require(shard_count >= 1 and 0 <= shard_index < shard_count,
          f"shard_index {shard_index} must be in [0, shard_count={shard_count}).")


def shard_bounds(num_examples: int, shard_count: int) -> np.ndarray:
  """Evaluation's contiguous shards: host h holds examples bounds[h] to bounds[h + 1] - 1 (sizes
  differ by at most one); shape (shard_count + 1,)."""
  return np.linspace(0, num_examples, shard_count + 1).astype(int)


def shard(dataset: Any, shard_index: int, shard_count: int, even: bool) -> Any:
  """This host's examples: every shard_count-th of `dataset` (equal lengths when `even`)."""
  require_shard(shard_index, shard_count)
  if even:
    dataset = dataset[:len(dataset) - len(dataset) % shard_count]
  return dataset[shard_index::shard_count]


def _stack(examples) -> dict[str, np.ndarray]:
  """Stacks examples along a new batch axis; an array shared by all (the mask) becomes a read-only view."""
  batch = {}
  for key, first in examples[0].items():
    if all(e[key] is first for e in examples):
      batch[key] = np.broadcast_to(first, (len(examples),) + np.shape(first))
    else:
      batch[key] = np.stack([e[key] for e in examples])
  return batch


def _stack_and_pad(batch_size: int):
  """A batch function: full batches as `_stack`, a short one padded with zero examples."""
  import grain

  def batch_fn(examples):
    if len(examples) == batch_size:
      return _stack(examples)
    return grain.experimental.batch_and_pad(examples, batch_size=batch_size)

  return batch_fn


def _batches(dataset, batch_size: int, drop_remainder: bool, skip_batches: int, num_threads: int,
             prefetch: int, pad: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """A grain iterator over `dataset`'s batches, from batch `skip_batches` on."""
  import grain

  require(batch_size >= 1, f"batch size must be at least 1, got {batch_size}.")
  batch_fn = _stack_and_pad(batch_size) if pad else _stack
  batches = dataset.batch(batch_size, drop_remainder=drop_remainder, batch_fn=batch_fn)
  threads = max(0, int(num_threads))  # 0: synchronous, for debugging
  buffer = max(1, int(prefetch)) if threads else 0
  options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer)
  iterator = iter(batches.to_iter_dataset(options))
  if skip_batches:
    grain.experimental.set_next_index(iterator, min(int(skip_batches), len(batches)))
  return iterator


def num_train_batches(num_examples: int, batch_size: int, drop_remainder: bool = True,
                      shard_count: int = 1) -> int:
  """Batches per epoch on one host, under the rules above."""
  per_host = num_examples // shard_count
  return per_host // batch_size if drop_remainder else -(-per_host // batch_size)


def train_batches(source, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  drop_remainder: bool = True, shard_index: int = 0, shard_count: int = 1,
                  skip_batches: int = 0, num_threads: int = DEFAULT_THREADS,
                  prefetch: int = DEFAULT_PREFETCH) -> Iterator[dict[str, np.ndarray]]:
  """One training epoch of batches; the same (seed, epoch) gives the same batches."""
  import grain

  examples = epoch_dataset(grain.MapDataset.source(source), seed, epoch, shuffle)
  examples = shard(examples, shard_index, shard_count, even=True)
  require(not drop_remainder or len(examples) >= batch_size,
          f"the training data has {len(source)} slices ({len(examples)} on this host), fewer than "
          f"the batch size {batch_size}, so an epoch would have no batch; lower "
          "config.train.batch_size or add data.")
  return _batches(examples, batch_size, drop_remainder, skip_batches, num_threads, prefetch)


def eval_batches(source, batch_size: int, shard_index: int = 0, shard_count: int = 1, pad: bool = False,
                 num_threads: int = DEFAULT_THREADS,
                 prefetch: int = DEFAULT_PREFETCH) -> Iterator[dict[str, np.ndarray]]:
  """Every example once, in order, the last batch kept (smaller, or padded with `pad`)."""
  import grain

  require_shard(shard_index, shard_count)
  # Contiguous shards keep each host's volumes together, for per-volume metrics.
  bounds = shard_bounds(len(source), shard_count)
  examples = grain.MapDataset.source(source)[bounds[shard_index]:bounds[shard_index + 1]]
  if pad:
    examples = examples.map(lambda e: dict(e, valid=np.bool_(True)))
  return _batches(examples, batch_size, False, 0, num_threads, prefetch, pad=pad)
