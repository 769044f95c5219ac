"""Reconstruction, imitation and attention-transfer losses against hand-computed values."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from kdmri_jax import feature_losses, losses
from kdmri_jax.errors import InputError


def test_l1_l2_hand_computed():
  a = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  b = jnp.array([[1.0, 0.0], [5.0, 4.0]])
  assert float(losses.l1(a, b)) == pytest.approx((0 + 2 + 2 + 0) / 4)
  assert float(losses.l2(a, b)) == pytest.approx((0 + 4 + 4 + 0) / 4)


def test_imitation_weights_target_and_teacher():
  student = jnp.array([1.0, 1.0])
  target = jnp.array([0.0, 0.0])  # L1 = 1
  teacher = jnp.array([3.0, 1.0])  # L1 = 1
  assert float(losses.imitation(student, teacher, target, alpha=0.5)) == pytest.approx(1.0)
  teacher = jnp.array([1.0, 5.0])  # L1 = 2
  assert float(losses.imitation(student, teacher, target, alpha=0.25)) == pytest.approx(
    0.25 * 1 + 0.75 * 2
  )
  assert float(losses.imitation(student, teacher, target, alpha=1.0)) == pytest.approx(1.0)


def test_imitation_sends_no_gradient_to_the_teacher():
  student, teacher, target = jnp.ones(3), jnp.zeros(3), jnp.zeros(3)
  grad_teacher = jax.grad(lambda t: losses.imitation(student, t, target, 0.5))(teacher)
  np.testing.assert_array_equal(grad_teacher, 0.0)


def _hand_imitation(name, student, teacher, target, alpha):
  """The objectives in NumPy, from the paper and the authors' scripts (not from losses.py)."""
  to_target = np.mean(np.abs(student - target))
  to_teacher = np.mean(np.abs(student - teacher))
  return {
    "paper": alpha * to_target + (1 - alpha) * to_teacher,
    "authors_code": to_target + to_teacher / student.size,  # a mean, divided by numel again
    "authors_script": to_target,
    "authors_sr": to_target + to_teacher,
  }[name]


@pytest.mark.parametrize("name", sorted(losses.IMITATION_OBJECTIVES))
def test_each_imitation_objective_matches_numpy(name):
  rng = np.random.default_rng(3)
  student, teacher, target = (rng.random((4, 6, 5)).astype(np.float32) for _ in range(3))
  got = float(
    losses.imitation(
      jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(target), 0.3, objective=name
    )
  )
  assert got == pytest.approx(_hand_imitation(name, student, teacher, target, 0.3), rel=1e-5)

  def loss_of_teacher(t):
    return losses.imitation(student, t, target, 0.3, objective=name)

  grad_teacher = jax.grad(loss_of_teacher)(teacher)
  np.testing.assert_array_equal(grad_teacher, 0.0)


def test_imitation_objectives_hand_computed_and_distinct():
  # L1(student, target) = 1 and L1(student, teacher) = 1
  student, target, teacher = jnp.array([1.0, 1.0]), jnp.zeros(2), jnp.array([3.0, 1.0])
  values = {
    name: float(losses.imitation(student, teacher, target, 0.25, objective=name))
    for name in losses.IMITATION_OBJECTIVES
  }
  assert values == pytest.approx(
    {"paper": 0.25 + 0.75, "authors_code": 1 + 1 / 2, "authors_script": 1.0, "authors_sr": 2.0}
  )
  # the authors' code at their batch (4 × 240 × 240): the teacher term weighs 1/230400 ≈ 4.3e-6
  big = jnp.zeros((4, 240, 240))
  value = float(losses.imitation(big, big + 1, big, objective="authors_code"))
  assert value == pytest.approx(1 / 230400)


def test_unknown_imitation_objective_is_one_sentence():
  names = r"\['authors_code', 'authors_script', 'authors_sr', 'paper'\]"
  with pytest.raises(
    InputError, match=rf"^config\.kd\.imitation='paper_v2' is not one of {names}\.$"
  ):
    losses.imitation(jnp.ones(2), jnp.ones(2), jnp.ones(2), objective="paper_v2")


def test_imitation_formula_is_the_docstring_line():
  assert losses.imitation_formula("paper").startswith("α·L1(x_S, y) + (1 − α)·L1(x_S, x_T)")
  assert "numel" not in losses.imitation_formula("authors_sr")


def _hand_attention(f, normalize):
  q = np.sum(np.asarray(f, np.float64) ** 2, axis=-1).reshape(f.shape[0], -1)
  axis = 1 if normalize == "sample" else 0
  return q / np.maximum(np.linalg.norm(q, axis=axis, keepdims=True), 1e-12)


@pytest.mark.parametrize("normalize", ["sample", "batch"])
def test_attention_mse_per_example_matches_numpy(normalize):
  rng = np.random.default_rng(4)

  def maps(layers, channels):
    return tuple(
      tuple(rng.random((3, 4, 5, channels)).astype(np.float32) for _ in range(layers))
      for _ in range(2)
    )

  teacher, student = maps(3, 6), maps(2, 2)
  pairs = (((0, 2), (0, 1)), ((1, 2), (1, 1)))  # channel counts differ: 6 vs 2
  got = np.asarray(losses.attention_mse(teacher, student, pairs, normalize))
  per_pair = [
    np.mean(
      (_hand_attention(teacher[c][2], normalize) - _hand_attention(student[c][1], normalize)) ** 2,
      axis=1,
    )
    for c in (0, 1)
  ]
  want = np.mean(per_pair, axis=0)
  assert got.shape == (3,)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # a section (start, end), as `fsp` takes, is judged on its end map, the distilled layer
  sections = [(((c, 0), (c, 2)), ((c, 0), (c, 1))) for c in (0, 1)]
  by_sections = losses.attention_mse(teacher, student, sections, normalize)
  np.testing.assert_allclose(by_sections, got, rtol=1e-6)


def test_attention_map_per_sample_hand_computed():
  # one sample, 2x1 pixels, 2 channels: Q = [1²+2², 2²+0²] = [5, 4], normalised by √41
  f = jnp.array([[[[1.0, 2.0]], [[2.0, 0.0]]]])
  np.testing.assert_allclose(
    feature_losses.attention_map(f), [[5 / np.sqrt(41), 4 / np.sqrt(41)]], rtol=1e-6
  )


def test_attention_transfer_hand_computed_and_zero_on_equal_maps():
  t = jnp.array([[[[1.0]], [[0.0]]]])  # Q_T = [1, 0]
  s = jnp.array([[[[1.0]], [[1.0]]]])  # Q_S = [1, 1] / √2
  expected = (abs(1 - 1 / np.sqrt(2)) + abs(0 - 1 / np.sqrt(2))) / 2
  assert float(feature_losses.attention_transfer(t, s)) == pytest.approx(expected, rel=1e-6)
  assert float(feature_losses.attention_transfer(t, t)) == 0.0


def test_batch_normalisation_reproduces_the_batch_of_one_degeneracy():
  rng = np.random.default_rng(0)
  t, s = rng.random((1, 6, 5, 4)), rng.random((1, 6, 5, 4)) * 3
  np.testing.assert_allclose(feature_losses.attention_map(t, "batch"), 1.0, rtol=1e-6)
  assert float(feature_losses.attention_transfer(t, s, normalize="batch")) == pytest.approx(
    0.0, abs=1e-7
  )
  assert float(feature_losses.attention_transfer(t, s, normalize="sample")) > 0.0
  # with a batch of two, each pixel's pair of values is normalised over the batch axis
  pair = rng.random((2, 3, 3, 4))
  q = np.sum(pair**2, -1).reshape(2, -1)
  np.testing.assert_allclose(
    feature_losses.attention_map(pair, "batch"), q / np.linalg.norm(q, axis=0), rtol=1e-5
  )


def test_paper_layer_pairs_pick_teacher_conv3_and_student_conv2():
  teacher = tuple(tuple(jnp.full((1, 2, 2, 1), 10 * c + j) for j in range(4)) for c in range(5))
  student = tuple(tuple(jnp.full((1, 2, 2, 1), 10 * c + j) for j in range(2)) for c in range(5))
  picked = [
    (
      float(feature_losses.select(teacher, t)[0, 0, 0, 0]),
      float(feature_losses.select(student, s)[0, 0, 0, 0]),
    )
    for t, s in feature_losses.PAPER_LAYER_PAIRS["dccnn"]
  ]
  assert picked == [(10 * c + 2, 10 * c + 1) for c in range(5)]


features = hnp.arrays(np.float32, (2, 4, 3, 2), elements=st.floats(0, 5, width=32))


@given(features, features)
def test_losses_are_non_negative_and_zero_on_identical_inputs(a, b):
  for fn in (losses.l1, losses.l2, feature_losses.attention_transfer):
    assert float(fn(a, b)) >= 0.0
    assert float(fn(a, a)) == 0.0
  assert float(losses.imitation(a, a, a, 0.3)) == 0.0
