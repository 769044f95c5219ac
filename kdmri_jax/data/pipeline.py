"""The input pipeline on grain: seeded per-epoch shuffle, per-host sharding, batching, background
prefetch.

Rules (the same on every host, so a multi-host run stays in step):
- Shuffle: a permutation of all examples drawn from `(seed, epoch)`, so epoch e has the same order
  on every host and after a restart. `skip_batches=k` starts epoch e at its (k+1)-th batch to resume
  mid-epoch.
- Sharding: host `shard_index` of `shard_count` takes every `shard_count`-th example of the shuffled
  order (training: the tail is trimmed so every host has the same number of examples and steps).
- Training batches (`drop_remainder=True`): the last partial batch of an epoch is dropped; since the
  order changes each epoch, a different handful of slices is left out each time. Without it the last
  batch is smaller.
- Evaluation batches: no shuffle, contiguous shards, every example once; the last batch is smaller
  unless `pad=True`, which pads it with zero examples to the full batch size and adds a boolean
  'valid' (B,) to every batch so metrics can ignore the padding (needed when a batch must divide a
  device mesh).
- Batches are dicts of NumPy arrays with a leading batch axis, produced by `num_threads` background
  threads that keep `prefetch` batches ready ahead of the consumer. An array every example shares
  (the mask) is a read-only broadcast view, (B,H,W) without B copies.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from kdmri_jax.errors import require

DEFAULT_THREADS = 2
DEFAULT_PREFETCH = 8


def epoch_seed(seed: int, epoch: int) -> int:
  """A 32-bit seed for the shuffle of `epoch`, independent across epochs."""
  return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """The example order of one epoch (all hosts), a permutation of range(num_examples)."""
  if not shuffle:
    return np.arange(num_examples)
  return np.random.default_rng(epoch_seed(seed, epoch)).permutation(num_examples)


def require_shard(shard_index: int, shard_count: int) -> None:
  """One sentence unless `shard_index` names one of `shard_count` hosts."""
  require(
    shard_count >= 1 and 0 <= shard_index < shard_count,
    f"shard_index {shard_index} must be in [0, shard_count={shard_count}).",
  )


def shard_bounds(num_examples: int, shard_count: int) -> np.ndarray:
  """Evaluation's contiguous shards: host h holds examples bounds[h] to bounds[h + 1] - 1 (sizes
  differ by at most one); shape (shard_count + 1,)."""
  return np.linspace(0, num_examples, shard_count + 1).astype(int)


def shard_order(order: np.ndarray, shard_index: int, shard_count: int, even: bool) -> np.ndarray:
  """This host's examples: every shard_count-th of `order` (trimmed to equal length when `even`)."""
  require_shard(shard_index, shard_count)
  if even:
    order = order[: len(order) - len(order) % shard_count]
  return order[shard_index::shard_count]


def _stack(examples) -> dict[str, np.ndarray]:
  """Stacks examples along a new batch axis; an array shared by all (the mask) becomes a read-only
  view."""
  batch = {}
  for key, first in examples[0].items():
    if all(e[key] is first for e in examples):
      batch[key] = np.broadcast_to(first, (len(examples),) + np.shape(first))
    else:
      batch[key] = np.stack([e[key] for e in examples])
  return batch


def _batches(
  source,
  order: np.ndarray,
  batch_size: int,
  drop_remainder: bool,
  skip_batches: int,
  num_threads: int,
  prefetch: int,
  pad: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  import grain

  require(batch_size >= 1, f"batch size must be at least 1, got {batch_size}.")
  if not len(order):
    return iter(())
  dataset = grain.MapDataset.source(order.tolist()).map(lambda i: source[i])
  if pad:
    dataset = dataset.map(lambda e: dict(e, valid=np.bool_(True)))
    missing = -len(order) % batch_size
    if missing:
      blank = {key: np.zeros_like(value) for key, value in source[int(order[0])].items()}
      blank["valid"] = np.bool_(False)
      dataset = grain.MapDataset.concatenate([dataset, grain.MapDataset.source([blank] * missing)])
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, batch_fn=_stack)
  if skip_batches:
    dataset = dataset[int(skip_batches) :]
  if num_threads <= 0:  # synchronous, for debugging
    return (dataset[i] for i in range(len(dataset)))
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(1, prefetch))
  return iter(dataset.to_iter_dataset(options))


def num_train_batches(
  num_examples: int, batch_size: int, drop_remainder: bool = True, shard_count: int = 1
) -> int:
  """Batches per epoch on one host, under the rules above."""
  per_host = num_examples // shard_count
  return per_host // batch_size if drop_remainder else -(-per_host // batch_size)


def train_batches(
  source,
  batch_size: int,
  seed: int,
  epoch: int,
  shuffle: bool = True,
  drop_remainder: bool = True,
  shard_index: int = 0,
  shard_count: int = 1,
  skip_batches: int = 0,
  num_threads: int = DEFAULT_THREADS,
  prefetch: int = DEFAULT_PREFETCH,
) -> Iterator[dict[str, np.ndarray]]:
  """One training epoch of batches; the same (seed, epoch) gives the same batches."""
  order = epoch_order(len(source), seed, epoch, shuffle)
  order = shard_order(order, shard_index, shard_count, even=True)
  require(
    not drop_remainder or len(order) >= batch_size,
    f"the training data has {len(source)} slices ({len(order)} on this host), fewer than the batch "
    f"size {batch_size}, so an epoch would have no batch; lower config.train.batch_size or add "
    f"data.",
  )
  return _batches(source, order, batch_size, drop_remainder, skip_batches, num_threads, prefetch)


def eval_batches(
  source,
  batch_size: int,
  shard_index: int = 0,
  shard_count: int = 1,
  pad: bool = False,
  num_threads: int = DEFAULT_THREADS,
  prefetch: int = DEFAULT_PREFETCH,
) -> Iterator[dict[str, np.ndarray]]:
  """Every example once, in order, the last batch kept (smaller, or padded with `pad`)."""
  require_shard(shard_index, shard_count)
  # Contiguous shards keep each host's volumes together, for per-volume metrics.
  bounds = shard_bounds(len(source), shard_count)
  order = np.arange(bounds[shard_index], bounds[shard_index + 1])
  return _batches(source, order, batch_size, False, 0, num_threads, prefetch, pad=pad)
