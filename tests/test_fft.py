"""Data consistency against a NumPy FFT reference; exactness, idempotence and gradients."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, strategies as st

from kdmri_jax import fft, masks


def _problem(shape=(2, 24, 20), seed=0, acc=3):
  rng = np.random.default_rng(seed)
  target = rng.random(shape, dtype=np.float32)
  mask = masks.cartesian_mask(shape[-2:], acc, seed=seed)
  measured = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)
  prediction = rng.random(shape, dtype=np.float32)
  return prediction, measured, mask


def test_fft_matches_numpy_orthonormal():
  x, _, _ = _problem()
  np.testing.assert_allclose(fft.fft2(x), np.fft.fft2(x, norm="ortho"), atol=1e-5)
  np.testing.assert_allclose(fft.ifft2(fft.fft2(x)).real, x, atol=1e-5)


def test_data_consistency_matches_numpy_reference():
  x, k0, mask = _problem()
  k = np.fft.fft2(x.astype(np.float64), norm="ortho")
  expected = np.fft.ifft2(mask * k0 + (1 - mask) * k, norm="ortho").real
  out = jax.jit(fft.data_consistency)(x, k0, mask)
  assert out.dtype == jnp.float32 and out.shape == x.shape
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_sampled_kspace_is_exactly_the_measurement():
  x, k0, mask = _problem()
  k = fft.consistent_kspace(fft.fft2(x), k0, mask)
  sampled = np.broadcast_to(mask > 0, k.shape)
  np.testing.assert_array_equal(np.asarray(k)[sampled], np.broadcast_to(k0, k.shape)[sampled])
  # and the complex output carries it through the inverse FFT up to rounding
  out = fft.data_consistency(x, k0, mask, keep_complex=True)
  np.testing.assert_allclose(np.asarray(fft.fft2(out))[sampled], k0[sampled], atol=1e-5)


def test_noisy_variant_interpolates_and_tends_to_hard_replacement():
  x, k0, mask = _problem()
  kp = fft.fft2(x)
  lam = 2.0
  k = np.asarray(fft.consistent_kspace(kp, k0, mask, lam))
  expected = np.where(mask > 0, (np.asarray(kp) + lam * k0) / (1 + lam), kp)
  np.testing.assert_allclose(k, expected, atol=1e-5)
  hard = fft.data_consistency(x, k0, mask)
  np.testing.assert_allclose(fft.data_consistency(x, k0, mask, 1e7), hard, atol=1e-4)


def test_gradient_flows_through_dc():
  x, k0, mask = _problem()
  grad = jax.grad(lambda im: jnp.sum(fft.data_consistency(im, k0, mask) ** 2))(x)
  assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_complex_two_channel_roundtrip():
  rng = np.random.default_rng(3)
  z = (rng.random((2, 8, 8)) + 1j * rng.random((2, 8, 8))).astype(np.complex64)
  np.testing.assert_allclose(fft.to_complex(fft.to_channels(z)), z)


def test_batched_under_vmap_and_per_example_masks():
  x, k0, mask = _problem(shape=(3, 16, 16))
  per_example = np.stack([mask, np.roll(mask, 1, 0), mask])
  batched = fft.data_consistency(x, k0, per_example)
  single = jax.vmap(fft.data_consistency)(x, k0, per_example)
  np.testing.assert_allclose(batched, single, atol=1e-6)


images = hnp.arrays(np.float32, (12, 10), elements=st.floats(-10, 10, width=32))


@given(images, images, st.integers(0, 10_000), st.floats(1.5, 4.0))
def test_dc_is_idempotent_and_keeps_measured_kspace(target, prediction, seed, acc):
  mask = masks.cartesian_mask((12, 10), acc, seed=seed)
  k0 = (np.fft.fft2(target, norm="ortho") * mask).astype(np.complex64)
  once = fft.data_consistency(prediction, k0, mask, keep_complex=True)
  twice = fft.data_consistency(once, k0, mask, keep_complex=True)
  np.testing.assert_allclose(twice, once, atol=1e-4)
  k = np.asarray(fft.consistent_kspace(fft.fft2(prediction), k0, mask))
  np.testing.assert_array_equal(k[mask > 0], k0[mask > 0])
