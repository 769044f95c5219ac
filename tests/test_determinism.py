"""Same config and seed, same bits on CPU: two separate `main` processes, and the pieces they are
made of.

What is and is not deterministic on GPU/TPU is written in the README ("What happens when a run
dies").
"""

from __future__ import annotations

import jax
import numpy as np

from helpers import assert_same_state, stage_state
from kdmri_jax import models
from kdmri_jax.train_input import Batches, synthetic_source


def test_two_processes_with_the_same_config_and_seed_give_bit_identical_training_state(
  uninterrupted_runs,
):
  first, second = (stage_state(w) for w in uninterrupted_runs)
  assert_same_state(second, first, "second run")
  # Not vacuous: the state is trained (Adam's moments are non-zero after 8 steps).
  moments = [v for k, v in first.items() if k.startswith("state") and "mu" in k]
  assert first["step"] == 8 and moments and any(np.any(m != 0) for m in moments)


def test_initialisation_depends_on_the_seed_only():
  model = models.build_model("student", num_cascades=1, features=4)
  # one compile instead of op by op
  init = jax.jit(lambda key: models.init_params(model, key, 8, 8))
  a, b, c = init(jax.random.PRNGKey(42)), init(jax.random.PRNGKey(42)), init(jax.random.PRNGKey(43))
  same = jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)
  assert all(jax.tree.leaves(same))
  assert not all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, c)))


def test_data_order_depends_on_seed_and_epoch_only():
  source = synthetic_source(10, size=8)

  def order(seed, epoch):
    return [
      np.asarray(b["target"]).sum(axis=(1, 2)).round(5).tolist()
      for b in Batches(source, 2, seed).epoch(epoch)
    ]

  assert order(42, 3) == order(42, 3)
  assert order(42, 3) != order(42, 4) and order(42, 3) != order(7, 3)
  # Resuming mid-epoch continues the same sequence (what a restart after a crash relies on).
  assert [
    np.asarray(b["target"]).sum(axis=(1, 2)).round(5).tolist()
    for b in Batches(source, 2, 42).epoch(3, start=2)
  ] == order(42, 3)[2:]


def test_a_jitted_step_gives_the_same_bits_every_call():
  model = models.build_model("student", num_cascades=1, features=4)
  params = models.init_params(model, jax.random.PRNGKey(0), 16, 16)
  batch = {k: np.asarray(v)[None] for k, v in synthetic_source(1, size=16)[0].items()}
  grad = jax.jit(
    jax.grad(
      lambda p: jax.numpy.mean(jax.numpy.abs(models.apply(model, p, batch)[0] - batch["target"]))
    )
  )
  first, second = grad(params), grad(params)
  assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), first, second)))
