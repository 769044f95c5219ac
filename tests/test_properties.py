"""Property tests (hypothesis, the 'ci' profile of conftest.py): invariants that must hold for any
input.

Extends, without repeating, tests/test_fft.py (single-image DC), tests/test_masks.py (acceleration
for n / acc >= 25) and tests/test_losses.py (L1, L2 and attention transfer):
- DC on batches with per-example masks is idempotent and keeps the measured k-space exactly; the
  noisy DC moves sampled points towards the measurement by 1/(1+λ) and leaves the others alone; the
  target is a fixed point of DC with its own measurement;
- the mask generator samples exactly round(n / acc) whole lines for any shape, seed and direction;
- every registered feature loss (`kdmri_jax.feature_losses.FEATURE_LOSSES`), L1, L2 and the
  imitation loss are finite, non-negative, and zero on identical inputs;
- MSE, SSIM and PSNR with a given data range are symmetric, NMSE and the default-range PSNR are not
  (as documented in kdmri_jax/metrics.py); identical images give PSNR = +inf (NumPy and JAX),
  SSIM = 1.
"""

from __future__ import annotations

import functools
import math

import hypothesis.extra.numpy as hnp
import jax
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from helpers import line_mask_shape, line_mask_strategies
from kdmri_jax import feature_losses, fft, losses, masks, metrics
from kdmri_jax.errors import InputError

# --- data consistency -----------------------------------------------------------------------------

_SHAPES3 = [(1, 8, 8), (3, 12, 10), (2, 7, 9)]


@st.composite
def dc_problems(draw):
  """(prediction, measured k-space, per-example masks, target) for a batch of 1 or 3 images. A few
  shapes only: every new shape compiles every JAX op again, and the values are what the property is
  about."""
  batch, height, width = draw(st.sampled_from(_SHAPES3))
  values = st.floats(-4, 4, width=32)
  target = draw(hnp.arrays(np.float32, (batch, height, width), elements=values))
  prediction = draw(hnp.arrays(np.float32, (batch, height, width), elements=values))
  acc = draw(st.floats(1.0, 4.0))
  seeds = draw(st.lists(st.integers(0, 2**16), min_size=batch, max_size=batch))
  direction = draw(st.sampled_from(masks.DIRECTIONS))
  mask = np.stack(
    [masks.cartesian_mask((height, width), acc, seed=s, direction=direction) for s in seeds]
  )
  measured = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)
  return prediction, measured, mask, target


@given(dc_problems())
def test_batched_dc_is_idempotent_and_exact_on_measured_kspace(problem):
  prediction, measured, mask, _ = problem
  once = fft.data_consistency(prediction, measured, mask, keep_complex=True)
  twice = fft.data_consistency(once, measured, mask, keep_complex=True)
  np.testing.assert_allclose(np.asarray(twice), np.asarray(once), atol=1e-4)
  kspace = np.asarray(fft.consistent_kspace(fft.fft2(prediction), measured, mask))
  sampled = mask > 0
  np.testing.assert_array_equal(kspace[sampled], measured[sampled])  # bit-exact, not just close
  np.testing.assert_array_equal(kspace[~sampled], np.asarray(fft.fft2(prediction))[~sampled])


@given(dc_problems(), st.floats(0.0, 100.0))
def test_noisy_dc_moves_sampled_points_towards_the_measurement_only(problem, lam):
  prediction, measured, mask, _ = problem
  predicted = np.asarray(fft.fft2(prediction))
  kspace = np.asarray(fft.consistent_kspace(predicted, measured, mask, noise_lambda=lam))
  sampled = mask > 0
  np.testing.assert_array_equal(kspace[~sampled], predicted[~sampled])
  # |k − k0| = |k_pred − k0| / (1 + λ): the noisy DC is a contraction towards the measurement.
  distance = np.abs(kspace[sampled] - measured[sampled])
  np.testing.assert_allclose(
    distance, np.abs(predicted[sampled] - measured[sampled]) / (1 + lam), rtol=1e-4, atol=1e-4
  )


@given(dc_problems())
def test_the_target_is_a_fixed_point_of_dc_with_its_own_measurement(problem):
  _, measured, mask, target = problem
  # the real part, as the reference model keeps
  result = fft.data_consistency(target, measured, mask)
  np.testing.assert_allclose(np.asarray(result), target, atol=1e-4)


# --- masks ----------------------------------------------------------------------------------------


@given(*line_mask_strategies((4, 200), (1, 40), (1.0, 8.0)))
def test_mask_samples_exactly_round_n_over_acc_whole_lines_for_any_shape(
  lines, other, acc, seed, direction
):
  assume(round(lines / acc) >= 1)
  shape = line_mask_shape(lines, other, direction)
  mask = masks.cartesian_mask(shape, acc, seed=seed, direction=direction)
  masks.check_mask(mask, shape)  # 2-D, finite, binary, not empty, of the asked shape
  line_mask = mask[:, 0] if direction == "rows" else mask[0, :]
  assert int(line_mask.sum()) == round(lines / acc)
  full = mask.all(axis=1) if direction == "rows" else mask.all(axis=0)
  np.testing.assert_array_equal(line_mask > 0, full)  # whole lines, nothing else
  assert mask[0, 0] == 1  # the (unshifted) k-space centre is always sampled
  np.testing.assert_array_equal(
    mask, masks.cartesian_mask(shape, acc, seed=seed, direction=direction)
  )


@given(st.integers(2, 50), st.floats(1.0, 200.0))
def test_mask_acceleration_leaving_no_line_is_refused_in_one_sentence(lines, acc):
  assume(round(lines / acc) < 1)
  with pytest.raises(InputError, match="leaves no line"):
    masks.cartesian_mask((lines, 8), acc)


# --- losses ---------------------------------------------------------------------------------------

# The feature losses the project offers, written out independently of the registry: the tests below
# run over this list, so a method dropped from (or added to) FEATURE_LOSSES fails them.
_FEATURE_NAMES = [
  "ab",
  "attention",
  "attention_code",
  "cc",
  "feature_l1",
  "feature_l2",
  "fitnet",
  "fsp",
  "ft",
  "local_affinity",
  "nst",
  "pairwise",
  "pkt",
  "rkd",
  "sp",
  "vid",
]


@st.composite
def feature_maps(draw, channels_may_differ: bool = True):
  """(teacher, student) post-ReLU maps (B, H, W, C), batch 1 or 2, 3 teacher and 3 or 2 student
  channels; all-zero maps and constant maps are among the values hypothesis tries."""
  batch, height, width = draw(st.sampled_from([(1, 8, 8), (2, 8, 6)]))
  c_t = 3
  c_s = draw(st.sampled_from([3, 2])) if channels_may_differ else c_t
  values = st.floats(0, 5, width=32)
  teacher = draw(hnp.arrays(np.float32, (batch, height, width, c_t), elements=values))
  student = draw(hnp.arrays(np.float32, (batch, height, width, c_s), elements=values))
  return teacher, student


@functools.lru_cache(maxsize=None)
def _jitted(name):
  return jax.jit(feature_losses.FEATURE_LOSSES[name])


def _call(name, teacher, student):
  """The loss `name` on one map pair (jitted: one compile per shape); `fsp` compares sections, so it
  gets (map, √map) pairs."""
  fn = _jitted(name)
  if name == "fsp":
    return fn((teacher, np.sqrt(teacher)), (student, np.sqrt(student)))
  return fn(teacher, student)


# Compare maps channel by channel when called without trainable parameters (vid, ft: identity
# networks; ab, fitnet: identity connector).
_SAME_CHANNELS = {"feature_l1", "feature_l2", "fitnet", "fsp", "vid", "ft", "ab"}


def _zero_point(name, teacher):
  """A student map the loss `name` must give 0 for: the teacher's own map, except for AB, a margin
  loss (0 once the student is past the margin μ = 1 on the teacher's side of every boundary)."""
  if name == "ab":
    # XLA:CPU flushes float32 denormals to zero, so a denormal teacher value is an inactive neuron.
    active = teacher >= np.finfo(np.float32).tiny
    return np.where(active, 1.0 + teacher, -1.0).astype(np.float32)
  return teacher.copy()


@pytest.mark.parametrize("name", _FEATURE_NAMES)
@given(maps=feature_maps())
def test_every_feature_loss_is_finite_non_negative_and_zero_on_identical_maps(name, maps):
  teacher, student = maps
  if name in _SAME_CHANNELS:
    student = student[..., : teacher.shape[-1]]
    assume(student.shape == teacher.shape)
  value = float(_call(name, teacher, student))
  assert math.isfinite(value) and value >= 0.0, (name, value)
  same = float(_call(name, teacher, _zero_point(name, teacher)))
  assert math.isfinite(same) and abs(same) <= 1e-6, (name, same)


def test_every_registered_feature_loss_is_covered_and_documented():
  # The registry holds exactly the expected methods (so the parametrisation above covers each of
  # them), and each is in the module's table.
  assert sorted(feature_losses.FEATURE_LOSSES) == _FEATURE_NAMES
  table = feature_losses.__doc__
  assert [name for name in _FEATURE_NAMES if f"`{name}`" not in table] == []
  assert _SAME_CHANNELS <= set(_FEATURE_NAMES) and len(_FEATURE_NAMES) >= 2


images = hnp.arrays(np.float32, st.sampled_from(_SHAPES3), elements=st.floats(0, 2, width=32))


@given(
  images, st.data(), st.floats(0.0, 1.0), st.sampled_from(sorted(losses.RECONSTRUCTION_LOSSES))
)
def test_reconstruction_and_imitation_losses_non_negative_zero_on_identical(a, data, alpha, name):
  b = data.draw(hnp.arrays(np.float32, a.shape, elements=st.floats(0, 2, width=32)))
  t = data.draw(hnp.arrays(np.float32, a.shape, elements=st.floats(0, 2, width=32)))
  fn = losses.RECONSTRUCTION_LOSSES[name]
  assert float(fn(a, b)) >= 0.0 and float(fn(a, a)) == 0.0
  assert float(losses.imitation(a, t, b, alpha, name)) >= 0.0
  assert float(losses.imitation(a, a, a, alpha, name)) == 0.0


# --- metrics --------------------------------------------------------------------------------------


@st.composite
def image_pairs(draw):
  """Two (S, H, W) volumes with positive maxima, H, W >= 7 (SSIM's window), of a few shapes."""
  shape = draw(st.sampled_from(_SHAPES3))
  a = draw(hnp.arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
  b = draw(hnp.arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
  assume(a.max() > 0.05 and b.max() > 0.05)
  return a, b


@given(image_pairs(), st.floats(0.5, 2.0))
def test_metrics_symmetric_where_the_formula_is(pair, data_range):
  a, b = pair
  assert metrics.mse(a, b) == metrics.mse(b, a)
  assert metrics.psnr(a, b, data_range) == pytest.approx(metrics.psnr(b, a, data_range))
  assert metrics.ssim(a, b, data_range) == pytest.approx(metrics.ssim(b, a, data_range), abs=1e-9)
  np.testing.assert_array_equal(metrics.batch_mse(a, b), metrics.batch_mse(b, a))
  np.testing.assert_allclose(
    metrics.batch_psnr(a, b, data_range), metrics.batch_psnr(b, a, data_range), rtol=1e-5
  )
  np.testing.assert_array_equal(
    metrics.batch_ssim(a, b, data_range), metrics.batch_ssim(b, a, data_range)
  )
  # float32 on device, float64 in NumPy: the same SSIM to float32 precision, whatever the two means
  # are.
  np.testing.assert_allclose(
    metrics.batch_ssim(a, b, data_range),
    [metrics.ssim(x[None], y[None], data_range) for x, y in zip(a, b)],
    atol=2e-5,
  )


def test_nmse_and_default_range_psnr_are_not_symmetric_as_documented():
  a = np.full((1, 8, 8), 1.0, np.float32)
  b = np.full((1, 8, 8), 0.5, np.float32)
  assert metrics.nmse(a, b) != metrics.nmse(b, a)  # normalised by the first argument's energy
  assert metrics.psnr(a, b) != metrics.psnr(b, a)  # R = the first argument's (the target's) max


def test_ssim_of_identical_slices_with_a_tiny_range_is_one():
  """Found by hypothesis: a slice whose max is 1e-12 made the SSIM products underflow float32 to
  0/0."""
  a = np.zeros((3, 12, 10), np.float32)
  a[0, 0, 0], a[1, 0, 0] = 1.0, 1e-12
  np.testing.assert_allclose(metrics.batch_ssim(a[:2], a[:2].copy()), 1.0, atol=1e-5)
  b = a[:2] + np.float32(0.1) * np.arange(120, dtype=np.float32).reshape(12, 10) / 120 * a[:2].max(
    axis=(1, 2), keepdims=True
  )
  np.testing.assert_allclose(
    metrics.batch_ssim(a[:2] * 1e6, b * 1e6), metrics.batch_ssim(a[:2], b), rtol=1e-4
  )


@given(image_pairs())
def test_identical_images_give_infinite_psnr_unit_ssim_and_zero_errors(pair):
  a, _ = pair
  assert metrics.psnr(a, a.copy()) == math.inf  # documented: +inf, nothing is capped
  assert np.all(np.isposinf(np.asarray(metrics.batch_psnr(a, a.copy()))))
  assert metrics.mse(a, a) == 0.0 and metrics.nmse(a, a) == 0.0
  # HFN is 0/0 (NaN) for a flat target, as the reference
  if all(np.any(metrics.laplacian(s) != 0) for s in a):
    assert metrics.hfn(a, a.copy()) == 0.0
  assert metrics.ssim(a, a.copy()) == pytest.approx(1.0)
  np.testing.assert_allclose(metrics.batch_ssim(a, a.copy()), 1.0, atol=1e-5)
  # a perfect volume does not make the mean inf
  summary = metrics.summarize([metrics.psnr(a, a), 30.0, 32.0])
  assert summary["mean"] == 31.0 and summary["n_nonfinite"] == 1


@given(image_pairs())
def test_psnr_and_ssim_of_different_images_are_finite_and_bounded(pair):
  a, b = pair
  assume(not np.array_equal(a, b))
  assert math.isfinite(metrics.psnr(a, b))
  assert -1.0 <= metrics.ssim(a, b) <= 1.0 + 1e-9
  assert metrics.mse(a, b) > 0.0 and metrics.nmse(a, b) >= 0.0
