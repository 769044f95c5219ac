"""Reconstruction, imitation and attention-transfer losses against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
import hypothesis.extra.numpy as hnp

from kdmri_jax import feature_losses, losses


def test_l1_l2_hand_computed():
  a = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  b = jnp.array([[1.0, 0.0], [5.0, 4.0]])
  assert float(losses.l1(a, b)) == pytest.approx((0 + 2 + 2 + 0) / 4)
  assert float(losses.l2(a, b)) == pytest.approx((0 + 4 + 4 + 0) / 4)


def test_imitation_weights_target_and_teacher():
  student = jnp.array([1.0, 1.0])
  target = jnp.array([0.0, 0.0])   # L1 = 1
  teacher = jnp.array([3.0, 1.0])  # L1 = 1
  assert float(losses.imitation(student, teacher, target, alpha=0.5)) == pytest.approx(1.0)
  teacher = jnp.array([1.0, 5.0])  # L1 = 2
  assert float(losses.imitation(student, teacher, target, alpha=0.25)) == pytest.approx(0.25 * 1 + 0.75 * 2)
  assert float(losses.imitation(student, teacher, target, alpha=1.0)) == pytest.approx(1.0)


def test_imitation_sends_no_gradient_to_the_teacher():
  student, teacher, target = jnp.ones(3), jnp.zeros(3), jnp.zeros(3)
  grad_teacher = jax.grad(lambda t: losses.imitation(student, t, target, 0.5))(teacher)
  np.testing.assert_array_equal(grad_teacher, 0.0)


def test_attention_map_per_sample_hand_computed():
  # one sample, 2x1 pixels, 2 channels: Q = [1²+2², 2²+0²] = [5, 4], normalised by √41
  f = jnp.array([[[[1.0, 2.0]], [[2.0, 0.0]]]])
  np.testing.assert_allclose(feature_losses.attention_map(f), [[5 / np.sqrt(41), 4 / np.sqrt(41)]], rtol=1e-6)


def test_attention_transfer_hand_computed_and_zero_on_equal_maps():
  t = jnp.array([[[[1.0]], [[0.0]]]])   # Q_T = [1, 0]
  s = jnp.array([[[[1.0]], [[1.0]]]])   # Q_S = [1, 1] / √2
  expected = (abs(1 - 1 / np.sqrt(2)) + abs(0 - 1 / np.sqrt(2))) / 2
  assert float(feature_losses.attention_transfer(t, s)) == pytest.approx(expected, rel=1e-6)
  assert float(feature_losses.attention_transfer(t, t)) == 0.0


def test_batch_normalisation_reproduces_the_batch_of_one_degeneracy():
  rng = np.random.default_rng(0)
  t, s = rng.random((1, 6, 5, 4)), rng.random((1, 6, 5, 4)) * 3
  np.testing.assert_allclose(feature_losses.attention_map(t, "batch"), 1.0, rtol=1e-6)
  assert float(feature_losses.attention_transfer(t, s, normalize="batch")) == pytest.approx(0.0, abs=1e-7)
  assert float(feature_losses.attention_transfer(t, s, normalize="sample")) > 0.0
  # with a batch of two, each pixel's pair of values is normalised over the batch axis
  pair = rng.random((2, 3, 3, 4))
  q = np.sum(pair ** 2, -1).reshape(2, -1)
  np.testing.assert_allclose(feature_losses.attention_map(pair, "batch"), q / np.linalg.norm(q, axis=0), rtol=1e-5)


def test_paper_layer_pairs_pick_teacher_conv3_and_student_conv2():
  teacher = tuple(tuple(jnp.full((1, 2, 2, 1), 10 * c + l) for l in range(4)) for c in range(5))
  student = tuple(tuple(jnp.full((1, 2, 2, 1), 10 * c + l) for l in range(2)) for c in range(5))
  picked = [(float(feature_losses.select(teacher, t)[0, 0, 0, 0]), float(feature_losses.select(student, s)[0, 0, 0, 0]))
            for t, s in feature_losses.PAPER_LAYER_PAIRS["dccnn"]]
  assert picked == [(10 * c + 2, 10 * c + 1) for c in range(5)]


features = hnp.arrays(np.float32, (2, 4, 3, 2), elements=st.floats(0, 5, width=32))


@given(features, features)
def test_losses_are_non_negative_and_zero_on_identical_inputs(a, b):
  for fn in (losses.l1, losses.l2, feature_losses.attention_transfer):
    assert float(fn(a, b)) >= 0.0
    assert float(fn(a, a)) == 0.0
  assert float(losses.imitation(a, a, a, 0.3)) == 0.0
