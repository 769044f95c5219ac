"""Tests of the slice sources and the grain input pipeline (kdmri_jax.data.sources / .pipeline)."""

import numpy as np
import pytest

from kdmri_jax.data import pipeline, reference
from kdmri_jax.data.sources import ArraySource, ReferenceSource, SubsetSource
from kdmri_jax.errors import InputError


def _source(n=10, shape=(8, 8)):
  ids = np.arange(n, dtype=np.float32)[:, None, None] * np.ones(shape, np.float32)
  return ArraySource({"input": ids, "target": ids}, mask=np.ones(shape))


def _ids(batches):
  return [int(i) for b in batches for i in b["input"][:, 0, 0]]


def test_train_batches_are_reproducible_per_epoch():
  source = _source()
  first = _ids(pipeline.train_batches(source, 3, seed=42, epoch=0))
  assert first == _ids(pipeline.train_batches(source, 3, seed=42, epoch=0))
  assert first != _ids(pipeline.train_batches(source, 3, seed=42, epoch=1))
  assert first != _ids(pipeline.train_batches(source, 3, seed=7, epoch=0))
  assert len(first) == 9 and len(set(first)) == 9  # 10 examples, batch 3: the remainder is dropped


def test_batches_are_numpy_dicts_with_a_batch_axis():
  batch = next(iter(pipeline.train_batches(_source(), 4, seed=0, epoch=0)))
  assert set(batch) == {"input", "target", "mask"}
  assert isinstance(batch["input"], np.ndarray) and batch["input"].shape == (4, 8, 8)
  assert batch["mask"].shape == (4, 8, 8)


def test_skip_batches_resumes_mid_epoch():
  source = _source(20)
  full = list(pipeline.train_batches(source, 4, seed=3, epoch=2))
  resumed = list(pipeline.train_batches(source, 4, seed=3, epoch=2, skip_batches=2))
  assert _ids(resumed) == _ids(full[2:])


def test_keep_remainder_and_no_shuffle():
  batches = list(
    pipeline.train_batches(_source(10), 4, seed=0, epoch=0, shuffle=False, drop_remainder=False)
  )
  assert [len(b["input"]) for b in batches] == [4, 4, 2]
  assert _ids(batches) == list(range(10))
  assert pipeline.num_train_batches(10, 4, drop_remainder=False) == 3
  assert pipeline.num_train_batches(10, 4) == 2


def test_shards_are_disjoint_and_equal():
  source = _source(11)
  shards = [
    _ids(pipeline.train_batches(source, 1, seed=1, epoch=0, shard_index=i, shard_count=3))
    for i in range(3)
  ]
  assert [len(s) for s in shards] == [
    3,
    3,
    3,
  ]  # 11 // 3 each: every host runs the same number of steps
  assert len(set(sum(shards, []))) == 9


def test_eval_batches_cover_everything_in_order_and_pad():
  source = _source(10)
  assert _ids(pipeline.eval_batches(source, 4)) == list(range(10))
  padded = list(pipeline.eval_batches(source, 4, pad=True))
  assert [b["input"].shape[0] for b in padded] == [4, 4, 4]
  assert padded[-1]["valid"].tolist() == [True, True, False, False]
  halves = [_ids(pipeline.eval_batches(source, 3, shard_index=i, shard_count=2)) for i in range(2)]
  assert halves == [list(range(5)), list(range(5, 10))]


def test_synchronous_mode_matches_threads():
  source = _source(12)
  threaded = _ids(pipeline.train_batches(source, 4, seed=5, epoch=1))
  assert threaded == _ids(pipeline.train_batches(source, 4, seed=5, epoch=1, num_threads=0))


def test_bad_shard_index():
  with pytest.raises(InputError, match="shard_index"):
    pipeline.train_batches(_source(), 2, 0, 0, shard_index=2, shard_count=2)
  with pytest.raises(InputError, match="shard_index"):
    pipeline.eval_batches(_source(), 2, shard_index=-1, shard_count=2)


def test_shard_bounds_are_the_evaluation_shards():
  assert pipeline.shard_bounds(10, 3).tolist() == [0, 3, 6, 10]  # floor of 0, 10/3, 20/3, 10
  assert pipeline.shard_bounds(3, 4).tolist() == [0, 0, 1, 2, 3]  # more hosts than examples
  assert pipeline.shard_bounds(7, 1).tolist() == [0, 7]
  source = _source(10)
  shards = [_ids(pipeline.eval_batches(source, 2, shard_index=i, shard_count=3)) for i in range(3)]
  assert shards == [list(range(0, 3)), list(range(3, 6)), list(range(6, 10))]


def _write(tmp_path, names=("a", "b"), slices=3, shape=(8, 8)):
  rng = np.random.default_rng(0)
  for name in names:
    target = rng.random((slices,) + shape).astype(np.float32)
    reference.write_volume(tmp_path / f"{name}.h5", target, target * 0.5, np.fft.fft2(target), "4x")
  return sorted(str(p) for p in tmp_path.glob("*.h5"))


def test_reference_source_in_memory_and_lazy_agree(tmp_path):
  paths = _write(tmp_path)
  eager = ReferenceSource(paths, "4x", np.ones((8, 8)))
  lazy = ReferenceSource(paths, "4x", np.ones((8, 8)), max_memory_bytes=0)
  assert len(eager) == len(lazy) == 6 and eager.shape == (8, 8)
  for index in (0, 4, 5):
    for key in ("input", "target", "kspace", "mask"):
      np.testing.assert_array_equal(eager[index][key], lazy[index][key])
  assert eager.locate(4) == ("b", 1)
  assert eager.volume_ranges() == [("a", range(0, 3)), ("b", range(3, 6))]


def test_reference_source_rejects_mixed_sizes_and_wrong_mask(tmp_path):
  paths = _write(tmp_path, names=("a",)) + _write(tmp_path / "x", names=("b",), shape=(8, 6))
  with pytest.raises(InputError, match="different slice sizes"):
    ReferenceSource(paths, "4x", None)
  with pytest.raises(InputError, match="mask has shape"):
    ReferenceSource(paths[:1], "4x", np.ones((4, 4)))


def test_subset_spreads_over_volumes(tmp_path):
  source = ReferenceSource(_write(tmp_path), "4x", np.ones((8, 8)))
  subset = SubsetSource.evenly_spaced(source, 3)
  assert len(subset) == 3 and subset.locate(0) == ("a", 0) and subset.locate(2) == ("b", 2)
  assert [name for name, _ in subset.volume_ranges()] == ["a", "b"]
  assert subset[1]["mask"].shape == (8, 8)


def test_fewer_examples_than_a_batch_is_an_error():
  with pytest.raises(InputError, match="fewer than the batch size"):
    pipeline.train_batches(_source(3), 4, seed=0, epoch=0)
  assert (
    len(list(pipeline.train_batches(_source(3), 4, seed=0, epoch=0, drop_remainder=False))) == 1
  )
